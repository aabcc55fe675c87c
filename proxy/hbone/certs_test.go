package hbone

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// A test CA of our own, deliberately not proxy/ca: this package must test
// the TLS rules on its own terms (and proxy/ca is written concurrently).

const (
	testTD       = "cluster.local"
	clientID     = "spiffe://cluster.local/ns/default/sa/client"
	otherClient  = "spiffe://cluster.local/ns/default/sa/other-client"
	serverID     = "spiffe://cluster.local/ns/default/sa/server"
	impostorID   = "spiffe://cluster.local/ns/default/sa/impostor"
	deniedClient = "spiffe://cluster.local/ns/evil/sa/attacker"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serial atomic.Int64

func nextSerial() *big.Int { return big.NewInt(serial.Add(1)) }

// newTestCA makes an ECDSA P-256 self-signed root.
func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{Organization: []string{testTD}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues an SVID for id, valid from notBefore to notAfter.
func (ca *testCA) leafAt(t testing.TB, id string, notBefore, notAfter time.Time) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func (ca *testCA) leaf(t testing.TB, id string) *tls.Certificate {
	return ca.leafAt(t, id, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

func TestSpiffeID(t *testing.T) {
	ca := newTestCA(t)
	c := ca.leaf(t, clientID)
	id, err := spiffeID(c.Leaf)
	if err != nil || id != clientID {
		t.Fatalf("spiffeID = %q, %v", id, err)
	}

	two := *c.Leaf
	u1, _ := url.Parse(clientID)
	u2, _ := url.Parse(serverID)
	two.URIs = []*url.URL{u1, u2}
	if _, err := spiffeID(&two); err == nil {
		t.Fatal("two spiffe SANs accepted")
	}
	none := *c.Leaf
	none.URIs = nil
	if _, err := spiffeID(&none); err == nil {
		t.Fatal("no spiffe SAN accepted")
	}
}

func TestVerifyPeerReasons(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	now := time.Now()
	cases := []struct {
		name   string
		cert   *tls.Certificate
		roots  *x509.CertPool
		reason string
	}{
		{"valid", ca.leaf(t, clientID), ca.pool, ""},
		{"other CA", other.leaf(t, clientID), ca.pool, FailUntrusted},
		{"expired", ca.leafAt(t, clientID, now.Add(-2*time.Hour), now.Add(-time.Hour)), ca.pool, FailExpired},
		{"not yet valid", ca.leafAt(t, clientID, now.Add(time.Hour), now.Add(2*time.Hour)), ca.pool, FailExpired},
		{"no roots", ca.leaf(t, clientID), nil, FailUntrusted},
	}
	for _, tc := range cases {
		id, err := verifyPeer(tc.cert.Certificate, tc.roots, now)
		if tc.reason == "" {
			if err != nil || id != clientID {
				t.Errorf("%s: got %q, %v", tc.name, id, err)
			}
			continue
		}
		if got := handshakeReason(err); got != tc.reason {
			t.Errorf("%s: reason %q (%v), want %q", tc.name, got, err, tc.reason)
		}
	}
}
