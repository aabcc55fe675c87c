package xds

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"blastradius.dev/blastradius/proxy/ca"
)

const td = "cluster.local"

func snapshot(n int) Snapshot {
	s := Snapshot{TrustDomain: td}
	var uids []string
	for i := range n {
		uid := fmt.Sprintf("default/server-%d", i)
		uids = append(uids, uid)
		s.Workloads = append(s.Workloads, Workload{
			UID: uid, Name: fmt.Sprintf("server-%d", i), Namespace: "default", ServiceAccount: "server",
			Node: "n1", IP: fmt.Sprintf("10.0.0.%d", i+1), Protocol: ProtocolHBONE,
		})
	}
	s.Services = []Service{{Name: "server", Namespace: "default", VIP: "10.96.0.10", Ports: []Port{{80, 8080}}, Endpoints: uids}}
	s.Policies = []Policy{{Name: "allow", Namespace: "default", Action: ActionAllow, Principals: []string{"*"}}}
	return s
}

type testServer struct {
	xds  *Server
	g    *grpc.Server
	addr string
	ca   *ca.CA
}

// startServer serves on addr ("127.0.0.1:0" for a fresh port).
func startServer(t *testing.T, addr string) *testServer {
	t.Helper()
	authority, err := ca.New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	// Re-binding the port of a just-stopped server can race with the
	// kernel releasing it; retry briefly.
	for i := 0; ; i++ {
		lis, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		if i == 50 {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s := NewServer(authority, td)
	s.Logf = t.Logf
	g := grpc.NewServer(ServerOptions()...)
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	ts := &testServer{xds: s, g: g, addr: lis.Addr().String(), ca: authority}
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	ts.xds.Close()
	ts.g.Stop()
}

func startClient(t *testing.T, addr, node string, opts ...ClientOption) *Client {
	t.Helper()
	opts = append([]ClientOption{WithLogf(t.Logf), WithBackoff(20*time.Millisecond, 200*time.Millisecond)}, opts...)
	c, err := NewClient(addr, node, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
		c.Close()
	})
	return c
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func currentVersion(c *Client) string {
	if s, ok := c.Current(); ok {
		return s.Version
	}
	return ""
}

func TestPushOnConnectAndOnChangeWithACK(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0")
	if v := ts.xds.SetSnapshot(snapshot(2)); v != "v1" {
		t.Fatalf("first version %q, want v1", v)
	}
	var mu sync.Mutex
	var seen []string
	c := startClient(t, ts.addr, "n1", WithOnUpdate(func(s Snapshot) {
		mu.Lock()
		seen = append(seen, s.Version)
		mu.Unlock()
	}))

	// Pushed on connect, ACKed.
	select {
	case s := <-c.Updates():
		if s.Version != "v1" || len(s.Workloads) != 2 {
			t.Fatalf("first update %s with %d workloads", s.Version, len(s.Workloads))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no snapshot pushed on connect")
	}
	eventually(t, "ACK of v1", func() bool { return ts.xds.Status()["n1"].AckedVersion == "v1" })
	if !c.Connected() || !ts.xds.Status()["n1"].Connected {
		t.Fatal("not connected")
	}

	// Unchanged content: no new version, nothing pushed.
	if v := ts.xds.SetSnapshot(snapshot(2)); v != "v1" {
		t.Fatalf("same content got version %q", v)
	}
	// Changed content: v2 pushed and ACKed.
	if v := ts.xds.SetSnapshot(snapshot(3)); v != "v2" {
		t.Fatalf("changed content got version %q, want v2", v)
	}
	select {
	case s := <-c.Updates():
		if s.Version != "v2" || len(s.Workloads) != 3 {
			t.Fatalf("update %s with %d workloads, want v2 with 3", s.Version, len(s.Workloads))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("change not pushed")
	}
	eventually(t, "ACK of v2", func() bool { return ts.xds.Status()["n1"].AckedVersion == "v2" })
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "v1,v2" {
		t.Fatalf("OnUpdate saw %v, want [v1 v2]", seen)
	}
}

func TestInvalidSnapshotIsNACKed(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0")
	ts.xds.SetSnapshot(snapshot(2))
	c := startClient(t, ts.addr, "n1")
	eventually(t, "ACK of v1", func() bool { return ts.xds.Status()["n1"].AckedVersion == "v1" })

	bad := snapshot(2)
	bad.Workloads[1].IP = bad.Workloads[0].IP
	if v := ts.xds.SetSnapshot(bad); v != "v2" {
		t.Fatalf("bad snapshot got %q", v)
	}
	eventually(t, "NACK of v2", func() bool { return ts.xds.Status()["n1"].LastNack != "" })
	st := ts.xds.Status()["n1"]
	if st.NackedVersion != "v2" || st.AckedVersion != "v1" || !strings.Contains(st.LastNack, "already used") {
		t.Fatalf("status after NACK: %+v", st)
	}
	if v := currentVersion(c); v != "v1" {
		t.Fatalf("client runs %q after NACK, want v1", v)
	}
	if !strings.Contains(c.LastNack(), "10.0.0.1") {
		t.Fatalf("client LastNack = %q", c.LastNack())
	}

	// The next good snapshot is accepted again.
	ts.xds.SetSnapshot(snapshot(4))
	eventually(t, "ACK of v3", func() bool { return ts.xds.Status()["n1"].AckedVersion == "v3" })
	if s, _ := c.Current(); len(s.Workloads) != 4 {
		t.Fatalf("client has %d workloads, want 4", len(s.Workloads))
	}
}

func TestClientReconnectsAndServesFromMemory(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0")
	addr := ts.addr
	ts.xds.SetSnapshot(snapshot(2))
	c := startClient(t, addr, "n1")
	eventually(t, "v1", func() bool { return currentVersion(c) == "v1" })
	eventually(t, "connected", c.Connected)

	ts.stop()
	eventually(t, "disconnect noticed", func() bool { return !c.Connected() })
	// Control plane down: the last snapshot is still served.
	time.Sleep(300 * time.Millisecond) // several reconnect attempts
	s, ok := c.Current()
	if !ok || s.Version != "v1" || len(s.Workloads) != 2 {
		t.Fatalf("while disconnected Current = %+v, %v", s, ok)
	}

	// A new control plane on the same port, whose v1 has other content:
	// the client must apply it although the version string is the same.
	ts2 := startServer(t, addr)
	ts2.xds.SetSnapshot(snapshot(5))
	eventually(t, "reconnect and new content", func() bool {
		s, ok := c.Current()
		return ok && len(s.Workloads) == 5
	})
	eventually(t, "ACK on the new server", func() bool {
		st := ts2.xds.Status()["n1"]
		return st.AckedVersion == "v1" && st.Connected
	})
	if !c.Connected() {
		t.Fatal("Connected false after reconnect")
	}
}

func TestServerWithoutSnapshotStaysQuiet(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0")
	c := startClient(t, ts.addr, "n1")
	eventually(t, "stream open", func() bool { return ts.xds.Status()["n1"].Connected })
	time.Sleep(100 * time.Millisecond)
	if _, ok := c.Current(); ok {
		t.Fatal("client got a snapshot although the server has none")
	}
	ts.xds.SetSnapshot(snapshot(1))
	eventually(t, "first snapshot", func() bool { return currentVersion(c) == "v1" })
}

func TestSignOverGRPC(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0")
	c, err := NewClient(ts.addr, "n1", WithSignTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := SpiffeID(td, "default", "foo")

	// Through a CertManager, the way node proxies use it.
	m := ca.NewCertManager(c.Sign, c.RootPEM)
	defer m.Close()
	cert, err := m.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := ca.IdentityOf(cert.Leaf); got != id {
		t.Fatalf("identity %q, want %q", got, id)
	}
	pool, err := ca.PoolFromPEM(c.RootPEM())
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.VerifyPeer(pool)(cert.Certificate, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(c.RootPEM()); b == nil {
		t.Fatal("no root PEM")
	} else if root, _ := x509.ParseCertificate(b.Bytes); !root.Equal(ts.ca.Root()) {
		t.Fatal("client root differs from the server's CA root")
	}

	// The CA refuses other trust domains, and the error says it refused.
	csr, _, err := ca.NewCSR("spiffe://evil.example/ns/default/sa/foo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sign(context.Background(), csr, "spiffe://evil.example/ns/default/sa/foo"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("foreign trust domain: err = %v", err)
	}

	// Control plane gone: a clear error, within the per-call deadline.
	ts.stop()
	csr, _, _ = ca.NewCSR(id)
	start := time.Now()
	_, err = c.Sign(context.Background(), csr, id)
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("sign with the control plane down: err = %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("sign took %s with the control plane down", d)
	}
}

func TestValidate(t *testing.T) {
	good := snapshot(3)
	if err := good.Validate(); err != nil {
		t.Fatalf("good snapshot: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*Snapshot)
		match  string
	}{
		{"duplicate uid", func(s *Snapshot) { s.Workloads[1].UID = s.Workloads[0].UID }, "duplicate uid"},
		{"duplicate ip", func(s *Snapshot) { s.Workloads[2].IP = s.Workloads[0].IP }, "already used"},
		// Found by FuzzClientHandle: the same address in another spelling.
		{"duplicate ip, IPv4-mapped", func(s *Snapshot) { s.Workloads[2].IP = "::ffff:" + s.Workloads[0].IP }, "already used"},
		{"ip with a zone", func(s *Snapshot) { s.Workloads[0].IP = "fe80::1%eth0" }, "zone"},
		{"vip with a zone", func(s *Snapshot) { s.Services[0].VIP = "fe80::1%eth0" }, "zone"},
		{"bad workload ip", func(s *Snapshot) { s.Workloads[0].IP = "10.0.0" }, "bad ip"},
		{"unknown endpoint", func(s *Snapshot) { s.Services[0].Endpoints = append(s.Services[0].Endpoints, "default/ghost") }, "unknown endpoint"},
		{"bad vip", func(s *Snapshot) { s.Services[0].VIP = "not-an-ip" }, "bad vip"},
		{"empty vip", func(s *Snapshot) { s.Services[0].VIP = "" }, "bad vip"},
		{"unspecified vip", func(s *Snapshot) { s.Services[0].VIP = "0.0.0.0" }, "unicast"},
		{"vip is a pod ip", func(s *Snapshot) { s.Services[0].VIP = s.Workloads[0].IP }, "also the ip"},
		{"duplicate vip", func(s *Snapshot) {
			s.Services = append(s.Services, Service{Name: "other", Namespace: "default", VIP: s.Services[0].VIP})
		}, "already used by service"},
		{"bad port", func(s *Snapshot) { s.Services[0].Ports[0].TargetPort = 0 }, "port"},
		{"bad protocol", func(s *Snapshot) { s.Workloads[0].Protocol = "UDP" }, "protocol"},
		{"policy action", func(s *Snapshot) { s.Policies[0].Action = "AUDIT" }, "action"},
		{"no trust domain", func(s *Snapshot) { s.TrustDomain = "" }, "trust domain"},
	}
	for _, c := range cases {
		s := snapshot(3)
		c.mutate(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), c.match) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.match)
		}
	}
}

func TestSetSnapshotCopiesInput(t *testing.T) {
	s := NewServer(nil, td)
	in := snapshot(2)
	s.SetSnapshot(in)
	in.Workloads[0].IP = "192.0.2.1" // caller reuses its slice
	got, _ := s.Snapshot()
	if got.Workloads[0].IP != "10.0.0.1" {
		t.Fatal("server snapshot shares the caller's slices")
	}
	if got.TrustDomain != td || got.Version != "v1" {
		t.Fatalf("got %q %q", got.TrustDomain, got.Version)
	}
}
