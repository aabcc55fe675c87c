package hbonebench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	istiohbone "istio.io/istio/pkg/hbone"
	istiolog "istio.io/istio/pkg/log"

	"blastradius.dev/blastradius/proxy/hbone"
)

const (
	clientID = "spiffe://cluster.local/ns/default/sa/client"
	serverID = "spiffe://cluster.local/ns/default/sa/server"
)

// Istio's hbone scope logs every CONNECT at info, its default level. That
// is stderr I/O, not tunnel work, and the proxy logs nothing per stream, so
// it is kept at error to compare the tunnels themselves.
func init() {
	if s := istiolog.FindScope("hbone"); s != nil {
		s.SetOutputLevel(istiolog.ErrorLevel)
	}
}

// testCA is an ECDSA P-256 root made in the test: both implementations get
// leaves from it, so both handshakes verify the same kind of chain.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serial atomic.Int64

func newTestCA(tb testing.TB) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues an SVID for id. It also names 127.0.0.1 because Istio's dialer
// verifies the server by the host of its proxy address, as any HTTPS client
// does, where the proxy's verifies the SPIFFE identity.
func (ca *testCA) leaf(tb testing.TB, id string) *tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{u},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// echoServer is the target behind both HBONE servers: a plain TCP echo that
// half-closes when its client has. It counts the bytes it echoed, so a test
// can tell that bytes really went through it.
type echoServer struct {
	addr   string
	echoed atomic.Int64
}

func newEcho(tb testing.TB) *echoServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	e := &echoServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				n, _ := io.Copy(c, c)
				e.echoed.Add(n)
				_ = c.(*net.TCPConn).CloseWrite()
			})
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return e
}

// tunnel is one HBONE implementation as the benchmarks see it: open gives a
// new stream through the HBONE server to the echo target.
type tunnel struct {
	open func(ctx context.Context) (net.Conn, error)
	// peerCerts reports how many client certificates the HBONE server saw
	// on its last handshake, to check that both ran mutual TLS.
	peerCerts func() int
}

// proxyTunnel is proxy/hbone: its Server, whose Forward dials the echo and
// copies both ways as the node proxy does (io.Copy, then half-close), and
// its Dialer, which pools the TLS connection per source identity.
func proxyTunnel(tb testing.TB, ca *testCA, echo *echoServer) *tunnel {
	tb.Helper()
	srvCert, cliCert := ca.leaf(tb, serverID), ca.leaf(tb, clientID)
	var peers atomic.Int64
	srv := &hbone.Server{
		Cert:  func(context.Context) (*tls.Certificate, error) { return srvCert, nil },
		Roots: func() *x509.CertPool { return ca.pool },
		Forward: func(ctx context.Context, st net.Conn, peer, _ string) error {
			if peer == clientID {
				peers.Store(1)
			}
			var d net.Dialer
			dst, err := d.DialContext(ctx, "tcp", echo.addr)
			if err != nil {
				return err
			}
			splice(st, dst)
			return nil
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	d := &hbone.Dialer{
		Cert:  func(context.Context, string) (*tls.Certificate, error) { return cliCert, nil },
		Roots: func() *x509.CertPool { return ca.pool },
	}
	tb.Cleanup(func() {
		d.Close()
		srv.Close()
		if err := <-served; !errors.Is(err, hbone.ErrServerClosed) {
			tb.Errorf("proxy HBONE Serve: %v", err)
		}
	})
	addr := ln.Addr().String()
	return &tunnel{
		open: func(ctx context.Context) (net.Conn, error) {
			return d.Connect(ctx, clientID, addr, echo.addr, serverID)
		},
		peerCerts: func() int { return int(peers.Load()) },
	}
}

// istioTunnel is istio.io/istio/pkg/hbone: NewServer behind a TLS listener
// configured as Istio's echo app configures its HBONE port (its certificate,
// ALPN h2), plus TLS 1.3 only and a required, verified client certificate so
// that both sides do the same handshake as the proxy's; and NewDialer with
// the client certificate, whose http2.Transport pools the TLS connection.
func istioTunnel(tb testing.TB, ca *testCA, echo *echoServer) *tunnel {
	tb.Helper()
	srvCert, cliCert := ca.leaf(tb, serverID), ca.leaf(tb, clientID)
	var peers atomic.Int64
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ln := tls.NewListener(raw, &tls.Config{
		Certificates: []tls.Certificate{*srvCert},
		NextProtos:   []string{"h2"},
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			peers.Store(int64(len(cs.PeerCertificates)))
			return nil
		},
	})
	srv := istiohbone.NewServer()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	timeout := 10 * time.Second
	d := istiohbone.NewDialer(istiohbone.Config{
		ProxyAddress: raw.Addr().String(),
		Timeout:      &timeout,
		TLS: &tls.Config{
			Certificates: []tls.Certificate{*cliCert},
			RootCAs:      ca.pool,
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{"h2"},
		},
	})
	tb.Cleanup(func() {
		srv.Close()
		<-served
	})
	return &tunnel{
		open: func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", echo.addr)
		},
		peerCerts: func() int { return int(peers.Load()) },
	}
}

// splice copies both ways until both directions are done, half-closing each
// as its source ends: the node proxy's inbound forwarding, minus counting.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	wg.Add(2)
	go half(b, a)
	go half(a, b)
	wg.Wait()
	a.Close()
	b.Close()
}

type impl struct {
	name  string
	setup func(testing.TB, *testCA, *echoServer) *tunnel
}

var impls = []impl{
	{"proxy", proxyTunnel},
	{"istio", istioTunnel},
}
