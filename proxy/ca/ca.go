// Package ca is the mesh certificate authority and the helpers proxies use to
// obtain, cache and verify SPIFFE workload certificates.
//
// The CA is deliberately tiny: one in-memory ECDSA P-256 root, no
// intermediates, and this package writes no file. A root made by New lives as
// long as the process; RootKeyPEM and Load let a caller hand it to the next
// process (the embedded cluster's runner passes it to every control plane
// start in the environment, so no private key is ever on disk).
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// rootTTL is long because the root lives only as long as the process anyway;
// an expiring root in the middle of a chaos run would be a false failure.
const rootTTL = 10 * 365 * 24 * time.Hour

// backdate absorbs clock skew between the control plane and the proxies:
// without it a proxy whose clock is a few seconds behind rejects a
// certificate that was just issued.
const backdate = time.Minute

// CA issues short-lived SPIFFE leaf certificates signed by an in-memory root.
type CA struct {
	// Now is the CA's clock. It exists so tests can mint certificates that
	// are already expired or not yet valid; nil means time.Now. Set it
	// before the first Sign.
	Now func() time.Time

	trustDomain string
	ttl         time.Duration

	key     *ecdsa.PrivateKey
	root    *x509.Certificate
	rootPEM []byte
}

// New generates a self-signed ECDSA P-256 root for trustDomain. Leaves it
// signs are valid for ttl.
func New(trustDomain string, ttl time.Duration) (*CA, error) {
	if err := ValidTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("ca: certificate TTL must be positive, got %s", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	td := &url.URL{Scheme: "spiffe", Host: trustDomain}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{trustDomain}, CommonName: "blastradius root CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(rootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// No intermediates exist, so forbid them: a leaf key can never be
		// used to mint further certificates that would chain to this root.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		URIs:           []*url.URL{td},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ca: self-sign root: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse root: %w", err)
	}
	return &CA{
		trustDomain: trustDomain,
		ttl:         ttl,
		key:         key,
		root:        root,
		rootPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// Load rebuilds a CA from a root certificate and its private key (PEM, as
// written by RootPEM and RootKeyPEM). It exists so a restarted control plane
// can keep its root, like istiod keeps its self-signed root in the
// istio-ca-secret: with a fresh root every restart, certificates already
// held by proxies stop verifying at their peers until each one is renewed.
func Load(trustDomain string, ttl time.Duration, rootCertPEM, rootKeyPEM []byte) (*CA, error) {
	if err := ValidTrustDomain(trustDomain); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("ca: certificate TTL must be positive, got %s", ttl)
	}
	cb, _ := pem.Decode(rootCertPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("ca: root certificate: no CERTIFICATE PEM block")
	}
	root, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: root certificate: %w", err)
	}
	if !root.IsCA {
		return nil, errors.New("ca: root certificate is not a CA")
	}
	for _, u := range root.URIs {
		if u.Scheme == "spiffe" && u.Host != trustDomain {
			return nil, fmt.Errorf("ca: root is for trust domain %q, not %q", u.Host, trustDomain)
		}
	}
	kb, _ := pem.Decode(rootKeyPEM)
	if kb == nil {
		return nil, errors.New("ca: root key: no PEM block")
	}
	var key *ecdsa.PrivateKey
	switch kb.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: root key: %w", err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("ca: root key is %T, want ECDSA", k)
		}
		key = ek
	case "EC PRIVATE KEY":
		if key, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
			return nil, fmt.Errorf("ca: root key: %w", err)
		}
	default:
		return nil, fmt.Errorf("ca: root key: unexpected PEM block %q", kb.Type)
	}
	if !key.PublicKey.Equal(root.PublicKey) {
		return nil, errors.New("ca: root key does not match the root certificate")
	}
	if time.Now().After(root.NotAfter) {
		return nil, fmt.Errorf("ca: root certificate expired at %s", root.NotAfter.Format(time.RFC3339))
	}
	return &CA{
		trustDomain: trustDomain,
		ttl:         ttl,
		key:         key,
		root:        root,
		rootPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}),
	}, nil
}

// RootKeyPEM returns the root's private key as PKCS#8 PEM, for Load.
func (c *CA) RootKeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		return nil, fmt.Errorf("ca: marshal root key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// TrustDomain returns the trust domain the CA issues identities for.
func (c *CA) TrustDomain() string { return c.trustDomain }

// TTL returns the validity of issued leaves.
func (c *CA) TTL() time.Duration { return c.ttl }

// RootPEM returns the PEM-encoded root certificate. The slice is a copy.
func (c *CA) RootPEM() []byte { return append([]byte(nil), c.rootPEM...) }

// Root returns the parsed root certificate.
func (c *CA) Root() *x509.Certificate { return c.root }

func (c *CA) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Sign issues a leaf for spiffeID over the public key of the PKCS#10 CSR
// csrDER and returns it PEM-encoded. The chain holds only the leaf because
// the root signs directly; peers get the root out of band (RootPEM).
//
// The identity comes from the spiffeID argument, never from the CSR's SANs:
// the caller (the control plane) decides who the requester is, the CSR only
// proves possession of the key.
func (c *CA) Sign(csrDER []byte, spiffeID string) ([]byte, error) {
	td, _, _, err := ParseSpiffeID(spiffeID)
	if err != nil {
		return nil, err
	}
	if td != c.trustDomain {
		return nil, fmt.Errorf("ca: identity %q is in trust domain %q, this CA signs only for %q", spiffeID, td, c.trustDomain)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ca: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("ca: CSR signature invalid: %w", err)
	}
	uri, err := url.Parse(spiffeID)
	if err != nil { // cannot happen after ParseSpiffeID, keep the error anyway
		return nil, fmt.Errorf("ca: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}

	usage := x509.KeyUsageDigitalSignature
	if csr.PublicKeyAlgorithm == x509.RSA {
		usage |= x509.KeyUsageKeyEncipherment // RSA key exchange in TLS <= 1.2
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// Empty subject like istiod: the identity lives only in the URI SAN,
		// which x509 then marks critical as RFC 5280 requires.
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(c.ttl),
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, csr.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign leaf for %s: %w", spiffeID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("ca: serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil // never zero
}

// ValidTrustDomain checks that td can be the host part of a SPIFFE ID.
func ValidTrustDomain(td string) error {
	if td == "" {
		return errors.New("ca: empty trust domain")
	}
	for _, r := range td {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
		if !ok {
			return fmt.Errorf("ca: trust domain %q: only lowercase letters, digits, '.', '-' and '_' are allowed", td)
		}
	}
	return nil
}

// ParseSpiffeID splits spiffe://<td>/ns/<ns>/sa/<sa> into its parts and
// refuses anything else (other paths, ports, user info, query, fragment).
func ParseSpiffeID(id string) (trustDomain, namespace, serviceAccount string, err error) {
	bad := func(why string) (string, string, string, error) {
		return "", "", "", fmt.Errorf("ca: %q is not spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>: %s", id, why)
	}
	u, perr := url.Parse(id)
	if perr != nil {
		return bad(perr.Error())
	}
	if u.Scheme != "spiffe" {
		return bad("scheme is not spiffe")
	}
	if u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.RawPath != "" {
		return bad("user info, port, query, fragment or escaped path present")
	}
	if err := ValidTrustDomain(u.Host); err != nil {
		return bad(err.Error())
	}
	parts := strings.Split(u.Path, "/")
	if len(parts) != 5 || parts[0] != "" || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" || parts[4] == "" {
		return bad("path must be /ns/<namespace>/sa/<service-account>")
	}
	// Percent-escapes that url.Parse keeps out of RawPath ("%0A") would
	// otherwise smuggle control characters into the parts; Kubernetes
	// names are letters, digits, '.', '-' (and '_' is harmless).
	for _, p := range []string{parts[2], parts[4]} {
		if i := strings.IndexFunc(p, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_')
		}); i >= 0 {
			r, _ := utf8.DecodeRuneInString(p[i:])
			return bad(fmt.Sprintf("namespace and service account allow only letters, digits, '.', '-' and '_', not %q", r))
		}
	}
	return u.Host, parts[2], parts[4], nil
}

// NewCSR generates a fresh ECDSA P-256 key and a CSR for spiffeID. A new key
// per certificate means rotation also rotates keys, so a leaked key dies with
// its certificate.
func NewCSR(spiffeID string) (csrDER []byte, key crypto.Signer, err error) {
	if _, _, _, err := ParseSpiffeID(spiffeID); err != nil {
		return nil, nil, err
	}
	uri, _ := url.Parse(spiffeID)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{uri}}, k)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create CSR: %w", err)
	}
	return der, k, nil
}

// IdentityOf returns the SPIFFE ID of cert, which must carry exactly one
// spiffe:// URI SAN of the ns/sa form. More than one is refused because an
// authorization decision must not depend on which SAN a proxy happens to
// look at.
func IdentityOf(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("ca: no certificate")
	}
	var ids []string
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			ids = append(ids, u.String())
		}
	}
	switch len(ids) {
	case 0:
		return "", errors.New("ca: certificate has no spiffe URI SAN")
	case 1:
	default:
		return "", fmt.Errorf("ca: certificate has %d spiffe URI SANs, want exactly one", len(ids))
	}
	if _, _, _, err := ParseSpiffeID(ids[0]); err != nil {
		return "", err
	}
	return ids[0], nil
}

// VerifyPeer returns a tls.Config.VerifyPeerCertificate callback that
// verifies the peer's chain against roots at time.Now() (expiry included) and
// requires a SPIFFE identity. SPIFFE certificates carry no DNS names, so the
// standard hostname check cannot be used: set InsecureSkipVerify on clients
// and ClientAuth: tls.RequireAnyClientCert on servers and let this do the
// verification. It is called with roots evaluated once; pass a pool that is
// replaced (a new callback) when the root rotates.
func VerifyPeer(roots *x509.CertPool) func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		if len(rawCerts) == 0 {
			return errors.New("ca: peer presented no certificate")
		}
		if roots == nil {
			return errors.New("ca: no trust roots configured")
		}
		certs := make([]*x509.Certificate, 0, len(rawCerts))
		for i, raw := range rawCerts {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return fmt.Errorf("ca: peer certificate %d: %w", i, err)
			}
			certs = append(certs, c)
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		leaf := certs[0]
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			CurrentTime:   time.Now(),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err != nil {
			return fmt.Errorf("ca: peer certificate not trusted: %w", err)
		}
		if _, err := IdentityOf(leaf); err != nil {
			return fmt.Errorf("ca: peer certificate: %w", err)
		}
		return nil
	}
}

// PoolFromPEM parses one or more PEM certificates into a pool.
func PoolFromPEM(rootsPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootsPEM) {
		return nil, errors.New("ca: no certificates in root PEM")
	}
	return pool, nil
}
