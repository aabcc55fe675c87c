package xds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"blastradius.dev/blastradius/proxy/ca"
)

// NodeStatus is what the control plane knows about one proxy, for the admin
// dump: which version it runs and why it last refused one.
type NodeStatus struct {
	AckedVersion  string `json:"ackedVersion"`            // last version the node reported as accepted
	LastNack      string `json:"lastNack,omitempty"`      // reason of the most recent NACK (kept after later ACKs, as history)
	NackedVersion string `json:"nackedVersion,omitempty"` // version that NACK refused
	Connected     bool   `json:"connected"`               // at least one stream open
	Streams       int    `json:"streams"`                 // open streams; >1 briefly when a proxy reconnects before the old stream is noticed dead
}

// Server is the discovery server and the CA endpoint.
//
// Transport security: the server is meant to be registered on a plaintext
// gRPC listener. The embedded cluster's control-plane link is trusted (it
// runs on the test harness's own network), and the point of the suite is to
// break the data plane, not to re-implement istiod's bootstrap. Real istiod
// serves xDS over TLS and authenticates CSRs with the pod's service-account
// JWT; here any caller may request any identity of the trust domain.
type Server struct {
	// Logf, if set, receives one line per NACK, per connect and disconnect.
	// Set it before Register.
	Logf func(format string, args ...any)

	ca          *ca.CA
	trustDomain string

	mu      sync.Mutex
	cur     *Snapshot // nil until the first SetSnapshot; never mutated once set
	curJSON []byte    // cur without its version, to detect real changes
	seq     int
	nodes   map[string]*NodeStatus
	subs    map[chan struct{}]struct{}

	nonce     atomic.Uint64
	closed    chan struct{}
	closeOnce sync.Once
}

// NewServer returns a server with no snapshot: streams stay quiet until the
// first SetSnapshot, because pushing an empty snapshot would make every proxy
// drop its workloads. ca may be nil, then CreateCertificate is unimplemented.
// trustDomain fills in snapshots that do not name one; it should be the CA's.
func NewServer(authority *ca.CA, trustDomain string) *Server {
	return &Server{
		ca:          authority,
		trustDomain: trustDomain,
		nodes:       map[string]*NodeStatus{},
		subs:        map[chan struct{}]struct{}{},
		closed:      make(chan struct{}),
	}
}

func (s *Server) logf(format string, args ...any) {
	if s.Logf != nil {
		s.Logf(format, args...)
	}
}

// ServerOptions are the grpc.ServerOptions a discovery server needs: clients
// ping every 10s to notice a silently dropped link (a partition must flip
// Connected to false), and grpc-go's default enforcement would answer such
// pings with GOAWAY "too_many_pings". The server pings too, so it notices
// dead proxies and Status stops calling them connected.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
	}
}

// Register adds the discovery service to g.
func (s *Server) Register(g *grpc.Server) { g.RegisterService(&serviceDesc, s) }

// SetSnapshot publishes snap (its Version is ignored). A new version
// "v<n>" is assigned and pushed to every stream only when the content
// differs from the current snapshot, so re-reading an unchanged registry
// costs nothing and does not make proxies re-apply. It returns the version
// current afterwards. snap is copied; the caller may reuse it.
//
// Versions restart at v1 with each server: proxies therefore compare
// content, not version strings, to decide whether something changed.
func (s *Server) SetSnapshot(snap Snapshot) string {
	snap.Version = ""
	if snap.TrustDomain == "" {
		snap.TrustDomain = s.trustDomain
	}
	// Empty rather than null lists keep the JSON dumps and content
	// comparison stable whether the registry wrote [] or nothing.
	if snap.Workloads == nil {
		snap.Workloads = []Workload{}
	}
	if snap.Services == nil {
		snap.Services = []Service{}
	}
	if snap.Policies == nil {
		snap.Policies = []Policy{}
	}
	b, err := json.Marshal(snap)
	if err != nil { // only plain data types: cannot happen
		panic("xds: marshal snapshot: " + err.Error())
	}
	var cp Snapshot // deep copy, so the caller's slices are not shared with streams
	if err := json.Unmarshal(b, &cp); err != nil {
		panic("xds: unmarshal snapshot: " + err.Error())
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && bytes.Equal(b, s.curJSON) {
		return s.cur.Version
	}
	s.seq++
	cp.Version = "v" + strconv.Itoa(s.seq)
	s.cur, s.curJSON = &cp, b
	for ch := range s.subs {
		select { // coalesce: a stream that is behind only needs the latest
		case ch <- struct{}{}:
		default:
		}
	}
	return cp.Version
}

// Snapshot returns the current snapshot, if any. Treat it as read-only.
func (s *Server) Snapshot() (Snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return Snapshot{}, false
	}
	return *s.cur, true
}

// Version returns the current version, "" before the first snapshot.
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return ""
	}
	return s.cur.Version
}

// Status returns the ACK/NACK state of every node ever seen.
func (s *Server) Status() map[string]NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]NodeStatus, len(s.nodes))
	for n, st := range s.nodes {
		ns := *st
		ns.Connected = ns.Streams > 0
		out[n] = ns
	}
	return out
}

// Close ends every stream with Unavailable and refuses new ones. Call it
// before grpc.Server.GracefulStop, which otherwise waits forever for the
// never-ending discovery streams; proxies then reconnect to the next
// control plane instance.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

var errClosing = status.Error(codes.Unavailable, "xds: control plane shutting down")

// sentLog remembers which version recent nonces carried, so a NACK (whose
// VersionInfo is the version the proxy still runs) can be attributed to the
// version it refused. Only the last few matter: a proxy answers each push.
type sentLog struct {
	mu      sync.Mutex
	entries [][2]string // nonce, version
}

func (l *sentLog) add(nonce, version string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, [2]string{nonce, version})
	if len(l.entries) > 16 {
		l.entries = l.entries[len(l.entries)-16:]
	}
}

func (l *sentLog) version(nonce string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.entries {
		if e[0] == nonce {
			return e[1]
		}
	}
	return ""
}

func (s *Server) stream(ss grpc.ServerStream) error {
	// Like xDS, the proxy speaks first and names itself; the node name keys
	// the status the admin endpoint reports.
	var first DiscoveryRequest
	if err := ss.RecvMsg(&first); err != nil {
		return err
	}
	if first.Node == "" {
		return status.Error(codes.InvalidArgument, "xds: first request must name the node")
	}
	// The node name keys the status and is logged as is: a control
	// character in it would forge log lines.
	if strings.ContainsFunc(first.Node, unicode.IsControl) {
		return status.Errorf(codes.InvalidArgument, "xds: node name %q has control characters", first.Node)
	}
	node := first.Node
	notify := make(chan struct{}, 1)
	notify <- struct{}{} // push the current snapshot on connect

	s.mu.Lock()
	select {
	case <-s.closed:
		s.mu.Unlock()
		return errClosing
	default:
	}
	st := s.nodes[node]
	if st == nil {
		st = &NodeStatus{}
		s.nodes[node] = st
	}
	st.Streams++
	if first.VersionInfo != "" {
		// A reconnecting proxy reports what it still runs. Versions are
		// per control plane instance, so after a control plane restart
		// this is the old instance's name for it; still the best we know.
		st.AckedVersion = first.VersionInfo
	}
	s.subs[notify] = struct{}{}
	s.mu.Unlock()
	s.logf("xds: node %s connected (running %q)", node, first.VersionInfo)
	defer func() {
		s.mu.Lock()
		delete(s.subs, notify)
		st.Streams--
		s.mu.Unlock()
		s.logf("xds: node %s disconnected", node)
	}()

	var sent sentLog
	recvErr := make(chan error, 1)
	go func() {
		// Returns when the handler returns: gRPC then cancels the stream
		// and RecvMsg fails.
		for {
			var req DiscoveryRequest
			if err := ss.RecvMsg(&req); err != nil {
				recvErr <- err
				return
			}
			s.record(node, &req, &sent)
		}
	}()

	lastSent := ""
	for {
		select {
		case <-notify:
			s.mu.Lock()
			cur := s.cur
			s.mu.Unlock()
			if cur == nil || cur.Version == lastSent {
				continue
			}
			nonce := strconv.FormatUint(s.nonce.Add(1), 10)
			sent.add(nonce, cur.Version)
			if err := ss.SendMsg(&DiscoveryResponse{Version: cur.Version, Nonce: nonce, Snapshot: *cur}); err != nil {
				return err
			}
			lastSent = cur.Version
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-s.closed:
			return errClosing
		case <-ss.Context().Done():
			return ss.Context().Err()
		}
	}
}

// record applies an ACK or NACK to the node's status. Nothing is re-sent on
// NACK, like xDS: the proxy keeps its previous snapshot and the next change
// is the next chance.
func (s *Server) record(node string, req *DiscoveryRequest, sent *sentLog) {
	if req.ResponseNonce == "" {
		return // not an answer to a push
	}
	refused := sent.version(req.ResponseNonce)
	s.mu.Lock()
	st := s.nodes[node]
	if req.VersionInfo != "" {
		st.AckedVersion = req.VersionInfo
	}
	if req.ErrorDetail != "" {
		st.LastNack = req.ErrorDetail
		st.NackedVersion = refused
	}
	s.mu.Unlock()
	if req.ErrorDetail != "" {
		// Quoted: the reason is the proxy's text and must not forge log lines.
		s.logf("xds: node %s NACKed %s (still running %q): %q", node, refused, req.VersionInfo, req.ErrorDetail)
	}
}

func (s *Server) createCertificate(_ context.Context, req *CertificateRequest) (*CertificateResponse, error) {
	if s.ca == nil {
		return nil, status.Error(codes.Unimplemented, "xds: this control plane has no CA")
	}
	chain, err := s.ca.Sign(req.CSR, req.Identity)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &CertificateResponse{CertChainPEM: chain, RootPEM: s.ca.RootPEM()}, nil
}

// discoveryService is the handler type gRPC checks registrations against.
type discoveryService interface {
	stream(grpc.ServerStream) error
	createCertificate(context.Context, *CertificateRequest) (*CertificateResponse, error)
}

// serviceDesc is what protoc-gen-go-grpc would generate.
var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*discoveryService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "CreateCertificate",
		Handler:    createCertificateHandler,
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		Handler:       func(srv any, ss grpc.ServerStream) error { return srv.(discoveryService).stream(ss) },
		ServerStreams: true,
		ClientStreams: true,
	}},
	Metadata: "hand-written, JSON codec " + CodecName,
}

// streamDesc is the client's view of the Stream method.
var streamDesc = grpc.StreamDesc{StreamName: "Stream", ServerStreams: true, ClientStreams: true}

func createCertificateHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(CertificateRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(discoveryService).createCertificate(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: CreateCertificateMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(discoveryService).createCertificate(ctx, req.(*CertificateRequest))
	})
}
