package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/hbone"
	"blastradius.dev/blastradius/proxy/xds"
)

// logLines is a Logf that keeps what it was given.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) matching(sub string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			out = append(out, s)
		}
	}
	return out
}

// inboundEnv is one pod's inbound HBONE side as AddPod builds it (the proxy's
// certificate, roots and authorize), served on loopback so no namespace is
// needed, and a dialer presenting certificates from sign.
type inboundEnv struct {
	p    *Proxy
	addr string
	log  *logLines
}

const (
	aID = "spiffe://cluster.local/ns/default/sa/a"
	bID = "spiffe://cluster.local/ns/default/sa/b"
)

func newInboundEnv(t *testing.T, authority *ca.CA, rootPEM func() []byte, policies []xds.Policy) *inboundEnv {
	t.Helper()
	log := &logLines{}
	p := New(Options{Node: "node-1", Logf: log.logf},
		func(_ context.Context, csr []byte, id string) ([]byte, error) { return authority.Sign(csr, id) }, rootPEM)
	s := snap()
	s.Workloads[1].IP = "127.0.0.1" // b: the destination, served on loopback
	s.Policies = policies
	p.SetSnapshot(s)
	pd := &pod{uid: "default/b", ip: netip.MustParseAddr("127.0.0.1")}
	srv := &hbone.Server{
		Cert: func(ctx context.Context) (*tls.Certificate, error) { return p.cert(ctx, bID) },
		// The same callbacks AddPod wires up.
		Roots:     p.roots,
		Authorize: func(peer, authority string) int { return p.authorize(pd, peer, authority) },
		Forward: func(_ context.Context, st net.Conn, _, _ string) error {
			_, err := st.Write([]byte("hello"))
			return err
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ln.Close()
		p.certs.Close()
	})
	return &inboundEnv{p: p, addr: ln.Addr().String(), log: log}
}

func clientDialer(t *testing.T, authority *ca.CA, roots func() []byte) *hbone.Dialer {
	t.Helper()
	cm := ca.NewCertManager(func(_ context.Context, csr []byte, id string) ([]byte, error) { return authority.Sign(csr, id) }, roots)
	pool := func() *x509.CertPool {
		p, err := ca.PoolFromPEM(roots())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	d := &hbone.Dialer{Cert: cm.Get, Roots: pool}
	t.Cleanup(func() { _ = d.Close(); cm.Close() })
	return d
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestPolicyDenialLoggedOncePerPeer: N connections a policy denies leave one
// log line, naming the peer's SPIFFE identity and the destination; the
// denials that follow within the interval are counted and reported with the
// pair's next line.
func TestPolicyDenialLoggedOncePerPeer(t *testing.T) {
	authority, err := ca.New("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := newInboundEnv(t, authority, authority.RootPEM, []xds.Policy{{Name: "deny-a", Namespace: "default",
		Workloads: []string{"default/b"}, Action: xds.ActionDeny, Principals: []string{aID}}})
	now := time.Now()
	var clock sync.Mutex
	e.p.denials.now = func() time.Time { clock.Lock(); defer clock.Unlock(); return now }
	d := clientDialer(t, authority, authority.RootPEM)

	const n = 20
	for i := 0; i < n; i++ {
		_, err := d.Connect(testCtx(t), aID, e.addr, "127.0.0.1:8080", bID)
		var se *hbone.StatusError
		if !errors.As(err, &se) || se.Code != 401 {
			t.Fatalf("connection %d: %v, want a 401 refusal", i, err)
		}
	}
	if got := e.p.Metrics.PolicyDenials.Load(); got != n {
		t.Errorf("policy_denials = %d, want %d", got, n)
	}
	lines := e.log.matching("policy denied")
	if len(lines) != 1 {
		t.Fatalf("%d denials logged as %d lines, want 1:\n%s", n, len(lines), strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[0], aID) || !strings.Contains(lines[0], "default/b 127.0.0.1:8080") {
		t.Errorf("denial line does not name the peer identity and the destination: %q", lines[0])
	}

	// Another peer is its own pair: logged at once.
	e.p.SetSnapshot(func() xds.Snapshot {
		s := e.p.Index().Snap
		s.Policies = append(s.Policies, xds.Policy{Name: "deny-x", Namespace: "default", Workloads: []string{"default/b"},
			Action: xds.ActionDeny, Principals: []string{"spiffe://cluster.local/ns/default/sa/x"}})
		return s
	}())
	if _, err := d.Connect(testCtx(t), "spiffe://cluster.local/ns/default/sa/x", e.addr, "127.0.0.1:8080", bID); err == nil {
		t.Fatal("x was let through")
	}
	if got := e.log.matching("sa/x -> "); len(got) != 1 {
		t.Errorf("a second peer's denial logged %d times, want 1", len(got))
	}

	// After the interval the pair is logged again, with what was skipped.
	clock.Lock()
	now = now.Add(DenyLogInterval + time.Second)
	clock.Unlock()
	if _, err := d.Connect(testCtx(t), aID, e.addr, "127.0.0.1:8080", bID); err == nil {
		t.Fatal("a was let through")
	}
	lines = e.log.matching("policy denied " + aID)
	if len(lines) != 2 || !strings.Contains(lines[1], fmt.Sprintf("%d more denials", n-1)) {
		t.Errorf("after the interval: %q, want a second line counting %d skipped denials", lines, n-1)
	}
}

// TestPeerFromAnotherTrustDomainDenied: a client certificate that chains to a
// root in the bundle but names another trust domain is refused by the
// server's authorization even with no policy at all.
func TestPeerFromAnotherTrustDomainDenied(t *testing.T) {
	mesh, err := ca.New("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.New("other.domain", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Both roots are trusted, as during a root migration or with a
	// federated bundle.
	bundle := func() []byte { return append(mesh.RootPEM(), other.RootPEM()...) }
	e := newInboundEnv(t, mesh, bundle, nil)
	d := clientDialer(t, other, bundle)
	foreign := "spiffe://other.domain/ns/default/sa/a"
	_, err = d.Connect(testCtx(t), foreign, e.addr, "127.0.0.1:8080", bID)
	var se *hbone.StatusError
	if !errors.As(err, &se) || se.Code != 401 {
		t.Fatalf("Connect from another trust domain: %v, want a 401 refusal", err)
	}
	if got := e.log.matching(foreign); len(got) != 1 || !strings.Contains(got[0], "not in trust domain cluster.local") {
		t.Errorf("denial log: %q", got)
	}
	// The same client with a mesh identity gets through: the refusal was
	// the trust domain, nothing else.
	d2 := clientDialer(t, mesh, bundle)
	c, err := d2.Connect(testCtx(t), aID, e.addr, "127.0.0.1:8080", bID)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestWaypointEnforcesDestinationPolicy: the waypoint connects onwards with
// its own identity, so it must apply the destination's policies to the
// client itself — through the service bound to it, and when asked to relay
// to a pod directly — or a denied client would get through by addressing
// the waypoint.
func TestWaypointEnforcesDestinationPolicy(t *testing.T) {
	log := &logLines{}
	wp := &Waypoint{UID: "default/wp-0", denials: denyLog{logf: log.logf}}
	s := snap()
	s.Policies = []xds.Policy{{Name: "deny-a", Namespace: "default", Workloads: []string{"default/b"},
		Action: xds.ActionDeny, Principals: []string{aID}}}
	wp.idx.Store(NewIndex(s))
	xID := "spiffe://cluster.local/ns/default/sa/x"
	for _, c := range []struct {
		peer, authority string
		want            int
	}{
		{aID, "10.96.0.12:80", 401},   // svc-w, bound to the waypoint, endpoint b
		{aID, "10.244.2.2:8080", 401}, // b itself, relayed
		{xID, "10.96.0.12:80", 200},
		{aID, "10.244.3.3:8080", 200}, // d: no policy
		{"spiffe://other.domain/ns/default/sa/x", "10.244.3.3:8080", 401},
		{aID, "192.0.2.1:80", 400}, // not routable by the waypoint
	} {
		if got := wp.authorize(c.peer, c.authority); got != c.want {
			t.Errorf("authorize(%s, %s) = %d, want %d", c.peer, c.authority, got, c.want)
		}
	}
	for i := 0; i < 10; i++ {
		wp.authorize(aID, "10.96.0.12:80")
	}
	if got := log.matching(aID + " -> default/b 10.96.0.12:80"); len(got) != 1 {
		t.Errorf("11 denials through the service logged as %q, want one line naming the destination", got)
	}
}

// TestPoliciesSeeTheDestinationPort: the HBONE server and the waypoint
// hand policies the port the workload is reached on (the authority's,
// after a service's mapping at the waypoint), so port rules apply.
func TestPoliciesSeeTheDestinationPort(t *testing.T) {
	authority, err := ca.New("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s := snap()
	s.Policies = []xds.Policy{{Name: "no-9090", Namespace: "default", Workloads: []string{"default/b"}, Action: xds.ActionDeny,
		Rules: []xds.Rule{{Clauses: []xds.Clause{{Matches: []xds.Match{{DestinationPorts: []int{8080}, Principals: []xds.StringMatch{{Exact: aID}}}}}}}}}}
	p := New(Options{Node: "node-1"}, func(_ context.Context, csr []byte, id string) ([]byte, error) { return authority.Sign(csr, id) }, authority.RootPEM)
	t.Cleanup(p.certs.Close)
	p.SetSnapshot(s)
	pd := &pod{uid: "default/b", ip: netip.MustParseAddr("10.244.2.2")}
	if got := p.authorize(pd, aID, "10.244.2.2:8080"); got != 401 {
		t.Errorf("a to b:8080 = %d, want 401", got)
	}
	if got := p.authorize(pd, aID, "10.244.2.2:9090"); got != 200 {
		t.Errorf("a to b:9090 = %d, want 200", got)
	}
	if got := p.authorize(pd, bID, "10.244.2.2:8080"); got != 200 {
		t.Errorf("b to b:8080 = %d, want 200", got)
	}

	wp := &Waypoint{UID: "default/wp-0", denials: denyLog{logf: func(string, ...any) {}}}
	wp.idx.Store(NewIndex(s))
	if got := wp.authorize(aID, "10.96.0.12:80"); got != 401 { // svc-w port 80 -> b:8080
		t.Errorf("a via the waypoint to svc-w:80 = %d, want 401 (target port 8080)", got)
	}
	if got := wp.authorize(bID, "10.96.0.12:80"); got != 200 {
		t.Errorf("b via the waypoint to svc-w:80 = %d, want 200", got)
	}
}
