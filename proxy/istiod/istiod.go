// Package istiod is what every client of istiod shares (discovery in
// proxy/xds, certificates in proxy/ca): the TLS link verified against
// istiod's root, read again at every handshake because the ConfigMap it is
// mounted from is rewritten in place when the root rotates, and the
// service-account token, read again at every call because the kubelet
// replaces a projected token well before it expires.
package istiod

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DialOptions are what every connection to istiod is made with besides
// its credentials. No service config from DNS: gRPC's DNS resolver would
// otherwise ask for a TXT record of istiod's name at every resolution,
// which ztunnel never does, and where the name comes from /etc/hosts and
// no DNS server answers (a cluster without DNS), every resolution then
// waits for that query to time out, longer than a certificate request may
// take.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDisableServiceConfig()}
}

// Link says how to reach istiod: TLS verified against RootPEM or RootFile
// (exactly one) for ServerName, or Plaintext (tests, port 15010).
type Link struct {
	ServerName string
	RootPEM    []byte
	RootFile   string
	Plaintext  bool
	// Prefix starts every error, e.g. "xds": errors say which client.
	Prefix string
}

// Credentials checks the link and returns its gRPC transport credentials.
// The roots are read once now, so a wrong path or an empty ConfigMap is
// reported at start and not as a handshake failure much later.
func (l Link) Credentials() (credentials.TransportCredentials, error) {
	switch {
	case l.Plaintext:
		if len(l.RootPEM) > 0 || l.RootFile != "" {
			return nil, fmt.Errorf("%s: istiod client: a root was given but Plaintext is set", l.Prefix)
		}
		return insecure.NewCredentials(), nil
	case len(l.RootPEM) > 0 && l.RootFile != "":
		return nil, fmt.Errorf("%s: istiod client: give RootPEM or RootFile, not both", l.Prefix)
	case len(l.RootPEM) == 0 && l.RootFile == "":
		return nil, fmt.Errorf("%s: istiod client: no root to verify istiod with (RootPEM or RootFile)", l.Prefix)
	}
	if _, err := l.roots(); err != nil {
		return nil, err
	}
	return credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: l.ServerName,
		// crypto/tls would fix the roots when the config is built;
		// VerifyConnection does the same checks with roots read at each
		// handshake.
		InsecureSkipVerify: true,
		VerifyConnection:   l.verify,
	}), nil
}

func (l Link) source() string {
	if l.RootFile != "" {
		return l.RootFile
	}
	return "RootPEM"
}

func (l Link) roots() (*x509.CertPool, error) {
	b := l.RootPEM
	if l.RootFile != "" {
		var err error
		if b, err = os.ReadFile(l.RootFile); err != nil {
			return nil, fmt.Errorf("%s: istiod root: %w", l.Prefix, err)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: istiod root %s holds no PEM certificate", l.Prefix, l.source())
	}
	return pool, nil
}

// verify is the standard server certificate check (chain to the roots,
// name = ServerName) against roots read now.
func (l Link) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%s: istiod presented no certificate", l.Prefix)
	}
	roots, err := l.roots()
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, x := range cs.PeerCertificates[1:] {
		inter.AddCert(x)
	}
	if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: l.ServerName, Roots: roots, Intermediates: inter}); err != nil {
		return fmt.Errorf("%s: istiod certificate not trusted by %s: %w", l.Prefix, l.source(), err)
	}
	return nil
}

// Token reads the bearer token in file afresh; prefix starts its errors.
func Token(prefix, file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: service-account token: %w", prefix, err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s: service-account token file %s is empty", prefix, file)
	}
	if strings.ContainsAny(t, "\r\n") {
		return "", fmt.Errorf("%s: service-account token file %s holds more than one line", prefix, file)
	}
	return t, nil
}
