package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const td = "cluster.local"

var fooID = "spiffe://cluster.local/ns/default/sa/foo"

func parsePEM(t *testing.T, chain []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, chain = pem.Decode(chain)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate in PEM")
	}
	return out
}

func mustPool(t *testing.T, a *CA) *x509.CertPool {
	t.Helper()
	p, err := PoolFromPEM(a.RootPEM())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sign(t *testing.T, a *CA, id string) []byte {
	t.Helper()
	csr, _, err := NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := a.Sign(csr, id)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

func TestSignVerifyIdentity(t *testing.T) {
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	chain := sign(t, a, fooID)
	certs := parsePEM(t, chain)
	leaf := certs[0]

	id, err := IdentityOf(leaf)
	if err != nil || id != fooID {
		t.Fatalf("IdentityOf = %q, %v; want %q", id, err, fooID)
	}
	if d := before.Add(-time.Minute).Sub(leaf.NotBefore); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("NotBefore %s, want about now-1m", leaf.NotBefore)
	}
	if d := before.Add(time.Hour).Sub(leaf.NotAfter); d < -2*time.Second || d > 2*time.Second {
		t.Errorf("NotAfter %s, want about now+1h", leaf.NotAfter)
	}
	eku := map[x509.ExtKeyUsage]bool{}
	for _, u := range leaf.ExtKeyUsage {
		eku[u] = true
	}
	if !eku[x509.ExtKeyUsageClientAuth] || !eku[x509.ExtKeyUsageServerAuth] {
		t.Errorf("ExtKeyUsage = %v, want client and server auth", leaf.ExtKeyUsage)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		raw[i] = c.Raw
	}
	if err := VerifyPeer(mustPool(t, a))(raw, nil); err != nil {
		t.Fatalf("VerifyPeer: %v", err)
	}
}

func TestVerifyPeerRejects(t *testing.T) {
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	good := parsePEM(t, sign(t, a, fooID))[0]

	// Issued two hours ago for one hour: expired now.
	a.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired := parsePEM(t, sign(t, a, fooID))[0]
	// Issued an hour in the future (beyond the one-minute backdate).
	a.Now = func() time.Time { return time.Now().Add(time.Hour) }
	future := parsePEM(t, sign(t, a, fooID))[0]
	a.Now = nil

	if err := VerifyPeer(mustPool(t, a))([][]byte{good.Raw}, nil); err != nil {
		t.Fatalf("good cert rejected: %v", err)
	}
	cases := []struct {
		name  string
		pool  *x509.CertPool
		raw   [][]byte
		match string
	}{
		{"expired", mustPool(t, a), [][]byte{expired.Raw}, "expired"},
		{"not yet valid", mustPool(t, a), [][]byte{future.Raw}, "expired or is not yet valid"},
		{"wrong root", mustPool(t, other), [][]byte{good.Raw}, "unknown authority"},
		{"no cert", mustPool(t, a), nil, "no certificate"},
		{"garbage", mustPool(t, a), [][]byte{[]byte("junk")}, "peer certificate 0"},
		{"root itself", mustPool(t, a), [][]byte{a.Root().Raw}, "spiffe"},
	}
	for _, c := range cases {
		err := VerifyPeer(c.pool)(c.raw, nil)
		if err == nil || !strings.Contains(err.Error(), c.match) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.match)
		}
	}
}

func TestSignRefuses(t *testing.T) {
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, err := NewCSR(fooID)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), csr...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	cases := []struct {
		name  string
		csr   []byte
		id    string
		match string
	}{
		{"garbage CSR", []byte("not a csr"), fooID, "parse CSR"},
		{"bad signature", tampered, fooID, "CSR"},
		{"wrong trust domain", csr, "spiffe://evil.example/ns/default/sa/foo", "trust domain"},
		{"not spiffe", csr, "https://cluster.local/ns/default/sa/foo", "not spiffe"},
		{"no sa", csr, "spiffe://cluster.local/ns/default", "path"},
		{"extra path", csr, "spiffe://cluster.local/ns/default/sa/foo/bar", "path"},
		{"empty ns", csr, "spiffe://cluster.local/ns//sa/foo", "path"},
		{"port", csr, "spiffe://cluster.local:8080/ns/default/sa/foo", "port"},
		// Found by FuzzCreateCertificate: url.Parse decodes "%0A" without
		// setting RawPath, so a newline reached the namespace.
		{"escaped newline in ns", csr, "spiffe://cluster.local/ns/a%0Ab/sa/foo", "not '\\n'"},
		{"space in sa", csr, "spiffe://cluster.local/ns/default/sa/a%20b", "not ' '"},
	}
	for _, c := range cases {
		_, err := a.Sign(c.csr, c.id)
		if err == nil || !strings.Contains(err.Error(), c.match) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.match)
		}
	}
	if _, err := New("Bad/Domain", time.Hour); err == nil {
		t.Error("New accepted a bad trust domain")
	}
	if _, err := New(td, 0); err == nil {
		t.Error("New accepted a zero TTL")
	}
}

func TestIdentityOfNeedsExactlyOne(t *testing.T) {
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parsePEM(t, sign(t, a, fooID))[0]
	two := *leaf
	two.URIs = append(append(two.URIs[:0:0], leaf.URIs...), leaf.URIs...)
	if _, err := IdentityOf(&two); err == nil || !strings.Contains(err.Error(), "exactly one") {
		t.Errorf("two SANs: %v", err)
	}
	none := *leaf
	none.URIs = nil
	if _, err := IdentityOf(&none); err == nil {
		t.Error("no SAN accepted")
	}
}

func TestLoadKeepsRoot(t *testing.T) {
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := a.RootKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Load(td, time.Hour, a.RootPEM(), key)
	if err != nil {
		t.Fatal(err)
	}
	// A leaf from the reloaded CA verifies against the original root.
	leaf := parsePEM(t, sign(t, b, fooID))[0]
	if err := VerifyPeer(mustPool(t, a))([][]byte{leaf.Raw}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("other.domain", time.Hour, a.RootPEM(), key); err == nil {
		t.Error("Load accepted a root of another trust domain")
	}
	c, _ := New(td, time.Hour)
	if _, err := Load(td, time.Hour, c.RootPEM(), key); err == nil {
		t.Error("Load accepted a key that does not match the root")
	}
}

// An mTLS handshake over loopback with certificates from a CertManager and
// VerifyPeer on both sides: the way the node proxies use this package.
func TestMutualTLSOverLoopback(t *testing.T) {
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	signer := func(_ context.Context, csr []byte, id string) ([]byte, error) { return a.Sign(csr, id) }
	m := NewCertManager(signer, a.RootPEM)
	defer m.Close()
	ctx := context.Background()
	serverID, clientID := "spiffe://cluster.local/ns/default/sa/server", fooID
	sc, err := m.Get(ctx, serverID)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := m.Get(ctx, clientID)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peerSeen := make(chan string, 2)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				tc := tls.Server(conn, &tls.Config{
					Certificates:          []tls.Certificate{*sc},
					ClientAuth:            tls.RequireAnyClientCert,
					VerifyPeerCertificate: m.VerifyPeerCertificate,
					MinVersion:            tls.VersionTLS13,
				})
				if err := tc.Handshake(); err != nil {
					peerSeen <- "error: " + err.Error()
					return
				}
				id, err := IdentityOf(tc.ConnectionState().PeerCertificates[0])
				if err != nil {
					peerSeen <- "error: " + err.Error()
					return
				}
				peerSeen <- id
				_, _ = io.Copy(io.Discard, tc)
			}()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		Certificates:          []tls.Certificate{*cc},
		InsecureSkipVerify:    true, // SPIFFE certs have no DNS names; VerifyPeer does the checking
		VerifyPeerCertificate: VerifyPeer(mustPool(t, a)),
		MinVersion:            tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if id, _ := IdentityOf(conn.ConnectionState().PeerCertificates[0]); id != serverID {
		t.Errorf("client saw %q, want %q", id, serverID)
	}
	if got := <-peerSeen; got != clientID {
		t.Errorf("server saw %q, want %q", got, clientID)
	}

	// A client holding a certificate from another CA is refused.
	other, _ := New(td, time.Hour)
	om := NewCertManager(func(_ context.Context, csr []byte, id string) ([]byte, error) { return other.Sign(csr, id) }, nil)
	defer om.Close()
	oc, err := om.Get(ctx, clientID)
	if err != nil {
		t.Fatal(err)
	}
	conn2, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{*oc}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		// TLS 1.3: the client finishes before the server checks its
		// certificate; the refusal shows on the first read.
		_ = conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn2.Read(make([]byte, 1))
		conn2.Close()
	}
	if err == nil {
		t.Fatal("server accepted a client certificate from a foreign CA")
	}
	if got := <-peerSeen; !strings.Contains(got, "unknown authority") {
		t.Fatalf("server: %q, want an unknown authority error", got)
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCertManagerRotatesAndSurvivesCAOutage(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a.Now = clock.Now // certificates are issued on the fake timeline
	var fail atomic.Bool
	var calls atomic.Int32
	signer := func(_ context.Context, csr []byte, id string) ([]byte, error) {
		calls.Add(1)
		if fail.Load() {
			return nil, errors.New("connection refused")
		}
		return a.Sign(csr, id)
	}
	m := NewCertManager(signer, a.RootPEM)
	m.Now = clock.Now
	m.CheckInterval = 2 * time.Millisecond
	m.RetryInterval = time.Second
	defer m.Close()
	ctx := context.Background()

	c1, err := m.Get(ctx, fooID)
	if err != nil {
		t.Fatal(err)
	}
	serial := func(c *tls.Certificate) string { return c.Leaf.SerialNumber.String() }
	get := func() *tls.Certificate {
		t.Helper()
		c, err := m.Get(ctx, fooID)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// Before half life (valid for 1h from issuance, half life at +30m):
	// cached, no refresh.
	clock.Add(25 * time.Minute)
	time.Sleep(50 * time.Millisecond) // many check intervals
	if c := get(); serial(c) != serial(c1) {
		t.Fatal("certificate refreshed before half life")
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("signer called %d times before half life, want 1", n)
	}

	// Past half life: the background loop renews it.
	clock.Add(6 * time.Minute)
	eventually(t, "rotation at half life", func() bool { return serial(get()) != serial(c1) })
	c2 := get()
	if !c2.Leaf.NotAfter.After(c1.Leaf.NotAfter) {
		t.Fatal("rotated certificate does not live longer")
	}

	// CA down: past c2's half life, refreshes fail but c2 keeps being served.
	fail.Store(true)
	before := calls.Load()
	clock.Add(31 * time.Minute)
	eventually(t, "a failed refresh attempt", func() bool { return calls.Load() > before })
	if c := get(); serial(c) != serial(c2) {
		t.Fatal("old certificate not served while the CA is down")
	}
	// Retries are spaced by RetryInterval on the injected clock, not
	// hammered every check interval.
	n := calls.Load()
	time.Sleep(50 * time.Millisecond)
	if calls.Load() != n {
		t.Fatalf("signer retried %d times without the clock moving", calls.Load()-n)
	}

	// Past NotAfter: Get refuses, saying why.
	clock.Add(30 * time.Minute)
	_, err = m.Get(ctx, fooID)
	if err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "CA is unreachable") {
		t.Fatalf("Get after expiry with the CA down: err = %v", err)
	}

	// CA back: Get fetches a fresh certificate.
	fail.Store(false)
	c3 := get()
	if serial(c3) == serial(c2) || !clock.Now().Before(c3.Leaf.NotAfter) {
		t.Fatal("no fresh certificate after the CA came back")
	}
}

func TestCertManagerRejectsMismatchedCertificate(t *testing.T) {
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A confused signer that signs its own key for another identity.
	m := NewCertManager(func(_ context.Context, _ []byte, _ string) ([]byte, error) {
		csr, _, err := NewCSR("spiffe://cluster.local/ns/default/sa/other")
		if err != nil {
			return nil, err
		}
		return a.Sign(csr, "spiffe://cluster.local/ns/default/sa/other")
	}, a.RootPEM)
	defer m.Close()
	if _, err := m.Get(context.Background(), fooID); err == nil || !strings.Contains(err.Error(), "different key") {
		t.Fatalf("err = %v, want a key mismatch", err)
	}
	if _, err := m.Get(context.Background(), "spiffe://cluster.local/bogus"); err == nil {
		t.Fatal("Get accepted a malformed identity")
	}
}

func TestCertManagerSharesConcurrentFetches(t *testing.T) {
	a, err := New(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	release := make(chan struct{})
	m := NewCertManager(func(_ context.Context, csr []byte, id string) ([]byte, error) {
		calls.Add(1)
		<-release
		return a.Sign(csr, id)
	}, a.RootPEM)
	defer m.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Get(context.Background(), fooID)
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("signer called %d times for 8 concurrent Gets, want 1", n)
	}
}

// With a TTL shorter than the CA's one-minute backdating, half life must
// still be counted from issuance: otherwise a 10s certificate would be "past
// half life" at birth and renewed on every check.
func TestCertManagerShortTTL(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	a, err := New(td, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a.Now = clock.Now
	var calls atomic.Int32
	m := NewCertManager(func(_ context.Context, csr []byte, id string) ([]byte, error) {
		calls.Add(1)
		return a.Sign(csr, id)
	}, a.RootPEM)
	m.Now = clock.Now
	m.CheckInterval = 2 * time.Millisecond
	defer m.Close()
	if _, err := m.Get(context.Background(), fooID); err != nil {
		t.Fatal(err)
	}
	clock.Add(4 * time.Second)
	time.Sleep(50 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("signer called %d times before half life of a 10s certificate, want 1", n)
	}
	clock.Add(2 * time.Second)
	eventually(t, "renewal after 5s", func() bool { return calls.Load() == 2 })
}
