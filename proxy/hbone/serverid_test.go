package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"
)

// The client's half of mutual authentication (the server's half is in
// hbone_test.go: TestClientCertFromAnotherCARefused, TestExpiredClientCertRefused):
// a server is accepted only with a chain to the client's roots, valid now,
// naming the identity the client expects (TestWrongServerIdentityRefused).

func withServerCert(cert *tls.Certificate) envOpt {
	return func(e *env) {
		e.srv.Cert = func(context.Context) (*tls.Certificate, error) { return cert, nil }
	}
}

// TestServerCertFromAnotherCARefused: the expected identity in a certificate
// the client's roots do not vouch for is no identity at all.
func TestServerCertFromAnotherCARefused(t *testing.T) {
	rogue := newTestCA(t)
	e := newEnv(t, withServerCert(rogue.leaf(t, serverID)))
	d, cm := e.dialer(nil)
	_, err := d.Connect(ctxT(t), clientID, e.addr, "10.0.0.1:80", serverID)
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Reason != FailUntrusted {
		t.Fatalf("Connect = %v, want a refusal counted as %s", err, FailUntrusted)
	}
	if cm.Failures(FailUntrusted) != 1 || len(e.forwardCalls()) != 0 {
		t.Errorf("client failures %v, forwards %v", cm.FailureCounts(), e.forwardCalls())
	}
}

// TestExpiredServerCertRefused: the right identity from the right CA, but
// expired.
func TestExpiredServerCertRefused(t *testing.T) {
	now := time.Now()
	// The env's own CA exists only once newEnv has made it.
	e := newEnv(t, func(en *env) {
		withServerCert(en.ca.leafAt(t, serverID, now.Add(-2*time.Hour), now.Add(-time.Minute)))(en)
	})
	d, cm := e.dialer(nil)
	_, err := d.Connect(ctxT(t), clientID, e.addr, "10.0.0.1:80", serverID)
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Reason != FailExpired {
		t.Fatalf("Connect = %v, want a refusal counted as %s", err, FailExpired)
	}
	if cm.Failures(FailExpired) != 1 || len(e.forwardCalls()) != 0 {
		t.Errorf("client failures %v, forwards %v", cm.FailureCounts(), e.forwardCalls())
	}
}
