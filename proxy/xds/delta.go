package xds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"

	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/proxy/istiod"
)

// DeltaMethod is the only discovery RPC istiod serves ztunnel's types on.
const DeltaMethod = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"

// DefaultIstioClusterID is the cluster istiod assumes when none is named.
const DefaultIstioClusterID = "Kubernetes"

// DeltaConfig says where istiod is, how to trust it and authenticate to it,
// and which proxy this is (istiod's node id and metadata, as ztunnel sends
// them).
type DeltaConfig struct {
	// Address is istiod's discovery endpoint, host:port
	// (istiod.istio-system.svc:15012).
	Address string
	// RootPEM or RootFile holds the roots istiod's serving certificate
	// must chain to (root-cert.pem of ConfigMap istio-ca-root-cert);
	// exactly one unless Plaintext. RootFile is read at every handshake so
	// a rotated mount needs no restart.
	RootPEM  []byte
	RootFile string
	// ServerName is checked against istiod's certificate; empty means the
	// host part of Address.
	ServerName string
	// Plaintext talks without TLS: only for an in-process server in tests,
	// the bearer token would otherwise travel in clear.
	Plaintext bool
	// TokenFile holds the service-account token (audience istio-ca) sent
	// as "authorization: Bearer". It is read whenever a stream opens: the
	// kubelet rotates it in place. Required unless Plaintext.
	TokenFile string
	// ClusterID is sent as the ClusterID header and metadata; empty means
	// DefaultIstioClusterID.
	ClusterID string

	// PodName and PodNamespace are the proxy's own pod; istiod requires
	// the namespace to be the token's.
	PodName, PodNamespace string
	// InstanceIPs are the pod's addresses; the first is the one in the
	// node id.
	InstanceIPs  []string
	NodeName     string // Kubernetes node the proxy serves
	IstioVersion string // ISTIO_VERSION metadata; omitted when empty
}

// DeltaClient takes the node proxy's configuration from istiod the way
// ztunnel does: one Delta ADS stream subscribed, wildcard, to Address and
// Authorization resources, kept per type and translated into a Snapshot
// (FromIstio) after every response. A response whose resources do not
// decode, or whose result does not translate into a valid Snapshot, is
// NACKed and not applied: the proxy keeps the state it has.
//
// Like Client, it keeps state in memory only and keeps serving it while
// istiod is away; on reconnection it tells istiod what it holds
// (initial_resource_versions), so istiod reports what was removed
// meanwhile and need not resend what did not change.
type DeltaClient struct {
	cfg  DeltaConfig
	opts clientOptions
	conn *grpc.ClientConn
	node *corev3.Node

	running atomic.Bool

	// Only the Run goroutine writes these, under published.mu.
	published
	held     map[string]map[string]heldResource // type URL -> resource name -> resource
	synced   map[string]bool                    // type URLs that answered at least once
	warnings []string
}

type heldResource struct {
	version string
	msg     proto.Message // *workloadapi.Address or *security.Authorization
}

// deltaTypes are subscribed in this order on every stream.
var deltaTypes = []string{IstioAddressType, IstioAuthorizationType}

// NewDeltaClient checks cfg and prepares the connection; it does not dial,
// Run does. Of opts, WithOnUpdate, WithBackoff, WithLogf and WithDialOptions
// apply as for Client.
func NewDeltaClient(cfg DeltaConfig, opts ...ClientOption) (*DeltaClient, error) {
	host, _, err := net.SplitHostPort(cfg.Address)
	if err != nil || host == "" {
		return nil, fmt.Errorf("xds: istiod address %q is not host:port", cfg.Address)
	}
	if cfg.PodName == "" || cfg.PodNamespace == "" || len(cfg.InstanceIPs) == 0 {
		return nil, errors.New("xds: istiod client needs the pod's name, namespace and IP (node id)")
	}
	for _, ip := range cfg.InstanceIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			return nil, fmt.Errorf("xds: instance IP %q: %v", ip, err)
		}
	}
	if cfg.TokenFile == "" && !cfg.Plaintext {
		// istiod refuses unauthenticated discovery; say so now rather than
		// as a remote refusal at every reconnection.
		return nil, errors.New("xds: istiod client needs a service-account token file")
	}
	cfg.ClusterID = cmp.Or(cfg.ClusterID, DefaultIstioClusterID)
	cfg.ServerName = cmp.Or(cfg.ServerName, host)
	o := clientOptions{backoffInitial: DefaultBackoffInitial, backoffMax: DefaultBackoffMax}
	for _, f := range opts {
		f(&o)
	}
	if o.backoffInitial <= 0 || o.backoffMax < o.backoffInitial {
		return nil, fmt.Errorf("xds: bad back-off %s..%s", o.backoffInitial, o.backoffMax)
	}
	c := &DeltaClient{cfg: cfg, opts: o, published: newPublished(),
		held: map[string]map[string]heldResource{}, synced: map[string]bool{}}
	for _, t := range deltaTypes {
		c.held[t] = map[string]heldResource{}
	}
	creds, err := istiod.Link{ServerName: cfg.ServerName, RootPEM: cfg.RootPEM, RootFile: cfg.RootFile,
		Plaintext: cfg.Plaintext, Prefix: "xds"}.Credentials()
	if err != nil {
		return nil, err
	}
	c.node = c.nodeProto()
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// See NewClient: gRPC's own back-off would grow to 120 s.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: o.backoffInitial, Multiplier: 2, Jitter: 0.2, MaxDelay: o.backoffMax},
			MinConnectTimeout: 5 * time.Second,
		}),
		// A silently dropped link would otherwise keep the stream "up".
		// istiod answers pings more frequent than every 15 s, or sent
		// without a stream, with GOAWAY.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// The first Address response holds every workload and service of
		// the mesh: gRPC's default 4 MiB limit is a few thousand pods.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
	}
	conn, err := grpc.NewClient(cfg.Address, append(append(dial, istiod.DialOptions()...), o.dialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("xds: istiod address %q: %w", cfg.Address, err)
	}
	c.conn = conn
	return c, nil
}

// NodeID is the id this proxy announces: ztunnel's form, which istiod parses
// for the proxy type, IP and DNS domain.
func (c *DeltaClient) NodeID() string {
	ns := c.cfg.PodNamespace
	return "ztunnel~" + c.cfg.InstanceIPs[0] + "~" + c.cfg.PodName + "." + ns + "~" + ns + ".svc.cluster.local"
}

func (c *DeltaClient) nodeProto() *corev3.Node {
	md := map[string]*structpb.Value{
		"NAME":         structpb.NewStringValue(c.cfg.PodName),
		"NAMESPACE":    structpb.NewStringValue(c.cfg.PodNamespace),
		"INSTANCE_IPS": structpb.NewStringValue(strings.Join(c.cfg.InstanceIPs, ",")),
		"CLUSTER_ID":   structpb.NewStringValue(c.cfg.ClusterID),
	}
	if c.cfg.NodeName != "" {
		md["NODE_NAME"] = structpb.NewStringValue(c.cfg.NodeName)
	}
	if c.cfg.IstioVersion != "" {
		md["ISTIO_VERSION"] = structpb.NewStringValue(c.cfg.IstioVersion)
	}
	return &corev3.Node{Id: c.NodeID(), Metadata: &structpb.Struct{Fields: md}}
}

func (c *DeltaClient) logf(format string, args ...any) {
	if c.opts.logf != nil {
		c.opts.logf(format, args...)
	}
}

// Close releases the connection. Run must have returned (or never run).
func (c *DeltaClient) Close() error { return c.conn.Close() }

// Warnings returns what the last accepted translation left out or decided
// (FromIstio).
func (c *DeltaClient) Warnings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.warnings)
}

// RootPEM returns the roots istiod is verified with (nil in plaintext):
// istio-ca-root-cert's root-cert.pem, which is also the mesh's workload
// root. Certificates themselves come from istiod's CA service (see
// proxy/ca.IstioCAClient), not from this client.
func (c *DeltaClient) RootPEM() []byte {
	if c.cfg.Plaintext {
		return nil
	}
	if c.cfg.RootFile != "" {
		b, err := os.ReadFile(c.cfg.RootFile)
		if err != nil {
			return nil
		}
		return b
	}
	return slices.Clone(c.cfg.RootPEM)
}

// Run keeps a stream to istiod open until ctx ends, reconnecting with
// jittered exponential back-off (WithBackoff) forever, and returns ctx's
// error. Only one Run at a time.
func (c *DeltaClient) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("xds: DeltaClient.Run called while already running")
	}
	defer c.running.Store(false)
	delay := c.opts.backoffInitial
	for {
		progressed, err := c.runStream(ctx)
		c.setConnected(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if progressed {
			delay = c.opts.backoffInitial // a new outage, not the same one
		}
		wait := time.Duration(float64(delay) * (0.8 + 0.4*rand.Float64()))
		c.logf("xds: stream to istiod %s ended: %v; reconnecting in %s", c.cfg.Address, err, wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, c.opts.backoffMax)
	}
}

// runStream runs one stream; progressed reports whether any response came.
func (c *DeltaClient) runStream(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	md := []string{"ClusterID", c.cfg.ClusterID}
	if c.cfg.TokenFile != "" {
		tok, err := istiod.Token("xds", c.cfg.TokenFile)
		if err != nil {
			return false, err
		}
		md = append(md, "authorization", "Bearer "+tok)
	}
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(c.conn).DeltaAggregatedResources(metadata.AppendToOutgoingContext(ctx, md...))
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	var reqs []*discoveryv3.DeltaDiscoveryRequest
	for _, t := range deltaTypes {
		// No names: wildcard. What is held goes along, so istiod reports
		// removals made while the stream was down and skips resending
		// unchanged resources.
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t}
		if len(c.held[t]) > 0 {
			req.InitialResourceVersions = map[string]string{}
			for name, r := range c.held[t] {
				req.InitialResourceVersions[name] = r.version
			}
		}
		reqs = append(reqs, req)
	}
	c.mu.Unlock()
	reqs[0].Node = c.node // istiod reads the node from the stream's first request
	for _, req := range reqs {
		if err := st.Send(req); err != nil {
			return false, err
		}
	}
	c.setConnected(true)
	for {
		resp, err := st.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		if err := st.Send(c.handle(resp)); err != nil {
			return progressed, err
		}
	}
}

// handle applies one response if it translates into a valid snapshot, and
// returns its ACK, or else its NACK.
func (c *DeltaClient) handle(resp *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	ans := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()}
	next, err := c.apply(resp)
	var snap Snapshot
	var warnings []string
	if err == nil {
		snap, warnings, err = c.translate(resp.GetTypeUrl(), next)
	}
	if err != nil {
		reason := oneline.Fold(fmt.Sprintf("%s nonce %q rejected: %v", shortType(resp.GetTypeUrl()), resp.GetNonce(), err), 500)
		c.mu.Lock()
		c.lastNack = reason
		c.mu.Unlock()
		c.logf("xds: NACK %s", reason)
		ans.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: reason}
		return ans
	}
	snap.Version = cmp.Or(resp.GetSystemVersionInfo(), resp.GetNonce(), "istiod")

	c.mu.Lock()
	c.held[resp.GetTypeUrl()] = next
	c.synced[resp.GetTypeUrl()] = true
	old := c.warnings
	c.warnings = warnings
	publish := len(c.synced) == len(deltaTypes)
	changed := false
	if publish {
		changed = c.cur == nil || !sameContent(c.cur, &snap)
		c.cur = &snap
	}
	c.mu.Unlock()
	for _, w := range warnings {
		if !slices.Contains(old, w) {
			c.logf("xds: istiod config: %s", w)
		}
	}
	if changed {
		// Before the ACK, so an ACK means "applied" (as Client does).
		if c.opts.onUpdate != nil {
			c.opts.onUpdate(snap)
		}
		c.push(snap)
	}
	return ans
}

// apply returns the resource set of resp's type with resp applied, leaving
// the held one untouched.
func (c *DeltaClient) apply(resp *discoveryv3.DeltaDiscoveryResponse) (map[string]heldResource, error) {
	t := resp.GetTypeUrl()
	c.mu.Lock()
	held, ok := c.held[t]
	c.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("type %q was not subscribed to", t)
	}
	next := maps.Clone(held)
	for _, name := range resp.GetRemovedResources() {
		delete(next, name)
	}
	for _, rn := range resp.GetRemovedResourceNames() {
		delete(next, rn.GetName())
	}
	for _, r := range resp.GetResources() {
		name := cmp.Or(r.GetName(), r.GetResourceName().GetName())
		if name == "" {
			return nil, errors.New("a resource without a name")
		}
		if r.GetResource() == nil {
			return nil, fmt.Errorf("resource %q has no body", name)
		}
		var msg proto.Message
		switch t {
		case IstioAddressType:
			a := &workloadapi.Address{}
			if err := r.GetResource().UnmarshalTo(a); err != nil {
				return nil, fmt.Errorf("resource %q: %v", name, err)
			}
			if a.GetWorkload() == nil && a.GetService() == nil {
				return nil, fmt.Errorf("resource %q holds neither a workload nor a service", name)
			}
			msg = a
		case IstioAuthorizationType:
			a := &security.Authorization{}
			if err := r.GetResource().UnmarshalTo(a); err != nil {
				return nil, fmt.Errorf("resource %q: %v", name, err)
			}
			msg = a
		}
		next[name] = heldResource{version: r.GetVersion(), msg: msg}
	}
	return next, nil
}

// translate runs FromIstio over next (for type t) and the other type's
// held resources, in name order so warnings come out in a stable order.
func (c *DeltaClient) translate(t string, next map[string]heldResource) (Snapshot, []string, error) {
	c.mu.Lock()
	sets := map[string]map[string]heldResource{}
	for _, ty := range deltaTypes {
		sets[ty] = c.held[ty]
	}
	c.mu.Unlock()
	sets[t] = next
	var addrs []*workloadapi.Address
	for _, name := range slices.Sorted(maps.Keys(sets[IstioAddressType])) {
		addrs = append(addrs, sets[IstioAddressType][name].msg.(*workloadapi.Address))
	}
	var auths []*security.Authorization
	for _, name := range slices.Sorted(maps.Keys(sets[IstioAuthorizationType])) {
		auths = append(auths, sets[IstioAuthorizationType][name].msg.(*security.Authorization))
	}
	return FromIstio(addrs, auths)
}

func shortType(t string) string {
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		return t[i+1:]
	}
	return t
}
