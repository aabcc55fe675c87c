package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// fakeIstiod is a Delta ADS server the test drives by hand: each stream
// shows up on streams with its metadata, the requests it receives and a
// channel of responses to send.
type fakeIstiod struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	streams chan *fakeStream
	addr    string
}

type fakeStream struct {
	method string
	md     metadata.MD
	reqs   chan *discoveryv3.DeltaDiscoveryRequest
	resps  chan *discoveryv3.DeltaDiscoveryResponse
	end    chan struct{} // closed by the test to end the stream with an error
}

func (f *fakeIstiod) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	md, _ := metadata.FromIncomingContext(st.Context())
	method, _ := grpc.Method(st.Context())
	fs := &fakeStream{method: method, md: md, reqs: make(chan *discoveryv3.DeltaDiscoveryRequest, 64),
		resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 64), end: make(chan struct{})}
	f.streams <- fs
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			fs.reqs <- r
		}
	}()
	for {
		select {
		case r := <-fs.resps:
			if err := st.Send(r); err != nil {
				return err
			}
		case <-fs.end:
			return status.Error(codes.Unavailable, "istiod going away")
		case <-st.Context().Done():
			return st.Context().Err()
		}
	}
}

func startFakeIstiod(t *testing.T, opts ...grpc.ServerOption) *fakeIstiod {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIstiod{streams: make(chan *fakeStream, 8), addr: lis.Addr().String()}
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, f)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return f
}

const waitFor = 10 * time.Second

func (f *fakeIstiod) stream(t *testing.T) *fakeStream {
	t.Helper()
	select {
	case s := <-f.streams:
		return s
	case <-time.After(waitFor):
		t.Fatal("no stream opened")
		return nil
	}
}

func (s *fakeStream) next(t *testing.T) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	select {
	case r := <-s.reqs:
		return r
	case <-time.After(waitFor):
		t.Fatal("no request")
		return nil
	}
}

// subscriptions reads the two requests a stream starts with.
func (s *fakeStream) subscriptions(t *testing.T) (addr, authz *discoveryv3.DeltaDiscoveryRequest) {
	t.Helper()
	return s.next(t), s.next(t)
}

// push sends a response and returns the client's answer to it.
func (s *fakeStream) push(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	t.Helper()
	s.resps <- r
	ans := s.next(t)
	if ans.GetResponseNonce() != r.GetNonce() || ans.GetTypeUrl() != r.GetTypeUrl() {
		t.Fatalf("answer %v does not name nonce %q and type %s", ans, r.GetNonce(), r.GetTypeUrl())
	}
	return ans
}

func resource(t *testing.T, name, version string, m proto.Message) *discoveryv3.Resource {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &discoveryv3.Resource{Name: name, Version: version, Resource: a}
}

func writeToken(t *testing.T, path, tok string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil { // as the kubelet swaps it
		t.Fatal(err)
	}
}

type deltaEnv struct {
	c       *DeltaClient
	updates chan Snapshot
	token   string
}

func startDeltaClient(t *testing.T, cfg DeltaConfig) *deltaEnv {
	t.Helper()
	e := &deltaEnv{updates: make(chan Snapshot, 64), token: filepath.Join(t.TempDir(), "token")}
	writeToken(t, e.token, "token-1")
	cfg.TokenFile = e.token
	cfg.PodName, cfg.PodNamespace = "ztunnel-x7", "istio-system"
	cfg.InstanceIPs = []string{"10.244.0.5", "fd00::5"}
	cfg.NodeName, cfg.IstioVersion = "node-1", "1.29.0"
	c, err := NewDeltaClient(cfg, WithLogf(t.Logf), WithBackoff(20*time.Millisecond, 200*time.Millisecond),
		WithOnUpdate(func(s Snapshot) { e.updates <- s }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != context.Canceled {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
		c.Close()
	})
	e.c = c
	return e
}

func (e *deltaEnv) update(t *testing.T) Snapshot {
	t.Helper()
	select {
	case s := <-e.updates:
		return s
	case <-time.After(waitFor):
		t.Fatal("no OnUpdate")
		return Snapshot{}
	}
}

func (e *deltaEnv) noUpdate(t *testing.T) {
	t.Helper()
	select {
	case s := <-e.updates:
		t.Fatalf("unexpected OnUpdate with %+v", s)
	default:
	}
}

func addrResources(t *testing.T) []*discoveryv3.Resource {
	return []*discoveryv3.Resource{
		resource(t, uidOf("a"), "wa1", iwl("a", "10.244.1.2", inService(echoKey, [2]uint32{80, 8080}))),
		resource(t, uidOf("b"), "wb1", iwl("b", "10.244.1.3", inService(echoKey, [2]uint32{80, 8080}))),
		resource(t, echoKey, "s1", isvc("default", "echo.default.svc.cluster.local", "10.96.0.10")),
	}
}

func TestDeltaFirstRequestsIdentifyTheProxy(t *testing.T) {
	f := startFakeIstiod(t)
	startDeltaClient(t, DeltaConfig{Address: f.addr, Plaintext: true, ClusterID: "cluster-7"})
	st := f.stream(t)
	if st.method != DeltaMethod {
		t.Errorf("method %q, want %q", st.method, DeltaMethod)
	}
	if got := st.md.Get("authorization"); !reflect.DeepEqual(got, []string{"Bearer token-1"}) {
		t.Errorf("authorization metadata %q", got)
	}
	if got := st.md.Get("clusterid"); !reflect.DeepEqual(got, []string{"cluster-7"}) {
		t.Errorf("ClusterID metadata %q", got)
	}
	a, z := st.subscriptions(t)
	if a.GetTypeUrl() != IstioAddressType || z.GetTypeUrl() != IstioAuthorizationType {
		t.Fatalf("subscribed to %s, %s", a.GetTypeUrl(), z.GetTypeUrl())
	}
	for _, r := range []*discoveryv3.DeltaDiscoveryRequest{a, z} {
		if len(r.GetResourceNamesSubscribe()) != 0 || len(r.GetInitialResourceVersions()) != 0 || r.GetResponseNonce() != "" {
			t.Errorf("first request is not a bare wildcard subscription: %v", r)
		}
	}
	n := a.GetNode()
	if want := "ztunnel~10.244.0.5~ztunnel-x7.istio-system~istio-system.svc.cluster.local"; n.GetId() != want {
		t.Errorf("node id %q, want %q", n.GetId(), want)
	}
	md := n.GetMetadata().GetFields()
	for k, want := range map[string]string{"NAME": "ztunnel-x7", "NAMESPACE": "istio-system", "INSTANCE_IPS": "10.244.0.5,fd00::5",
		"NODE_NAME": "node-1", "CLUSTER_ID": "cluster-7", "ISTIO_VERSION": "1.29.0"} {
		if got := md[k].GetStringValue(); got != want {
			t.Errorf("metadata %s = %q, want %q", k, got, want)
		}
	}
}

// TestDeltaACKNACKAndRemovals: good responses are ACKed and applied (once
// both types have answered), bad ones NACKed with a one-line reason and
// not applied, removals remove.
func TestDeltaACKNACKAndRemovals(t *testing.T) {
	f := startFakeIstiod(t)
	e := startDeltaClient(t, DeltaConfig{Address: f.addr, Plaintext: true})
	st := f.stream(t)
	st.subscriptions(t)

	ack := st.push(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: IstioAddressType, Nonce: "n1", SystemVersionInfo: "2026-01-01T00:00:00Z/1",
		Resources: addrResources(t)})
	if ack.GetErrorDetail() != nil {
		t.Fatalf("good response NACKed: %v", ack.GetErrorDetail())
	}
	// Workloads without their policies would admit what policies deny.
	e.noUpdate(t)
	if _, ok := e.c.Current(); ok {
		t.Fatal("a snapshot is published before the policies arrived")
	}
	ack = st.push(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: IstioAuthorizationType, Nonce: "n2",
		Resources: []*discoveryv3.Resource{resource(t, "istio-system/istio_converted_static_strict", "", staticStrict())}})
	if ack.GetErrorDetail() != nil {
		t.Fatalf("good response NACKed: %v", ack.GetErrorDetail())
	}
	s := e.update(t)
	if len(s.Workloads) != 2 || len(s.Services) != 1 || len(s.Services[0].Endpoints) != 2 || s.Version == "" {
		t.Fatalf("snapshot %+v", s)
	}
	if len(s.Policies) != 0 {
		t.Fatalf("STRICT no workload lists is applied: %+v", s.Policies)
	}
	if cur, _ := e.c.Current(); !reflect.DeepEqual(*cur, s) {
		t.Fatalf("Current %+v differs from the update %+v", cur, s)
	}

	// Undecodable, mistyped, and untranslatable responses: NACK, keep.
	for _, bad := range []*discoveryv3.DeltaDiscoveryResponse{
		{TypeUrl: IstioAddressType, Nonce: "n3", Resources: []*discoveryv3.Resource{
			resource(t, uidOf("c"), "wc1", iwl("c", "10.244.1.4")),
			{Name: "garbage\nname", Version: "x", Resource: &anypb.Any{TypeUrl: IstioAddressType, Value: []byte{0xff, 0xff, 0xff}}},
		}},
		{TypeUrl: IstioAddressType, Nonce: "n4", Resources: []*discoveryv3.Resource{resource(t, "istio-system/p", "", staticStrict())}},
		{TypeUrl: IstioAddressType, Nonce: "n5", RemovedResources: []string{uidOf("a")}, Resources: []*discoveryv3.Resource{
			resource(t, uidOf("d"), "wd1", iwl("d", "10.244.1.5", func(w *workloadapi.Workload) { w.TunnelProtocol = 42 }))}},
		{TypeUrl: IstioAuthorizationType, Nonce: "n6", Resources: []*discoveryv3.Resource{
			resource(t, "default/p", "", &security.Authorization{Name: "p", Namespace: "default", Action: 9})}},
		{TypeUrl: IstioAddressType, Nonce: "n7", Resources: []*discoveryv3.Resource{{Name: "empty"}}},
	} {
		ans := st.push(t, bad)
		reason := ans.GetErrorDetail().GetMessage()
		if reason == "" || strings.ContainsAny(reason, "\r\n") {
			t.Errorf("nonce %s: answer %v, want a NACK with a one-line reason", bad.GetNonce(), ans)
		}
		if e.c.LastNack() != reason {
			t.Errorf("LastNack %q, want %q", e.c.LastNack(), reason)
		}
	}
	e.noUpdate(t)
	if cur, _ := e.c.Current(); !reflect.DeepEqual(*cur, s) {
		t.Fatalf("a NACKed response changed the state: %+v", cur)
	}

	// A later good response builds on the kept state, not on NACKed parts.
	ack = st.push(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: IstioAddressType, Nonce: "n8", RemovedResources: []string{uidOf("b")}})
	if ack.GetErrorDetail() != nil {
		t.Fatalf("removal NACKed: %v", ack.GetErrorDetail())
	}
	s = e.update(t)
	if len(s.Workloads) != 1 || s.Workloads[0].UID != uidOf("a") || !reflect.DeepEqual(s.Services[0].Endpoints, []string{uidOf("a")}) {
		t.Fatalf("after removing b: %+v", s)
	}
}

// TestDeltaReconnectReportsHeldResources: after the stream drops, the
// client re-subscribes with what it holds (so istiod reports removals made
// meanwhile) and a token read again.
func TestDeltaReconnectReportsHeldResources(t *testing.T) {
	f := startFakeIstiod(t)
	e := startDeltaClient(t, DeltaConfig{Address: f.addr, Plaintext: true})
	st := f.stream(t)
	st.subscriptions(t)
	st.push(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: IstioAddressType, Nonce: "n1", Resources: addrResources(t)})
	st.push(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: IstioAuthorizationType, Nonce: "n2", Resources: []*discoveryv3.Resource{
		resource(t, "default/p", "", auth("default", "p", security.Scope_NAMESPACE, security.Action_ALLOW, &security.Match{}))}})
	// A NACKed resource must not be reported as held.
	st.push(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: IstioAddressType, Nonce: "n3", Resources: []*discoveryv3.Resource{
		resource(t, uidOf("bad"), "v", iwl("bad", "10.244.9.9", func(w *workloadapi.Workload) { w.Uid = "" }))}})
	e.update(t)

	writeToken(t, e.token, "token-2")
	close(st.end)
	st2 := f.stream(t)
	if got := st2.md.Get("authorization"); !reflect.DeepEqual(got, []string{"Bearer token-2"}) {
		t.Errorf("after rotation the stream carries %q, want the new token", got)
	}
	a, z := st2.subscriptions(t)
	if want := map[string]string{uidOf("a"): "wa1", uidOf("b"): "wb1", echoKey: "s1"}; !reflect.DeepEqual(a.GetInitialResourceVersions(), want) {
		t.Errorf("address initial_resource_versions %v, want %v", a.GetInitialResourceVersions(), want)
	}
	if want := map[string]string{"default/p": ""}; !reflect.DeepEqual(z.GetInitialResourceVersions(), want) {
		t.Errorf("authorization initial_resource_versions %v, want %v", z.GetInitialResourceVersions(), want)
	}
	if len(a.GetResourceNamesSubscribe()) != 0 || a.GetNode().GetId() == "" {
		t.Errorf("re-subscription %v: want wildcard with the node", a)
	}
	// istiod answers with what changed meanwhile: b and the policy are gone.
	st2.push(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: IstioAddressType, Nonce: "m1", RemovedResources: []string{uidOf("b")}})
	st2.push(t, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: IstioAuthorizationType, Nonce: "m2", RemovedResources: []string{"default/p"}})
	s := e.update(t)
	for s.Policies != nil || len(s.Workloads) != 1 {
		s = e.update(t) // the first removal alone is an update too
	}
	if s.Workloads[0].UID != uidOf("a") {
		t.Fatalf("after reconnection: %+v", s)
	}
}

// testPKI is a root and a serving certificate for name, PEM.
func testPKI(t *testing.T, name string) (rootPEM []byte, serving tls.Certificate) {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

func TestDeltaTLS(t *testing.T) {
	const name = "istiod.istio-system.svc"
	rootPEM, serving := testPKI(t, name)
	f := startFakeIstiod(t, grpc.Creds(credentials.NewServerTLSFromCert(&serving)))

	// Verified with the right root and name: the stream opens.
	e := startDeltaClient(t, DeltaConfig{Address: f.addr, ServerName: name, RootPEM: rootPEM})
	st := f.stream(t)
	a, _ := st.subscriptions(t)
	if a.GetTypeUrl() != IstioAddressType {
		t.Fatalf("first request %v", a)
	}
	eventually(t, "Connected", e.c.Connected)
	if string(e.c.RootPEM()) != string(rootPEM) {
		t.Errorf("RootPEM %q, want the configured root", e.c.RootPEM())
	}

	// Another root, or another name: no stream ever reaches the server.
	otherRoot, _ := testPKI(t, name)
	rootFile := filepath.Join(t.TempDir(), "root-cert.pem")
	if err := os.WriteFile(rootFile, otherRoot, 0o600); err != nil {
		t.Fatal(err)
	}
	startDeltaClient(t, DeltaConfig{Address: f.addr, ServerName: name, RootFile: rootFile})
	startDeltaClient(t, DeltaConfig{Address: f.addr, ServerName: "evil.example", RootPEM: rootPEM})
	select {
	case s := <-f.streams:
		t.Fatalf("an unverified server got a stream (metadata %v)", s.md)
	case <-time.After(time.Second):
	}
	// The root file is read at each handshake: fixing it lets the next
	// attempt through.
	if err := os.WriteFile(rootFile, rootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	f.stream(t)
}

func TestNewDeltaClientRefusesIncompleteConfig(t *testing.T) {
	ok := DeltaConfig{Address: "istiod.istio-system.svc:15012", RootPEM: []byte("x"), TokenFile: "/t",
		PodName: "z", PodNamespace: "istio-system", InstanceIPs: []string{"10.0.0.1"}}
	for _, c := range []struct {
		name string
		mod  func(*DeltaConfig)
		want string
	}{
		{"no port", func(c *DeltaConfig) { c.Address = "istiod" }, "host:port"},
		{"no pod", func(c *DeltaConfig) { c.PodName = "" }, "pod"},
		{"bad ip", func(c *DeltaConfig) { c.InstanceIPs = []string{"10.0.0"} }, "instance IP"},
		{"no token", func(c *DeltaConfig) { c.TokenFile = "" }, "token"},
		{"no root", func(c *DeltaConfig) { c.RootPEM = nil }, "no root"},
		{"root not PEM", func(c *DeltaConfig) {}, "no PEM"},
		{"root and plaintext", func(c *DeltaConfig) { c.Plaintext = true }, "Plaintext"},
	} {
		cfg := ok
		c.mod(&cfg)
		if _, err := NewDeltaClient(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.want)
		}
	}
}
