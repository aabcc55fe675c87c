package ca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	securityv1alpha1 "istio.io/api/security/v1alpha1"
)

var barID = "spiffe://cluster.local/ns/default/sa/bar"

// testIssuer is a CA certificate and its key, for the fake istiod's
// workload roots and intermediates and for its TLS serving certificate.
type testIssuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestIssuer(t *testing.T, name string, parent *testIssuer) *testIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testIssuer{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// leaf issues a workload certificate for id over pub, valid for validity
// from now and backdated by a minute as istiod does.
func (a *testIssuer) leaf(t *testing.T, pub any, id string, validity time.Duration) string {
	t.Helper()
	serial, _ := randomSerial()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// servingTLS is a TLS config for a server at 127.0.0.1 whose certificate
// chains to root.
func servingTLS(t *testing.T, root *testIssuer) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "istiod"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"istiod.istio-system.svc"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.cert, key.Public(), root.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

type fakeCARequest struct {
	auth, clusterID, impersonated string
	validity                      int64
	hasMetadata                   bool
	csr                           *x509.CertificateRequest
}

// fakeIstioCA behaves like istiod's CA for a node proxy: it authenticates the
// bearer token and ClusterID, issues the impersonated identity (or, without
// impersonation, the caller's own) whatever the CSR's SANs say, and answers
// leaf first, root last.
type fakeIstioCA struct {
	securityv1alpha1.UnimplementedIstioCertificateServiceServer
	t *testing.T

	mu        sync.Mutex
	token     string
	clusterID string
	callerID  string // issued when no identity is impersonated
	root      *testIssuer
	inter     *testIssuer // signs leaves when set
	refuse    map[string]bool
	block     bool
	// mutate, when set, replaces the chain that would be sent.
	mutate   func(chain []string, pub any) []string
	requests []fakeCARequest
}

func (f *fakeIstioCA) CreateCertificate(ctx context.Context, req *securityv1alpha1.IstioCertificateRequest) (*securityv1alpha1.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	rec := fakeCARequest{
		auth: first("authorization"), clusterID: first("ClusterID"),
		validity: req.GetValidityDuration(), hasMetadata: req.GetMetadata() != nil,
		impersonated: req.GetMetadata().GetFields()["ImpersonatedIdentity"].GetStringValue(),
	}
	if b, _ := pem.Decode([]byte(req.GetCsr())); b != nil && b.Type == "CERTIFICATE REQUEST" {
		rec.csr, _ = x509.ParseCertificateRequest(b.Bytes)
	}
	f.mu.Lock()
	f.requests = append(f.requests, rec)
	token, clusterID, callerID, block := f.token, f.clusterID, f.callerID, f.block
	issuer, root, refuse, mutate := f.inter, f.root, f.refuse[rec.impersonated], f.mutate
	f.mu.Unlock()
	if issuer == nil {
		issuer = root
	}

	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if rec.auth != "Bearer "+token {
		return nil, status.Error(codes.Unauthenticated, "authenticate: bad token")
	}
	if rec.clusterID != clusterID {
		return nil, status.Errorf(codes.Unauthenticated, "authenticate: unknown cluster %q", rec.clusterID)
	}
	if rec.csr == nil || rec.csr.CheckSignature() != nil {
		return nil, status.Error(codes.InvalidArgument, "bad CSR")
	}
	id := callerID
	if rec.hasMetadata {
		if rec.impersonated == "" {
			return nil, status.Error(codes.InvalidArgument, "metadata without ImpersonatedIdentity")
		}
		id = rec.impersonated
	}
	if refuse {
		return nil, status.Errorf(codes.PermissionDenied, "node authorization failed:\nno pod with identity %s on the caller's node", id)
	}
	validity := time.Hour
	if rec.validity > 0 {
		validity = time.Duration(rec.validity) * time.Second
	}
	chain := []string{issuer.leaf(f.t, rec.csr.PublicKey, id, validity)}
	if f.inter != nil {
		chain = append(chain, f.inter.pem)
	}
	chain = append(chain, root.pem)
	if mutate != nil {
		chain = mutate(chain, rec.csr.PublicKey)
	}
	return &securityv1alpha1.IstioCertificateResponse{CertChain: chain}, nil
}

func (f *fakeIstioCA) reqs() []fakeCARequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeCARequest(nil), f.requests...)
}

// serve starts f on 127.0.0.1 over TLS (nil for plaintext) and returns its
// address and server.
func (f *fakeIstioCA) serve(t *testing.T, tc *tls.Config) (string, *grpc.Server) {
	t.Helper()
	var opts []grpc.ServerOption
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	srv := grpc.NewServer(opts...)
	securityv1alpha1.RegisterIstioCertificateServiceServer(srv, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis) //nolint:errcheck // ends with Stop
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv
}

func newFakeIstioCA(t *testing.T) *fakeIstioCA {
	return &fakeIstioCA{t: t, token: "token-1", clusterID: DefaultIstioClusterID, root: newTestIssuer(t, "mesh root", nil)}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tokenFile(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "istio-token")
	writeFile(t, p, token+"\n")
	return p
}

func newIstioClient(t *testing.T, cfg IstioCAConfig) *IstioCAClient {
	t.Helper()
	c, err := NewIstioCAClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func checkOneLine(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("error spans several lines: %q", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

func TestIstioCACertificate(t *testing.T) {
	tlsRoot := newTestIssuer(t, "istiod serving root", nil)
	f := newFakeIstioCA(t)
	f.inter = newTestIssuer(t, "intermediate", f.root)
	addr, _ := f.serve(t, servingTLS(t, tlsRoot))
	c := newIstioClient(t, IstioCAConfig{
		Address: addr, RootPEM: []byte(tlsRoot.pem),
		TokenFile: tokenFile(t, "token-1"), Validity: 2 * time.Hour,
	})

	cert, rootPEM, err := c.Certificate(testCtx(t), fooID)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := IdentityOf(cert.Leaf); err != nil || id != fooID {
		t.Errorf("leaf identity %q, %v", id, err)
	}
	if !cert.PrivateKey.(*ecdsa.PrivateKey).PublicKey.Equal(cert.Leaf.PublicKey) {
		t.Error("leaf is not for the returned key")
	}
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], f.inter.cert.Raw) {
		t.Errorf("served chain has %d certificates, want leaf and intermediate (root left out)", len(cert.Certificate))
	}
	if string(rootPEM) != f.root.pem || string(c.RootPEM()) != f.root.pem {
		t.Error("root returned or remembered is not the CA's root")
	}

	reqs := f.reqs()
	if len(reqs) != 1 {
		t.Fatalf("CA saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.auth != "Bearer token-1" || r.clusterID != "Kubernetes" || r.impersonated != fooID || r.validity != 7200 {
		t.Errorf("request auth=%q ClusterID=%q ImpersonatedIdentity=%q validity=%d", r.auth, r.clusterID, r.impersonated, r.validity)
	}
	if r.csr == nil {
		t.Fatal("CA got no parsable PEM CSR")
	}
	if len(r.csr.URIs) != 1 || r.csr.URIs[0].String() != fooID {
		t.Errorf("CSR URIs %v, want [%s]", r.csr.URIs, fooID)
	}
	if k, ok := r.csr.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("CSR key %T, want ECDSA P-256", r.csr.PublicKey)
	}
}

// TestIstioCASignRootFile covers the Signer adapter, a root read from a file
// (the mounted istio-ca-root-cert) and a ClusterID other than the default.
func TestIstioCASignRootFile(t *testing.T) {
	tlsRoot := newTestIssuer(t, "istiod serving root", nil)
	f := newFakeIstioCA(t)
	f.clusterID = "east"
	addr, _ := f.serve(t, servingTLS(t, tlsRoot))
	rootFile := filepath.Join(t.TempDir(), "root-cert.pem")
	writeFile(t, rootFile, tlsRoot.pem)
	c := newIstioClient(t, IstioCAConfig{
		Address: addr, RootFile: rootFile, ClusterID: "east",
		TokenFile: tokenFile(t, "token-1"),
	})
	csr, key, err := NewCSR(barID)
	if err != nil {
		t.Fatal(err)
	}
	var sign Signer = c.Sign
	chainPEM, err := sign(testCtx(t), csr, barID)
	if err != nil {
		t.Fatal(err)
	}
	certs := parsePEM(t, chainPEM)
	if len(certs) != 1 || !key.Public().(*ecdsa.PublicKey).Equal(certs[0].PublicKey) {
		t.Fatalf("Sign returned %d certificates, want the leaf for the CSR's key only", len(certs))
	}
	if id, _ := IdentityOf(certs[0]); id != barID {
		t.Errorf("leaf for %q", id)
	}
	if r := f.reqs(); len(r) != 1 || r[0].validity != 0 {
		t.Errorf("requests %+v: want one, with no validity (CA default)", r)
	}
}

func TestIstioCATokenRereadEachCall(t *testing.T) {
	f := newFakeIstioCA(t)
	addr, _ := f.serve(t, nil)
	tf := tokenFile(t, "token-1")
	c := newIstioClient(t, IstioCAConfig{Address: addr, Plaintext: true, TokenFile: tf})
	ctx := testCtx(t)
	if _, _, err := c.Certificate(ctx, fooID); err != nil {
		t.Fatal(err)
	}
	// The kubelet replaces the projected token; the old one is no longer
	// accepted.
	writeFile(t, tf, "token-2")
	f.mu.Lock()
	f.token = "token-2"
	f.mu.Unlock()
	if _, _, err := c.Certificate(ctx, fooID); err != nil {
		t.Fatalf("after token rotation: %v", err)
	}
	reqs := f.reqs()
	if len(reqs) != 2 || reqs[0].auth != "Bearer token-1" || reqs[1].auth != "Bearer token-2" {
		t.Fatalf("requests %+v, want token-1 then token-2", reqs)
	}
	// No token, no call.
	if err := os.Remove(tf); err != nil {
		t.Fatal(err)
	}
	_, _, err := c.Certificate(ctx, fooID)
	checkOneLine(t, err, tf)
	if n := len(f.reqs()); n != 2 {
		t.Errorf("CA saw %d requests after the token file went away, want 2", n)
	}
}

func TestIstioCARefusedIdentity(t *testing.T) {
	f := newFakeIstioCA(t)
	f.refuse = map[string]bool{barID: true}
	addr, _ := f.serve(t, nil)
	c := newIstioClient(t, IstioCAConfig{Address: addr, Plaintext: true, TokenFile: tokenFile(t, "token-1")})
	_, _, err := c.Certificate(testCtx(t), barID)
	checkOneLine(t, err, barID, "PermissionDenied", "refused")
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("status code %s, want PermissionDenied", status.Code(err))
	}
	if c.RootPEM() != nil {
		t.Error("a refusal installed a root")
	}
	if _, _, err := c.Certificate(testCtx(t), fooID); err != nil {
		t.Errorf("another identity is still signed: %v", err)
	}
}

func TestIstioCAWrongRoot(t *testing.T) {
	tlsRoot := newTestIssuer(t, "istiod serving root", nil)
	other := newTestIssuer(t, "some other root", nil)
	f := newFakeIstioCA(t)
	addr, _ := f.serve(t, servingTLS(t, tlsRoot))
	c := newIstioClient(t, IstioCAConfig{
		Address: addr, RootPEM: []byte(other.pem), TokenFile: tokenFile(t, "token-1"),
		Timeout: 3 * time.Second,
	})
	_, _, err := c.Certificate(testCtx(t), fooID)
	checkOneLine(t, err, fooID)
	if n := len(f.reqs()); n != 0 {
		t.Errorf("CA saw %d requests over an untrusted connection", n)
	}
	// The same CA behind the right root works, so the failure above is the
	// root's.
	good := newIstioClient(t, IstioCAConfig{Address: addr, RootPEM: []byte(tlsRoot.pem), TokenFile: tokenFile(t, "token-1")})
	if _, _, err := good.Certificate(testCtx(t), fooID); err != nil {
		t.Fatal(err)
	}
}

func TestIstioCARefusesBadResponses(t *testing.T) {
	f := newFakeIstioCA(t)
	f.inter = newTestIssuer(t, "intermediate", f.root)
	otherRoot := newTestIssuer(t, "another root", nil)
	addr, _ := f.serve(t, nil)

	for _, tc := range []struct {
		name   string
		mutate func(chain []string, pub any) []string
		want   string
	}{
		{"leaf for another identity", func(c []string, pub any) []string {
			return append([]string{f.inter.leaf(t, pub, barID, time.Hour)}, c[1:]...)
		}, "leaf is for " + barID},
		{"leaf for another key", func(c []string, _ any) []string {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			return append([]string{f.inter.leaf(t, k.Public(), fooID, time.Hour)}, c[1:]...)
		}, "different key"},
		{"root is not the chain's", func(c []string, _ any) []string {
			return append(c[:len(c)-1:len(c)-1], otherRoot.pem)
		}, "does not verify"},
		{"intermediate missing", func(c []string, _ any) []string {
			return []string{c[0], c[2]}
		}, "does not verify"},
		{"expired leaf", func(c []string, pub any) []string {
			return append([]string{f.inter.leaf(t, pub, fooID, -time.Second)}, c[1:]...)
		}, "does not verify"},
		{"only the leaf", func(c []string, _ any) []string { return c[:1] }, "one certificate"},
		{"empty", func([]string, any) []string { return nil }, "empty cert_chain"},
		{"not PEM", func(c []string, _ any) []string { return []string{"not a certificate", "nor this"} }, "not a PEM certificate"},
		{"garbage after PEM", func(c []string, _ any) []string {
			return append([]string{c[0] + "trailing\ngarbage"}, c[1:]...)
		}, "data after"},
		{"not a certificate block", func(c []string, _ any) []string {
			return append([]string{"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, c[1:]...)
		}, "PRIVATE KEY"},
		{"bad DER", func(c []string, _ any) []string {
			return append([]string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}))}, c[1:]...)
		}, "cert_chain[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.mu.Lock()
			f.mutate = tc.mutate
			f.mu.Unlock()
			c := newIstioClient(t, IstioCAConfig{Address: addr, Plaintext: true, TokenFile: tokenFile(t, "token-1")})
			cert, _, err := c.Certificate(testCtx(t), fooID)
			if cert != nil {
				t.Error("a certificate was returned")
			}
			checkOneLine(t, err, fooID, tc.want)
			csr, _, _ := NewCSR(fooID)
			_, err = c.Sign(testCtx(t), csr, fooID)
			checkOneLine(t, err, fooID, tc.want)
			if c.RootPEM() != nil {
				t.Error("a refused response installed its root")
			}
		})
	}
}

func TestIstioCADeadline(t *testing.T) {
	f := newFakeIstioCA(t)
	f.block = true
	addr, _ := f.serve(t, nil)
	c := newIstioClient(t, IstioCAConfig{Address: addr, Plaintext: true, TokenFile: tokenFile(t, "token-1"), Timeout: 300 * time.Millisecond})
	// The caller's context is generous: only the client's own timeout can
	// end the call quickly.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, _, err := c.Certificate(ctx, fooID)
	checkOneLine(t, err, fooID, "unreachable")
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("status code %s, want DeadlineExceeded", status.Code(err))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("call took %s with a 300ms timeout", d)
	}
}

// TestIstioCAOwnIdentity: without impersonation istiod issues the caller's
// own identity whatever was asked, and the client must notice when that is
// not what it wanted.
func TestIstioCAOwnIdentity(t *testing.T) {
	f := newFakeIstioCA(t)
	f.callerID = barID
	addr, _ := f.serve(t, nil)
	c := newIstioClient(t, IstioCAConfig{Address: addr, Plaintext: true, TokenFile: tokenFile(t, "token-1"), OwnIdentity: true})
	if _, _, err := c.Certificate(testCtx(t), barID); err != nil {
		t.Fatal(err)
	}
	if r := f.reqs(); r[0].hasMetadata {
		t.Error("ImpersonatedIdentity sent for the caller's own identity")
	}
	_, _, err := c.Certificate(testCtx(t), fooID)
	checkOneLine(t, err, fooID, "leaf is for "+barID)
}

func TestIstioCAConfigErrors(t *testing.T) {
	tf := tokenFile(t, "token-1")
	root := newTestIssuer(t, "root", nil)
	missing := filepath.Join(t.TempDir(), "absent.pem")
	for name, cfg := range map[string]IstioCAConfig{
		"no address":           {TokenFile: tf, Plaintext: true},
		"no port":              {Address: "istiod", TokenFile: tf, Plaintext: true},
		"no token file":        {Address: "istiod:15012", Plaintext: true},
		"no root":              {Address: "istiod:15012", TokenFile: tf},
		"two roots":            {Address: "istiod:15012", TokenFile: tf, RootPEM: []byte(root.pem), RootFile: missing},
		"root file missing":    {Address: "istiod:15012", TokenFile: tf, RootFile: missing},
		"root not PEM":         {Address: "istiod:15012", TokenFile: tf, RootPEM: []byte("nope")},
		"plaintext and a root": {Address: "istiod:15012", TokenFile: tf, Plaintext: true, RootPEM: []byte(root.pem)},
		"sub-second validity":  {Address: "istiod:15012", TokenFile: tf, Plaintext: true, Validity: time.Millisecond},
	} {
		if c, err := NewIstioCAClient(cfg); err == nil {
			c.Close()
			t.Errorf("%s: accepted", name)
		} else {
			checkOneLine(t, err)
		}
	}
}

// TestIstioCARotationThroughCertManager runs the certificate manager on the
// istiod client with short certificates: it renews through the client before
// expiry, follows a root rotation, keeps serving while the CA is down and
// fails once the certificate expires.
func TestIstioCARotationThroughCertManager(t *testing.T) {
	const validity = 3 * time.Second
	tlsRoot := newTestIssuer(t, "istiod serving root", nil)
	f := newFakeIstioCA(t)
	addr, srv := f.serve(t, servingTLS(t, tlsRoot))
	c := newIstioClient(t, IstioCAConfig{
		Address: addr, RootPEM: []byte(tlsRoot.pem), TokenFile: tokenFile(t, "token-1"),
		Validity: validity, Timeout: time.Second,
	})
	cm := NewCertManager(c.Sign, c.RootPEM)
	cm.CheckInterval = 20 * time.Millisecond
	cm.RetryInterval = 100 * time.Millisecond
	defer cm.Close()
	ctx := testCtx(t)

	first, err := cm.Get(ctx, fooID)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Leaf.CheckSignatureFrom(f.root.cert); err != nil {
		t.Fatalf("first leaf not from the CA's root: %v", err)
	}
	// istiod's root rotates; the next renewal must bring the new one.
	newRoot := newTestIssuer(t, "rotated mesh root", nil)
	f.mu.Lock()
	f.root = newRoot
	f.mu.Unlock()

	var second *tls.Certificate
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got, err := cm.Get(ctx, fooID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) != 0 {
			second = got
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal within 10s of a %s certificate (CA saw %d requests)", validity, len(f.reqs()))
		}
	}
	// The fake backdates NotBefore by a minute: this is when it issued.
	if issued := second.Leaf.NotBefore.Add(time.Minute); !issued.Before(first.Leaf.NotAfter) {
		t.Errorf("renewed at %s, only after the old certificate expired at %s", issued, first.Leaf.NotAfter)
	}
	if err := second.Leaf.CheckSignatureFrom(newRoot.cert); err != nil {
		t.Errorf("renewed leaf not from the rotated root: %v", err)
	}
	if string(c.RootPEM()) != newRoot.pem {
		t.Error("client did not learn the rotated root")
	}
	pool, err := cm.Roots()
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyPeer(pool)(second.Certificate, nil); err != nil {
		t.Errorf("renewed certificate does not verify against the manager's roots: %v", err)
	}
	for _, r := range f.reqs() {
		if r.validity != int64(validity/time.Second) || r.impersonated != fooID {
			t.Errorf("request validity=%d ImpersonatedIdentity=%q", r.validity, r.impersonated)
		}
	}

	// istiod goes away: the renewed certificate is served until it
	// expires, then Get fails.
	srv.Stop()
	for time.Now().Before(second.Leaf.NotAfter.Add(-200 * time.Millisecond)) {
		got, err := cm.Get(ctx, fooID)
		if err != nil {
			t.Fatalf("certificate not served while still valid and istiod down: %v", err)
		}
		if got.Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
			t.Fatal("a new certificate appeared with istiod down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Until(second.Leaf.NotAfter) + 100*time.Millisecond)
	_, err = cm.Get(ctx, fooID)
	checkOneLine(t, err, "expired", "unreachable", fooID)
}
