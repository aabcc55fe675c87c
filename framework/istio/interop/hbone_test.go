package interop

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
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/istio/istiodtest"
	"blastradius.dev/blastradius/proxy/hbone"
)

const (
	webID   = "spiffe://cluster.local/ns/shop/sa/web"
	cartID  = "spiffe://cluster.local/ns/shop/sa/cart"
	echoID  = "spiffe://cluster.local/ns/shop/sa/echo"
	thiefID = "spiffe://cluster.local/ns/shop/sa/thief"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	pem  []byte
}

var serial int64

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{Organization: []string{name}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues an SVID for id. It also names 127.0.0.1: Istio's Go HBONE
// client verifies the server as Go's TLS does, by the address it dialled,
// where ztunnel checks the SPIFFE identity; the node proxy checks only the
// URI.
func (ca *testCA) leaf(t *testing.T, id string) (*tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id)
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	kd, _ := x509.MarshalECPrivateKey(key)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func bin(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(istiodtest.Bins(), name)
	if _, err := os.Stat(p); err != nil {
		msg := fmt.Sprintf("no %s in %s: run `make istio-bins`", name, istiodtest.Bins())
		if os.Getenv(istiodtest.EnvRequire) != "1" {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
	return p
}

func write(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// echoServer runs Istio's echo server with a plain TCP port and, if
// certificate files are given, an HBONE port (TLS) in front of it.
func echoServer(t *testing.T, crt, key string) (tcp, hb int) {
	t.Helper()
	tcp, hb = freePort(t), freePort(t)
	args := []string{"--port", strconv.Itoa(freePort(t)), "--grpc", strconv.Itoa(freePort(t)), "--tcp", strconv.Itoa(tcp),
		"--hbone", strconv.Itoa(hb), "--bind-localhost", strconv.Itoa(tcp)}
	if crt != "" {
		args = append(args, "--tls", strconv.Itoa(hb), "--crt", crt, "--key", key)
	}
	cmd := exec.Command(bin(t, "echo-server"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for _, p := range []int{tcp, hb} {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("echo server port %d not up within 20s: %v\n%s", p, err, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return tcp, hb
}

// Istio's echo client through the node proxy's HBONE server: mutual TLS
// with the mesh CA, the CONNECT authorized with the client's verified
// identity and forwarded to Istio's echo server. A client certificate of
// another CA, an identity the server's policy refuses, and a server the
// client cannot verify all fail.
func TestIstioClientThroughProxyHBONEServer(t *testing.T) {
	mesh, foreign := newCA(t, "mesh"), newCA(t, "foreign")
	dir := t.TempDir()
	tcp, _ := echoServer(t, "", "")
	srvCert, _, _ := mesh.leaf(t, cartID)
	var mu sync.Mutex
	var peers []string
	s := &hbone.Server{
		Cert:  func(context.Context) (*tls.Certificate, error) { return srvCert, nil },
		Roots: func() *x509.CertPool { return mesh.pool },
		Authorize: func(peer, authority string) int {
			mu.Lock()
			peers = append(peers, peer)
			mu.Unlock()
			if peer == thiefID {
				return 401
			}
			return 200
		},
		Forward: func(ctx context.Context, st net.Conn, peer, authority string) error {
			var d net.Dialer
			app, err := d.DialContext(ctx, "tcp", authority)
			if err != nil {
				return err
			}
			defer app.Close()
			go func() { _, _ = io.Copy(app, st); _ = app.(*net.TCPConn).CloseWrite() }()
			_, err = io.Copy(st, app)
			return err
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	defer s.Close()

	client := func(id string, ca *testCA, trust []byte) (string, error) {
		_, c, k := ca.leaf(t, id)
		cmd := exec.Command(bin(t, "echo-client"), fmt.Sprintf("tcp://127.0.0.1:%d", tcp),
			"--hbone", ln.Addr().String(),
			"--hbone-client-cert", write(t, dir, "c.pem", c), "--hbone-client-key", write(t, dir, "k.pem", k),
			"--hbone-ca", write(t, dir, "ca.pem", trust), "--timeout", "5s")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := client(webID, mesh, mesh.pem)
	if err != nil || !strings.Contains(out, "ServicePort="+strconv.Itoa(tcp)) {
		t.Fatalf("Istio client via the proxy's HBONE server: %v\n%s", err, out)
	}
	mu.Lock()
	if len(peers) != 1 || peers[0] != webID {
		t.Fatalf("authorized peers %v, want [%s]", peers, webID)
	}
	mu.Unlock()
	for name, tc := range map[string]struct {
		id    string
		ca    *testCA
		trust []byte
	}{
		"client certificate of another CA": {webID, foreign, mesh.pem},
		"identity the policy refuses":      {thiefID, mesh, mesh.pem},
		"server the client cannot verify":  {webID, mesh, foreign.pem},
	} {
		out, err := client(tc.id, tc.ca, tc.trust)
		if err == nil && strings.Contains(out, "ServicePort=") {
			t.Errorf("%s: the request went through:\n%s", name, out)
		}
		t.Logf("%s: refused: %v: %s", name, err, lastLine(out))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(peers) != 2 || peers[1] != thiefID {
		t.Fatalf("authorized peers %v: only the web and thief identities may reach Authorize", peers)
	}
}

// The node proxy's HBONE client to Istio's echo server's HBONE port: the
// CONNECT reaches the echo server's TCP port; a server whose identity is
// not the one expected, or whose CA the client does not trust, is refused.
func TestProxyHBONEClientToIstioServer(t *testing.T) {
	mesh, foreign := newCA(t, "mesh"), newCA(t, "foreign")
	dir := t.TempDir()
	_, c, k := mesh.leaf(t, echoID)
	tcp, hb := echoServer(t, write(t, dir, "echo.pem", c), write(t, dir, "echo-key.pem", k))
	src, _, _ := mesh.leaf(t, webID)
	dial := func(roots *x509.CertPool, want string) (string, error) {
		d := &hbone.Dialer{
			Cert:  func(context.Context, string) (*tls.Certificate, error) { return src, nil },
			Roots: func() *x509.CertPool { return roots },
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// With the header fields ztunnel sends: Istio's server tolerates them.
		conn, err := d.Connect(ctx, webID, fmt.Sprintf("127.0.0.1:%d", hb), fmt.Sprintf("127.0.0.1:%d", tcp), want,
			hbone.Header{Name: "forwarded", Value: `for="127.0.0.1:40000"`},
			hbone.Header{Name: "baggage", Value: "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.pod.name=web"},
			hbone.Header{Name: "traceparent", Value: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("hello over hbone\n")); err != nil {
			return "", err
		}
		var got bytes.Buffer
		buf := make([]byte, 4096)
		for !strings.Contains(got.String(), "hello over hbone") {
			n, err := conn.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				return got.String(), err
			}
		}
		return got.String(), nil
	}
	out, err := dial(mesh.pool, echoID)
	if err != nil || !strings.Contains(out, "ServicePort="+strconv.Itoa(tcp)) {
		t.Fatalf("proxy client to Istio's HBONE server: %v\n%s", err, out)
	}
	if _, err := dial(mesh.pool, cartID); err == nil {
		t.Error("a server with another identity than expected was accepted")
	} else {
		t.Logf("server with another identity: refused: %v", err)
	}
	if _, err := dial(foreign.pool, echoID); err == nil {
		t.Error("a server of an untrusted CA was accepted")
	} else {
		t.Logf("server of an untrusted CA: refused: %v", err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
