package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	securityv1alpha1 "istio.io/api/security/v1alpha1"

	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/proxy/istiod"
)

// DefaultIstioClusterID is the ClusterID istiod assumes for its own cluster
// when the installation does not name one.
const DefaultIstioClusterID = "Kubernetes"

// IstioCAConfig configures an IstioCAClient.
type IstioCAConfig struct {
	// Address is istiod's CA endpoint, host:port
	// (istiod.istio-system.svc:15012).
	Address string

	// RootPEM or RootFile holds the roots istiod's serving certificate must
	// chain to: root-cert.pem of the istio-ca-root-cert ConfigMap. Exactly
	// one is required unless Plaintext. RootFile is read again at every TLS
	// handshake, so a rotated mount is picked up on the next reconnection
	// without restarting the proxy.
	RootPEM  []byte
	RootFile string
	// ServerName is the name istiod's serving certificate is checked
	// against; empty means the host part of Address.
	ServerName string
	// Plaintext talks to the CA without TLS. Only an in-process CA in tests
	// can be trusted that way: the bearer token would otherwise travel in
	// clear.
	Plaintext bool

	// TokenFile is the service-account token presented as
	// "authorization: Bearer", a projected token with audience istio-ca.
	// It is read at every call because the kubelet rotates it in place.
	TokenFile string
	// ClusterID is sent as the ClusterID header; istiod picks the cluster
	// whose API server reviews the token by it. Empty means
	// DefaultIstioClusterID.
	ClusterID string

	// Validity is the lifetime asked for, in whole seconds; zero leaves it
	// to the CA (24 h for istiod). istiod may cap it.
	Validity time.Duration
	// Timeout bounds every call, so a dead CA costs seconds rather than a
	// stuck refresh; zero means DefaultSignTimeout.
	Timeout time.Duration

	// OwnIdentity makes the client ask for the identity its token proves
	// (a waypoint) instead of impersonating the requested one. A node proxy
	// leaves it false: it always asks on behalf of a pod, and istiod only
	// lets it do so for pods running on its node.
	OwnIdentity bool
}

// IstioCAClient obtains workload certificates from istiod's CA
// (istio.v1.auth.IstioCertificateService/CreateCertificate) as ztunnel does.
// Its Sign method is a Signer and RootPEM a roots source, so
// NewCertManager(client.Sign, client.RootPEM) gets rotation at half life,
// serving the old certificate while istiod is unreachable and failing at
// expiry exactly as with the reference control plane.
type IstioCAClient struct {
	addr        string
	serverName  string
	tokenFile   string
	clusterID   string
	validity    int64
	timeout     time.Duration
	ownIdentity bool

	conn   *grpc.ClientConn
	client securityv1alpha1.IstioCertificateServiceClient

	mu        sync.Mutex
	learnedCA []byte // root of the last accepted response
}

// NewIstioCAClient checks cfg and prepares a connection; it does not dial,
// the first call does.
func NewIstioCAClient(cfg IstioCAConfig) (*IstioCAClient, error) {
	host, _, err := net.SplitHostPort(cfg.Address)
	if err != nil || host == "" {
		return nil, fmt.Errorf("ca: istiod CA address %q is not host:port", cfg.Address)
	}
	if cfg.TokenFile == "" {
		// istiod refuses every unauthenticated CreateCertificate; failing
		// here names the missing setting instead of a remote refusal.
		return nil, errors.New("ca: istiod CA client needs a service-account token file")
	}
	if cfg.Validity < 0 || cfg.Validity > 0 && cfg.Validity < time.Second {
		return nil, fmt.Errorf("ca: certificate validity %s: want zero (CA default) or at least 1s", cfg.Validity)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("ca: negative istiod CA call timeout %s", cfg.Timeout)
	}
	c := &IstioCAClient{
		addr:        cfg.Address,
		serverName:  cfg.ServerName,
		tokenFile:   cfg.TokenFile,
		clusterID:   cfg.ClusterID,
		validity:    int64(cfg.Validity / time.Second),
		timeout:     orDefault(cfg.Timeout, DefaultSignTimeout),
		ownIdentity: cfg.OwnIdentity,
	}
	if c.serverName == "" {
		c.serverName = host
	}
	if c.clusterID == "" {
		c.clusterID = DefaultIstioClusterID
	}
	creds, err := istiod.Link{ServerName: c.serverName, RootPEM: cfg.RootPEM, RootFile: cfg.RootFile,
		Plaintext: cfg.Plaintext, Prefix: "ca"}.Credentials()
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(cfg.Address, append(istiod.DialOptions(),
		grpc.WithTransportCredentials(creds),
		// gRPC's own reconnect back-off grows to 120 s, during which every
		// call fails at once: after an istiod restart certificates would
		// stay unrenewable for minutes.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 2,
				Jitter:     0.2,
				MaxDelay:   5 * time.Second,
			},
			MinConnectTimeout: c.timeout,
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("ca: istiod CA client for %s: %w", cfg.Address, err)
	}
	c.conn = conn
	c.client = securityv1alpha1.NewIstioCertificateServiceClient(conn)
	return c, nil
}

// Close releases the connection.
func (c *IstioCAClient) Close() error { return c.conn.Close() }

// RootPEM returns the root istiod sent with the last accepted certificate,
// nil before the first one. istiod puts its current root last in every
// response, so this follows a root rotation with the next renewal.
func (c *IstioCAClient) RootPEM() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.learnedCA
}

// Sign is a Signer: it sends csrDER for spiffeID to istiod and returns the
// leaf and any intermediates as PEM, leaf first. The root is left out of the
// returned chain (peers have it already, sending it is wasted bytes on every
// handshake) and published through RootPEM before Sign returns, so a
// CertManager checking the chain against RootPEM sees the matching root.
func (c *IstioCAClient) Sign(ctx context.Context, csrDER []byte, spiffeID string) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("ca: CSR for %s: %w", spiffeID, err)
	}
	chain, _, err := c.create(ctx, csrDER, csr.PublicKey, spiffeID)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, cert := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return out, nil
}

// Certificate generates a fresh key and CSR for spiffeID, has istiod sign
// it and returns the certificate (leaf and intermediates) with the root
// istiod sent.
func (c *IstioCAClient) Certificate(ctx context.Context, spiffeID string) (*tls.Certificate, []byte, error) {
	csrDER, key, err := NewCSR(spiffeID)
	if err != nil {
		return nil, nil, err
	}
	chain, rootPEM, err := c.create(ctx, csrDER, key.Public(), spiffeID)
	if err != nil {
		return nil, nil, err
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		cert.Certificate = append(cert.Certificate, x.Raw)
	}
	return cert, rootPEM, nil
}

// create runs one CreateCertificate and returns the checked chain without
// its root, and the root as PEM.
func (c *IstioCAClient) create(ctx context.Context, csrDER []byte, pub crypto.PublicKey, id string) ([]*x509.Certificate, []byte, error) {
	if _, _, _, err := ParseSpiffeID(id); err != nil {
		return nil, nil, err
	}
	token, err := istiod.Token("ca", c.tokenFile)
	if err != nil {
		return nil, nil, err
	}
	req := &securityv1alpha1.IstioCertificateRequest{
		Csr:              string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		ValidityDuration: c.validity,
	}
	if !c.ownIdentity {
		req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			"ImpersonatedIdentity": structpb.NewStringValue(id),
		}}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token, "ClusterID", c.clusterID)
	resp, err := c.client.CreateCertificate(ctx, req)
	if err != nil {
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			return nil, nil, &istioCAError{fmt.Sprintf("ca: istiod CA %s unreachable, cannot sign %s: %s: %s", c.addr, id, st.Code(), oneline.Fold(st.Message(), 300)), err}
		default:
			return nil, nil, &istioCAError{fmt.Sprintf("ca: istiod CA %s refused to sign %s: %s: %s", c.addr, id, st.Code(), oneline.Fold(st.Message(), 300)), err}
		}
	}
	chain, root, err := checkIstioChain(resp.GetCertChain(), pub, id)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: istiod CA %s sent an unusable certificate for %s: %s", c.addr, id, oneline.Fold(err.Error(), 300))
	}
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	c.mu.Lock()
	c.learnedCA = rootPEM
	c.mu.Unlock()
	return chain, rootPEM, nil
}

// checkIstioChain parses cert_chain (PEM strings, leaf first, root last; an
// element may hold several certificates) and checks that it is a chain for
// pub and id ending at its root. istiod ignores the CSR's SANs and issues
// whatever identity it authorizes, so the identity is checked here, on what
// came back.
func checkIstioChain(chain []string, pub crypto.PublicKey, id string) ([]*x509.Certificate, *x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, nil, errors.New("empty cert_chain")
	}
	var certs []*x509.Certificate
	for i, s := range chain {
		rest := []byte(s)
		n := 0
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				return nil, nil, fmt.Errorf("cert_chain[%d] holds a %q PEM block, want CERTIFICATE", i, b.Type)
			}
			cert, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, fmt.Errorf("cert_chain[%d]: %w", i, err)
			}
			certs = append(certs, cert)
			n++
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("cert_chain[%d] is not a PEM certificate", i)
		}
		if len(bytes.TrimSpace(rest)) > 0 {
			return nil, nil, fmt.Errorf("cert_chain[%d] has data after its PEM certificates", i)
		}
	}
	if len(certs) < 2 {
		return nil, nil, errors.New("cert_chain holds one certificate, want the leaf and, last, the root")
	}
	leaf, root := certs[0], certs[len(certs)-1]
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if k, ok := pub.(equaler); !ok || !k.Equal(leaf.PublicKey) {
		return nil, nil, errors.New("leaf is for a different key than the CSR")
	}
	got, err := IdentityOf(leaf)
	if err != nil {
		return nil, nil, fmt.Errorf("leaf: %w", err)
	}
	if got != id {
		return nil, nil, fmt.Errorf("leaf is for %s", got)
	}
	if !root.IsCA {
		return nil, nil, errors.New("last certificate of cert_chain is not a CA")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, x := range certs[1 : len(certs)-1] {
		inter.AddCert(x)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: time.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, nil, fmt.Errorf("leaf does not verify to the last certificate of cert_chain: %w", err)
	}
	return certs[:len(certs)-1], root, nil
}

// istioCAError keeps the gRPC status reachable (status.Code works on it)
// while its message stays one line: status messages come from the server
// and may hold anything.
type istioCAError struct {
	msg string
	err error
}

func (e *istioCAError) Error() string { return e.msg }
func (e *istioCAError) Unwrap() error { return e.err }
