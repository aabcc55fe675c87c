package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"blastradius.dev/blastradius/internal/promtext"
	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/hbone"
	"blastradius.dev/blastradius/proxy/netnsx"
	"blastradius.dev/blastradius/proxy/xds"
)

// Waypoint is the L7 proxy: it terminates HBONE from node proxies, reads
// HTTP/1.1 requests from the tunnel and sends each one to an endpoint it picks
// per request (so one kept-alive client connection is spread over endpoints,
// and a dead endpoint costs one request, not a connection), over HBONE with
// its own identity.
type Waypoint struct {
	UID      string
	Mark     uint32
	Timeout  time.Duration
	certs    *ca.CertManager
	rootPEM  func() []byte
	idx      atomic.Pointer[Index]
	dialer   *hbone.Dialer
	Metrics  Metrics
	HBONEIn  hbone.Metrics
	HBONEOut hbone.Metrics
	denials  denyLog
}

func (wp *Waypoint) roots() *x509.CertPool {
	pool, err := ca.PoolFromPEM(wp.rootPEM())
	if err != nil {
		return x509.NewCertPool() // nothing verifies: fail closed
	}
	return pool
}

func (wp *Waypoint) identity() (string, error) {
	ix := wp.idx.Load()
	if ix == nil {
		return "", errors.New("no configuration")
	}
	w, ok := ix.Workload(wp.UID)
	if !ok {
		return "", fmt.Errorf("waypoint %s unknown to the control plane", wp.UID)
	}
	return w.Identity(ix.Snap.TrustDomain), nil
}

// route picks the endpoint for one request to authority (a service VIP:port
// or a workload ip:port behind the waypoint).
func (wp *Waypoint) route(authority string) (Route, error) {
	ix := wp.idx.Load()
	if ix == nil {
		return Route{}, errors.New("no configuration")
	}
	ap, err := netip.ParseAddrPort(authority)
	if err != nil {
		return Route{}, err
	}
	td := ix.Snap.TrustDomain
	if sv, ok := ix.svcByVIP[ap.Addr()]; ok {
		target := 0
		for _, p := range sv.Ports {
			if p.Port == int(ap.Port()) {
				target = p.TargetPort
			}
		}
		if target == 0 || len(sv.Endpoints) == 0 {
			return Route{}, fmt.Errorf("service %s: no endpoint for port %d", sv.Name, ap.Port())
		}
		w, ok := ix.byUID[sv.Endpoints[rand.IntN(len(sv.Endpoints))]]
		if !ok {
			return Route{}, errors.New("endpoint unknown")
		}
		return direct(w, target, td), nil
	}
	if w, ok := ix.byIP[ap.Addr()]; ok {
		return direct(w, int(ap.Port()), td), nil
	}
	return Route{}, fmt.Errorf("%s is not behind this waypoint", authority)
}

// authorize is the waypoint's decision for a CONNECT: the authority must be
// one it can route, and the client must pass the authorization policies of
// every workload the request may reach. The waypoint connects onwards with
// its own identity, so the destination's proxy judges the waypoint, not the
// client: without this check a client that a policy denies would get through
// by addressing the service (or the pod) via the waypoint.
func (wp *Waypoint) authorize(peer, authority string) int {
	if _, err := wp.route(authority); err != nil {
		wp.Metrics.Fail("bad_authority")
		return 400
	}
	ix := wp.idx.Load() // not nil: route succeeded
	targets := wp.targets(ix, authority)
	dst := authority
	if len(targets) == 1 {
		dst = workloadName(targets[0]) + " " + authority
	}
	if td, _, _, err := ca.ParseSpiffeID(peer); err != nil || td != ix.Snap.TrustDomain {
		wp.Metrics.PolicyDenials.Add(1)
		wp.denials.deny(peer, "", dst, "not in trust domain "+ix.Snap.TrustDomain)
		return 401
	}
	ap, _ := netip.ParseAddrPort(authority) // valid: route succeeded
	for _, w := range targets {
		// Policies see the port the workload is reached on: the
		// service's target port when the authority is a VIP.
		c := xds.Conn{Peer: peer, DstPort: int(ap.Port())}
		if ip, err := netip.ParseAddr(w.IP); err == nil {
			c.DstIP = ip.Unmap()
		}
		if sv, ok := ix.svcByVIP[ap.Addr()]; ok {
			for _, p := range sv.Ports {
				if p.Port == int(ap.Port()) {
					c.DstPort = p.TargetPort
				}
			}
		}
		if !ix.AllowedConn(w, c) {
			wp.Metrics.PolicyDenials.Add(1)
			wp.denials.deny(peer, "", dst, "authorization policy of "+workloadName(w))
			return 401
		}
	}
	return 200
}

// targets lists the workloads a request to authority may be sent to: every
// endpoint of a service VIP (each request picks one), or the one workload.
func (wp *Waypoint) targets(ix *Index, authority string) []*xds.Workload {
	ap, err := netip.ParseAddrPort(authority)
	if err != nil {
		return nil
	}
	if sv, ok := ix.svcByVIP[ap.Addr()]; ok {
		var out []*xds.Workload
		for _, uid := range sv.Endpoints {
			if w, ok := ix.byUID[uid]; ok {
				out = append(out, w)
			}
		}
		return out
	}
	if w, ok := ix.byIP[ap.Addr()]; ok {
		return []*xds.Workload{w}
	}
	return nil
}

// forward serves one tunnelled client connection request by request.
func (wp *Waypoint) forward(ctx context.Context, stream net.Conn, authority string) error {
	wp.Metrics.InboundOpened.Add(1)
	defer wp.Metrics.InboundClosed.Add(1)
	id, err := wp.identity()
	if err != nil {
		return err
	}
	br := bufio.NewReader(stream)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		// The client's own Connection: close, read before roundTrip marks
		// the upstream request close (one request per upstream stream).
		clientClose := req.Close
		resp, err := wp.roundTrip(ctx, id, authority, req)
		if err != nil {
			wp.Metrics.Fail(failReason(err))
			resp = &http.Response{StatusCode: http.StatusServiceUnavailable, ProtoMajor: 1, ProtoMinor: 1,
				Header: http.Header{"Content-Length": {"0"}}, Body: http.NoBody}
		}
		werr := resp.Write(stream)
		resp.Body.Close()
		if werr != nil {
			return werr
		}
		if clientClose {
			return nil
		}
	}
}

func (wp *Waypoint) roundTrip(ctx context.Context, id, authority string, req *http.Request) (*http.Response, error) {
	rt, err := wp.route(authority)
	if err != nil {
		return nil, err
	}
	wp.Metrics.Route(rt.Kind)
	cctx, cancel := context.WithTimeout(ctx, wp.Timeout)
	defer cancel()
	var up net.Conn
	if rt.Kind == RouteHBONE {
		up, err = wp.dialer.Connect(cctx, id, rt.Dial, rt.Authority, rt.DstIdentity)
	} else {
		up, err = netnsx.DialTCP(cctx, -1, rt.Dial, wp.Mark, wp.Timeout)
	}
	if err != nil {
		return nil, err
	}
	req.Close = true // one request per upstream stream: the next may go elsewhere
	if err := req.Write(up); err != nil {
		up.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(up), req)
	if err != nil {
		up.Close()
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	up.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.TransferEncoding = nil
	resp.Close = false
	resp.Header.Del("Connection")
	return resp, nil
}

func runWaypoint(ctx context.Context, f mainFlags, logf func(string, ...any), stderr io.Writer) int {
	wp := &Waypoint{UID: f.podUID, Mark: uint32(f.mark), Timeout: f.connectTimeout, denials: denyLog{logf: logf}}
	client, err := xds.NewClient(f.cp, f.node, xds.WithLogf(logf), markedDial(f), xds.WithOnUpdate(func(s xds.Snapshot) {
		wp.idx.Store(NewIndex(s))
	}))
	if err != nil {
		fmt.Fprintf(stderr, "blastradius proxy: %v\n", err)
		return 1
	}
	defer client.Close()
	wp.rootPEM = client.RootPEM
	wp.certs = ca.NewCertManager(client.Sign, client.RootPEM)
	go func() { _ = client.Run(ctx) }()
	wp.dialer = &hbone.Dialer{Cert: wp.certs.Get, Roots: wp.roots, Metrics: &wp.HBONEOut,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return netnsx.DialTCP(ctx, -1, addr, wp.Mark, wp.Timeout)
		}}
	srv := &hbone.Server{
		Cert: func(ctx context.Context) (*tls.Certificate, error) {
			id, err := wp.identity()
			if err != nil {
				return nil, err
			}
			return wp.certs.Get(ctx, id)
		},
		Roots:     wp.roots,
		Authorize: wp.authorize,
		Forward: func(ctx context.Context, stream net.Conn, _, authority string) error {
			return wp.forward(ctx, stream, authority)
		},
		Metrics: &wp.HBONEIn,
	}
	ln, err := netnsx.ListenTCP(-1, fmt.Sprintf("0.0.0.0:%d", HBONEPort), netnsx.ListenOptions{ReusePort: true, Mark: wp.Mark})
	if err != nil {
		fmt.Fprintf(stderr, "blastradius proxy: %v\n", err)
		return 1
	}
	go func() { _ = srv.Serve(ln) }()
	ready := func() (bool, string) {
		if _, err := wp.identity(); err != nil {
			return false, err.Error()
		}
		return true, "ready"
	}
	adminLn, err := netnsx.ListenTCP(-1, adminAddr(f.admin), netnsx.ListenOptions{ReusePort: true})
	if err != nil {
		fmt.Fprintf(stderr, "blastradius proxy: admin: %v\n", err)
		return 1
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := ready(); !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		writeMetrics(w, promtext.L("node", f.node, "mode", "waypoint"), &wp.Metrics, &wp.HBONEIn, &wp.HBONEOut)
	})
	admin := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = admin.Serve(adminLn) }()
	go watchReady(ctx, f.readyFile, ready, logf)
	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.Background(), f.drain)
	defer cancel()
	_ = srv.Shutdown(dctx)
	_ = admin.Close()
	wp.certs.Close()
	return 0
}
