package hbone

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ErrWrongIdentity is wrapped by the error Connect returns when the server
// proved an identity other than the one asked for.
var ErrWrongIdentity = errors.New("hbone: server presented the wrong identity")

// StatusError is a CONNECT answered with a status other than 200, so callers
// can tell a policy denial (401) from a bad authority (400) or an
// unreachable application (503).
type StatusError struct {
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("CONNECT refused: %d %s", e.Code, http.StatusText(e.Code))
}

// ConnectError is every error Connect returns: the one layer of context
// ("hbone connect to <authority> via <endpoint>: ...") plus the failure
// reason it was counted under, so a caller can classify without parsing
// text. Unwrap gives the cause (a *StatusError, ErrWrongIdentity, a dial or
// TLS error, a context error).
type ConnectError struct {
	Authority string // the final target ip:port
	Via       string // the HBONE endpoint ip:15008
	Reason    string // one of the Fail* constants
	Err       error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("hbone connect to %s via %s: %v", e.Authority, e.Via, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// certError is a peer certificate rejected by verifyPeer, with the reason it
// is counted under. The handshake hides it behind its own error, so the
// verifying side records it before failing the handshake.
type certError struct {
	reason string
	err    error
}

func (e *certError) Error() string { return e.err.Error() }
func (e *certError) Unwrap() error { return e.err }

// verifyPeer checks a peer's chain against roots at now and returns its
// SPIFFE identity. It replaces crypto/tls's own verification on both ends
// because SVIDs carry no DNS name to check, because roots are fetched per
// handshake (they rotate), and because we need to know why a chain failed
// (expired vs untrusted) to count it.
func verifyPeer(rawCerts [][]byte, roots *x509.CertPool, now time.Time) (string, error) {
	if len(rawCerts) == 0 {
		return "", &certError{FailNoIdentity, errors.New("no certificate presented")}
	}
	if roots == nil {
		// x509 would fall back to the system roots: never what a mesh wants.
		return "", &certError{FailUntrusted, errors.New("no trust roots configured")}
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return "", &certError{FailUntrusted, fmt.Errorf("parse certificate: %w", err)}
		}
		certs[i] = c
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		// SPIFFE makes the EKUs optional; SVIDs usually carry both server and
		// client auth, but one issued with neither or one must still work
		// in either direction, as it does in ztunnel.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return "", &certError{FailExpired, err}
		}
		return "", &certError{FailUntrusted, err}
	}
	id, err := spiffeID(certs[0])
	if err != nil {
		return "", &certError{FailNoIdentity, err}
	}
	return id, nil
}

// spiffeID returns the single spiffe:// URI SAN of cert. More than one is as
// bad as none: the SPIFFE spec allows exactly one, and picking one would let
// a certificate speak for two workloads.
func spiffeID(cert *x509.Certificate) (string, error) {
	var id string
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if id != "" {
			return "", errors.New("certificate has more than one spiffe URI SAN")
		}
		if u.Host == "" {
			return "", fmt.Errorf("spiffe URI SAN %q has no trust domain", u.String())
		}
		id = u.String()
	}
	if id == "" {
		return "", errors.New("certificate has no spiffe URI SAN")
	}
	return id, nil
}

// handshakeReason classifies a failed handshake for the failure counters.
func handshakeReason(err error) string {
	var ce *certError
	if errors.As(err, &ce) {
		return ce.reason
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return FailPlaintext
	}
	if isTLSAlert(err) {
		return FailTLSRejected
	}
	return FailTLSHandshake
}

// isTLSAlert reports whether err is an alert the peer sent us. crypto/tls
// keeps its alert type unexported and reports it as a net.OpError with Op
// "remote error", which is what we match.
func isTLSAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// tlsBase is the configuration both ends share: TLS 1.3 only (what ztunnel
// speaks, and it removes renegotiation and weak suites from the picture) and
// h2 as the only application protocol.
func tlsBase() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
	}
}

// checkNegotiated refuses a completed handshake that is not TLS 1.3 + h2.
// The config already insists on both, but a peer that offers no ALPN at all
// still completes a handshake with an empty protocol.
func checkNegotiated(cs tls.ConnectionState) error {
	if cs.Version != tls.VersionTLS13 {
		return fmt.Errorf("negotiated TLS version %#x, want TLS 1.3", cs.Version)
	}
	if cs.NegotiatedProtocol != "h2" {
		return fmt.Errorf("negotiated ALPN %q, want h2", cs.NegotiatedProtocol)
	}
	return nil
}
