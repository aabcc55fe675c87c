package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/hbone"
	"blastradius.dev/blastradius/proxy/netnsx"
	"blastradius.dev/blastradius/proxy/xds"
)

// Ports inside every pod.
const (
	OutboundPort = 15001
	InboundPort  = 15006
)

// PodListenAddrs are the addresses the proxy binds inside every pod's network
// namespace, in this order: outbound capture, inbound plaintext capture,
// inbound HBONE. These are the only listeners of a node proxy besides its
// admin port, and none is in the proxy's own namespace.
//
// The outbound one is on loopback: the pod's redirect rule (nat output) sends
// locally generated connections to 127.0.0.1, so nothing else needs to reach
// it, and on the pod IP any other pod could connect to it and have the proxy
// open connections as this pod. 15006 and 15008 must take connections from
// other pods (prerouting redirects to the pod IP; peers dial ip:15008).
func PodListenAddrs() []string {
	return []string{
		fmt.Sprintf("127.0.0.1:%d", OutboundPort),
		fmt.Sprintf("0.0.0.0:%d", InboundPort),
		fmt.Sprintf("0.0.0.0:%d", HBONEPort),
	}
}

// ownPort reports whether port is one of the proxy's in-pod listeners.
func ownPort(port uint16) bool {
	return port == OutboundPort || port == InboundPort || port == HBONEPort
}

// addressedToProxy reports whether dst, a connection's original destination,
// is one of the proxy's own listeners in pod pd (its IP or loopback): the
// connection was not redirected but dialled straight at the proxy. Serving
// it would make the proxy connect to its own listener again, which accepts
// and connects again, without end — one connection from any pod would
// exhaust the node proxy's descriptors. Istio's sidecar drops the same
// connections with its loop-prevention filter chains.
func addressedToProxy(pd *pod, dst netip.AddrPort) bool {
	a := dst.Addr().Unmap()
	return ownPort(dst.Port()) && (a == pd.ip || a.IsLoopback() || a.IsUnspecified())
}

// Handoff strategies for a graceful restart.
const (
	// HandoffMigrate sets net.ipv4.tcp_migrate_req in each pod, so closing the
	// old proxy's listeners moves connections still in their accept queues to
	// the new proxy's listeners instead of resetting them.
	HandoffMigrate = "migrate"
	// HandoffNone closes the old listeners as they are: queued connections
	// are reset. Kept to let the measurement show the difference.
	HandoffNone = "none"
)

// Options configure a proxy.
type Options struct {
	Node           string
	Mark           uint32        // socket mark the pods' redirect rules skip
	ConnectTimeout time.Duration // upstream dial / HBONE connect timeout
	ConfigWait     time.Duration // how long a connection waits for a first config
	Handoff        string
	Logf           func(format string, args ...any)
	// MatchByIP finds a pod's workload by the pod's IP instead of by its
	// UID. istio-cni hands pods over with their Kubernetes UID, which
	// istiod's workloads do not carry (theirs are
	// <cluster>//Pod/<namespace>/<name>); the reference control plane and
	// node agent share UIDs, so they leave it false.
	MatchByIP bool
	// ClusterID names the cluster in the baggage header of the proxy's
	// CONNECTs (k8s.cluster.name), as ztunnel's; empty leaves it out.
	ClusterID string
}

// Proxy serves pods on one node (or, as a sidecar, one pod).
type Proxy struct {
	opt     Options
	certs   *ca.CertManager
	rootPEM func() []byte

	idx      atomic.Pointer[Index]
	haveIdx  chan struct{}
	haveOnce sync.Once

	Metrics  Metrics
	HBONEIn  hbone.Metrics
	HBONEOut hbone.Metrics
	mu       sync.Mutex
	certExp  map[string]time.Time // identity -> NotAfter of the certificate in use
	pods     map[string]*pod
	conns    map[net.Conn]struct{} // live connections, closed at the drain deadline
	denials  denyLog               // policy denials, logged once per peer and destination
}

// pod is one pod the proxy serves.
type pod struct {
	uid     string
	meta    podMeta
	fd      int
	ip      netip.Addr
	lns     []net.Listener
	hbone   *hbone.Server
	dialer  *hbone.Dialer
	stopped chan struct{}
	// accepting counts the running accept loops: once they have returned,
	// every connection their listeners handed over is tracked in conns.
	accepting sync.WaitGroup
}

// New creates a proxy; certificates come from sign, roots from rootPEM.
func New(opt Options, sign ca.Signer, rootPEM func() []byte) *Proxy {
	if opt.ConnectTimeout <= 0 {
		opt.ConnectTimeout = 2 * time.Second
	}
	if opt.ConfigWait <= 0 {
		opt.ConfigWait = 5 * time.Second
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	return &Proxy{opt: opt, certs: ca.NewCertManager(sign, rootPEM), rootPEM: rootPEM,
		haveIdx: make(chan struct{}), pods: map[string]*pod{}, conns: map[net.Conn]struct{}{}, certExp: map[string]time.Time{},
		denials: denyLog{logf: opt.Logf}}
}

// cert returns the certificate of identity id and remembers its expiry for
// /config_dump (faults that outlast a certificate are checked against it).
func (p *Proxy) cert(ctx context.Context, id string) (*tls.Certificate, error) {
	c, err := p.certs.Get(ctx, id)
	if err != nil || c == nil || len(c.Certificate) == 0 {
		return c, err
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return c, nil
		}
	}
	p.mu.Lock()
	p.certExp[id] = leaf.NotAfter
	p.mu.Unlock()
	return c, nil
}

// CertExpiries lists the certificates in use by identity. Each is looked up
// again first: the manager renews in the background, and an identity only
// used for accepted connections may not have been asked for in a while.
func (p *Proxy) CertExpiries() map[string]time.Time {
	p.mu.Lock()
	ids := make([]string, 0, len(p.certExp))
	for id := range p.certExp {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, id := range ids {
		_, _ = p.cert(ctx, id)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]time.Time, len(p.certExp))
	for k, v := range p.certExp {
		out[k] = v
	}
	return out
}

// SetSnapshot installs a new accepted configuration.
func (p *Proxy) SetSnapshot(s xds.Snapshot) {
	p.idx.Store(NewIndex(s))
	p.haveOnce.Do(func() { close(p.haveIdx) })
}

// Index returns the current configuration, nil before the first.
func (p *Proxy) Index() *Index { return p.idx.Load() }

// waitIndex waits for a first configuration, as a freshly started proxy
// does before it can route anything.
func (p *Proxy) waitIndex(ctx context.Context) (*Index, error) {
	if ix := p.idx.Load(); ix != nil {
		return ix, nil
	}
	t := time.NewTimer(p.opt.ConfigWait)
	defer t.Stop()
	select {
	case <-p.haveIdx:
		return p.idx.Load(), nil
	case <-t.C:
		return nil, errors.New("no configuration from the control plane")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *Proxy) roots() *x509.CertPool {
	pool, err := ca.PoolFromPEM(p.rootPEM())
	if err != nil {
		return x509.NewCertPool() // nothing verifies: fail closed
	}
	return pool
}

// podMeta is what the node agent says about a pod besides its UID; any
// field may be empty (not said).
type podMeta struct {
	name, namespace, serviceAccount string
}

// workloadOf is pd's workload in ix: by UID, or with MatchByIP by the
// pod's IP, provided the workload there is the pod the node agent named.
func (p *Proxy) workloadOf(ix *Index, pd *pod) (*xds.Workload, error) {
	if !p.opt.MatchByIP {
		w, ok := ix.Workload(pd.uid)
		if !ok && pd.meta.namespace != "" && pd.meta.name != "" {
			// On Kubernetes the node agent names the pod by its Kubernetes
			// UID, as istio-cni does; the reference control plane names
			// workloads namespace/name.
			w, ok = ix.Workload(pd.meta.namespace + "/" + pd.meta.name)
		}
		if !ok {
			return nil, fmt.Errorf("workload %s unknown to the control plane", pd.uid)
		}
		return w, nil
	}
	w, ok := ix.WorkloadByIP(pd.ip)
	if !ok {
		return nil, fmt.Errorf("pod %s: no workload with IP %s in the configuration", pd.uid, pd.ip)
	}
	// A deleted pod's IP goes to a new pod while the configuration may
	// still list the old one there: serving the new pod as the old would
	// give it the old pod's identity and policies. ztunnel makes the
	// same check against the node agent's workload info.
	m := pd.meta
	if m.namespace != "" && m.namespace != w.Namespace || m.name != "" && m.name != w.Name ||
		m.serviceAccount != "" && m.serviceAccount != w.ServiceAccount {
		return nil, fmt.Errorf("pod %s (%s/%s, service account %q): IP %s is workload %s/%s (service account %q) in the configuration",
			pd.uid, m.namespace, m.name, m.serviceAccount, pd.ip, w.Namespace, w.Name, w.ServiceAccount)
	}
	return w, nil
}

// identityOf is the SPIFFE identity of a pod, from configuration.
func (p *Proxy) identityOf(ix *Index, pd *pod) (string, *xds.Workload, error) {
	w, err := p.workloadOf(ix, pd)
	if err != nil {
		return "", nil, err
	}
	return w.Identity(ix.Snap.TrustDomain), w, nil
}

// AddPod starts serving a pod whose network namespace is nsFD (owned by the
// proxy from now on). Listeners use SO_REUSEPORT so that a new proxy can bind
// them while the old one still holds them.
//
// Adding a pod the proxy already serves, with the same network namespace and
// IP, changes nothing (nsFD is closed): that is what a node agent's snapshot
// after a reconnection looks like, and ztunnel likewise keeps such a pod as
// it is, listeners and connections included. A different namespace or IP
// replaces the pod.
func (p *Proxy) AddPod(uid string, nsFD int, ip netip.Addr) error {
	return p.addPod(uid, podMeta{}, nsFD, ip)
}

// addPod is AddPod with what the node agent said about the pod.
func (p *Proxy) addPod(uid string, meta podMeta, nsFD int, ip netip.Addr) error {
	p.mu.Lock()
	old := p.pods[uid]
	p.mu.Unlock()
	if old != nil && old.ip == ip && sameNetNS(old.fd, nsFD) {
		closeFD(nsFD)
		return nil
	}
	if old != nil {
		p.stopPod(old)
	}
	pd := &pod{uid: uid, meta: meta, fd: nsFD, ip: ip, stopped: make(chan struct{})}
	if p.opt.Handoff != HandoffNone {
		if err := netnsx.SetSysctl(nsFD, "net.ipv4.tcp_migrate_req", "1"); err != nil {
			p.opt.Logf("pod %s: tcp_migrate_req: %v (handoff may reset queued connections)", uid, err)
		}
	}
	lo := netnsx.ListenOptions{ReusePort: true, Mark: p.opt.Mark}
	for _, addr := range PodListenAddrs() {
		ln, err := netnsx.ListenTCP(nsFD, addr, lo)
		if err != nil {
			for _, l := range pd.lns {
				l.Close()
			}
			return fmt.Errorf("pod %s: listen on %s: %w", uid, addr, err)
		}
		pd.lns = append(pd.lns, ln)
	}
	pd.dialer = &hbone.Dialer{
		Cert:  p.cert,
		Roots: p.roots,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return netnsx.DialTCP(ctx, nsFD, addr, p.opt.Mark, p.opt.ConnectTimeout)
		},
		Metrics: &p.HBONEOut,
	}
	pd.hbone = &hbone.Server{
		Cert: func(ctx context.Context) (*tls.Certificate, error) {
			ix, err := p.waitIndex(ctx)
			if err != nil {
				return nil, err
			}
			id, _, err := p.identityOf(ix, pd)
			if err != nil {
				return nil, err
			}
			return p.cert(ctx, id)
		},
		Roots:     p.roots,
		Authorize: func(peer, authority string) int { return p.authorize(pd, peer, authority) },
		Forward: func(ctx context.Context, stream net.Conn, peer, authority string) error {
			return p.forwardInbound(ctx, pd, stream, authority)
		},
		Metrics: &p.HBONEIn,
	}
	p.mu.Lock()
	p.pods[uid] = pd
	p.mu.Unlock()
	pd.accepting.Add(2)
	go p.acceptLoop(pd, pd.lns[0], p.handleOutbound)
	go p.acceptLoop(pd, pd.lns[1], p.handleInboundPlain)
	go func() { _ = pd.hbone.Serve(pd.lns[2]) }()
	// Fetch the pod's certificate now, not on its first connection.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.opt.ConfigWait)
		defer cancel()
		if ix, err := p.waitIndex(ctx); err == nil {
			if id, _, err := p.identityOf(ix, pd); err == nil {
				_, _ = p.cert(ctx, id)
			}
		}
	}()
	return nil
}

// DelPod stops serving a pod (its established connections are closed).
func (p *Proxy) DelPod(uid string) {
	p.mu.Lock()
	pd := p.pods[uid]
	delete(p.pods, uid)
	p.mu.Unlock()
	if pd != nil {
		p.stopPod(pd)
	}
}

func (p *Proxy) stopPod(pd *pod) {
	for _, l := range pd.lns {
		l.Close()
	}
	_ = pd.hbone.Close()
	_ = pd.dialer.Close()
	closeFD(pd.fd)
}

// Pods lists served pod UIDs.
func (p *Proxy) Pods() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.pods))
	for uid := range p.pods {
		out = append(out, uid)
	}
	return out
}

// testHookAccepted, when set, runs between Accept returning and the
// connection being tracked: tests hold a connection in that window.
var testHookAccepted func(net.Conn)

func (p *Proxy) acceptLoop(pd *pod, ln net.Listener, handle func(*pod, net.Conn)) {
	defer pd.accepting.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if testHookAccepted != nil {
			testHookAccepted(c)
		}
		// A connection the kernel handed over is served even if a drain has
		// begun: the client already got its SYN-ACK from this listener, and
		// resetting it would turn a graceful restart into a failed request.
		p.trackAlways(c)
		go func() {
			defer p.untrack(c)
			handle(pd, c)
		}()
	}
}

func (p *Proxy) trackAlways(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// handleOutbound carries one connection a pod opened.
func (p *Proxy) handleOutbound(pd *pod, c net.Conn) {
	p.Metrics.OutboundOpened.Add(1)
	defer p.Metrics.OutboundClosed.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), p.opt.ConnectTimeout+p.opt.ConfigWait)
	defer cancel()
	dst, err := netnsx.OriginalDst(c)
	if err != nil {
		p.fail("original_dst", err)
		resetClose(c)
		return
	}
	if addressedToProxy(pd, dst) {
		p.fail("loop", fmt.Errorf("pod %s: connection from %s addressed to the proxy's own %s", pd.uid, c.RemoteAddr(), dst))
		resetClose(c)
		return
	}
	ix, err := p.waitIndex(ctx)
	if err != nil {
		p.fail("no_config", err)
		resetClose(c)
		return
	}
	srcID, src, err := p.identityOf(ix, pd)
	if err != nil {
		p.fail("unknown_source", err)
		resetClose(c)
		return
	}
	rt, err := ix.Resolve(src, dst, rand.IntN)
	if err != nil {
		p.fail("no_route", err)
		resetClose(c)
		return
	}
	p.Metrics.Route(rt.Kind)
	var up net.Conn
	switch rt.Kind {
	case RouteHBONE, RouteWaypoint:
		// A pooled connection would outlive the certificate it was opened
		// with: a new connection needs a valid certificate of its source,
		// which is what makes failures start at expiry when the CA is gone.
		if _, err := p.cert(ctx, srcID); err != nil {
			p.fail("certificate", err)
			resetClose(c)
			return
		}
		hdr := connectHeaders(src, c.RemoteAddr(), ix.svcByVIP[dst.Addr().Unmap()], p.opt.ClusterID)
		cctx, ccancel := context.WithTimeout(ctx, p.opt.ConnectTimeout)
		// Retries (up to 4 attempts) when the tunnel could not be set up at all (not when the
		// peer answered with a status): a destination proxy that is handing
		// over to its successor cuts handshakes in progress, and the next
		// connection lands on the successor. The application's connection is
		// still untouched, so a retry is invisible to it.
		for attempt := 1; ; attempt++ {
			up, err = pd.dialer.Connect(cctx, srcID, rt.Dial, rt.Authority, rt.DstIdentity, hdr...)
			var se *hbone.StatusError
			if err == nil || errors.As(err, &se) || cctx.Err() != nil || attempt == 4 {
				break
			}
			p.fail("hbone_retry", err)
			// Concurrent connects can share the one dead connection; give
			// the pool a moment to drop it.
			time.Sleep(time.Duration(attempt) * 5 * time.Millisecond)
		}
		ccancel()
	default:
		up, err = netnsx.DialTCP(ctx, pd.fd, rt.Dial, p.opt.Mark, p.opt.ConnectTimeout)
	}
	if err != nil {
		p.fail(failReason(err), err)
		resetClose(c)
		return
	}
	if out, in := pipe(c, up, &p.Metrics.BytesOut, &p.Metrics.BytesIn); in != nil {
		// The tunnel or upstream connection broke under the application's
		// connection, which then ends early: a failure its client sees,
		// counted here so that it is not one the proxy cannot explain. (A
		// client that resets its own connection, as one that gave up
		// waiting does, is not the proxy's failure.)
		p.fail("outbound_broken", fmt.Errorf("%s to %s: from upstream: %v; from the application: %v", c.RemoteAddr(), dst, in, out))
	}
}

// failReason names an upstream failure for the metrics.
func failReason(err error) string {
	var se *hbone.StatusError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("hbone_status_%d", se.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return "connect_timeout"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "connect_timeout"
	}
	return "connect_failed"
}

// authorize is the HBONE server's decision for a CONNECT to this pod.
func (p *Proxy) authorize(pd *pod, peer, authority string) int {
	ap, err := netip.ParseAddrPort(authority)
	// A tunnel to the proxy's own ports would have it connect to itself
	// (see addressedToProxy); no application listens there.
	if err != nil || ap.Addr() != pd.ip || ownPort(ap.Port()) {
		p.fail("bad_authority", nil)
		return 400
	}
	ix := p.idx.Load()
	if ix == nil {
		p.fail("no_config", err)
		return 503
	}
	w, err := p.workloadOf(ix, pd)
	if err != nil {
		p.fail("unknown_destination", err)
		return 503
	}
	// Every peer certificate chains to the mesh's root, which signs only its
	// own trust domain; checking it here too means a second root in the
	// bundle (a migration, a federated domain) cannot slip identities of
	// another domain past policies written for this one.
	if td, _, _, err := ca.ParseSpiffeID(peer); err != nil || td != ix.Snap.TrustDomain {
		p.Metrics.PolicyDenials.Add(1)
		p.denials.deny(peer, "", workloadName(w)+" "+authority, "not in trust domain "+ix.Snap.TrustDomain)
		return 401
	}
	// The HBONE server does not pass on the client's address: policies on
	// source IPs are decided against the peer (see AllowedConn).
	if !ix.AllowedConn(w, xds.Conn{Peer: peer, DstIP: ap.Addr().Unmap(), DstPort: int(ap.Port())}) {
		p.Metrics.PolicyDenials.Add(1)
		p.denials.deny(peer, "", workloadName(w)+" "+authority, "authorization policy")
		return 401
	}
	return 200
}

func workloadName(w *xds.Workload) string { return w.Namespace + "/" + w.Name }

// forwardInbound hands an authorized HBONE stream to the application,
// connecting from inside the pod with the mark so the redirect lets it by.
func (p *Proxy) forwardInbound(ctx context.Context, pd *pod, stream net.Conn, authority string) error {
	p.Metrics.InboundOpened.Add(1)
	defer p.Metrics.InboundClosed.Add(1)
	app, err := netnsx.DialTCP(ctx, pd.fd, authority, p.opt.Mark, p.opt.ConnectTimeout)
	if err != nil {
		p.fail("app_dial", err)
		return err
	}
	// A stream the HBONE server admitted is served even while draining: the
	// client may not have seen the GOAWAY yet, and refusing would turn a
	// graceful restart into failed requests. The deadline still closes it.
	p.trackAlways(app)
	defer p.untrack(app)
	if in, out := pipe(stream, app, &p.Metrics.BytesIn, &p.Metrics.BytesOut); in != nil || out != nil {
		p.fail("inbound_broken", fmt.Errorf("to %s: from the tunnel: %v; from the application: %v", authority, in, out))
	}
	return nil
}

// handleInboundPlain carries plaintext arriving at a pod (from a workload
// outside the mesh): only policies that admit unauthenticated peers allow it.
func (p *Proxy) handleInboundPlain(pd *pod, c net.Conn) {
	p.Metrics.InboundOpened.Add(1)
	defer p.Metrics.InboundClosed.Add(1)
	dst, err := netnsx.OriginalDst(c)
	if err != nil {
		p.fail("original_dst", err)
		resetClose(c)
		return
	}
	if addressedToProxy(pd, dst) {
		p.fail("loop", fmt.Errorf("pod %s: connection from %s addressed to the proxy's own %s", pd.uid, c.RemoteAddr(), dst))
		resetClose(c)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.opt.ConnectTimeout+p.opt.ConfigWait)
	defer cancel()
	ix, err := p.waitIndex(ctx)
	if err != nil {
		p.fail("no_config", err)
		resetClose(c)
		return
	}
	conn := xds.Conn{DstIP: dst.Addr().Unmap(), DstPort: int(dst.Port())}
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		conn.SrcIP = ra.AddrPort().Addr().Unmap()
	}
	if w, err := p.workloadOf(ix, pd); err == nil && !ix.AllowedConn(w, conn) {
		p.Metrics.PolicyDenials.Add(1)
		// The plaintext peer has no identity; its address is all there is,
		// and it is not part of the key: one line per destination, not per
		// ephemeral source port.
		from := ""
		if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			from = "plaintext from " + ra.IP.String()
		}
		p.denials.deny("", from, workloadName(w)+" "+dst.String(), "authorization policy")
		resetClose(c)
		return
	}
	app, err := netnsx.DialTCP(ctx, pd.fd, dst.String(), p.opt.Mark, p.opt.ConnectTimeout)
	if err != nil {
		p.fail("app_dial", err)
		resetClose(c)
		return
	}
	pipe(c, app, &p.Metrics.BytesIn, &p.Metrics.BytesOut)
}

// Drain is the graceful half of a restart: stop accepting (a new proxy
// already holds the same listeners), let established connections finish until
// the deadline, then close what is left. It returns the number of
// connections that had to be closed.
func (p *Proxy) Drain(deadline time.Duration) int {
	p.mu.Lock()
	pods := make([]*pod, 0, len(p.pods))
	for _, pd := range p.pods {
		pods = append(pods, pd)
	}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var wg sync.WaitGroup
	for _, pd := range pods {
		for _, l := range pd.lns[:2] {
			l.Close()
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = pd.hbone.Shutdown(ctx) }()
	}
	// A connection Accept returned just before its listener closed is not
	// tracked until its accept loop gets to run again: wait for the loops to
	// return (they do once Accept fails on the closed listener), or the
	// count below can read zero with that connection in hand, the process
	// exits, and its client, which already had a SYN-ACK, sees a reset.
	loops := make(chan struct{})
	go func() {
		for _, pd := range pods {
			pd.accepting.Wait()
		}
		close(loops)
	}()
	select {
	case <-loops:
	case <-ctx.Done():
	}
	// Connections come and go while draining (one accepted just before the
	// listener closed is still served), so poll rather than wait on a count.
	closed := 0
	for {
		p.mu.Lock()
		left := len(p.conns)
		p.mu.Unlock()
		if left == 0 {
			break
		}
		select {
		case <-time.After(10 * time.Millisecond):
			continue
		case <-ctx.Done():
		}
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
			closed++
		}
		p.mu.Unlock()
		break
	}
	wg.Wait()
	for _, pd := range pods {
		_ = pd.dialer.Close()
	}
	p.certs.Close()
	return closed
}

// fail counts a failure and logs it: every one of the first 200 per reason,
// then one in 500, so a long outage does not flood the log but a rare failure
// always leaves its cause behind (the counters die with the process).
func (p *Proxy) fail(reason string, err error) {
	p.Metrics.Fail(reason)
	n := p.Metrics.Failures(reason)
	if n <= 200 || n%500 == 0 {
		p.opt.Logf("failure #%d %s: %v", n, reason, err)
	}
}
