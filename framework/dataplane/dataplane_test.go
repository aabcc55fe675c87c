package dataplane

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/sandbox"
	"blastradius.dev/blastradius/proxy/xds"
)

// brBinary is the blastradius binary the cluster starts in pods, built once
// before entering the sandbox.
var brBinary = os.Getenv("BR_TEST_BINARY")

func TestMain(m *testing.M) {
	if !sandbox.Inside() {
		dir, err := os.MkdirTemp("", "br-dataplane-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bin := filepath.Join(dir, "blastradius")
		if out, err := exec.Command("go", "build", "-o", bin, "blastradius.dev/blastradius/cmd/blastradius").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
			os.Exit(1)
		}
		os.Setenv("BR_TEST_BINARY", bin)
		code, err := sandbox.Enter(os.Args[1:])
		os.RemoveAll(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(code)
	}
	if err := sandbox.Setup(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

type env struct {
	cl  *netns.Cluster
	ref *Reference
	a   *netns.Pod // client, node-1
	b   *netns.Pod // server, node-2
	vip string
}

// deploy brings up two nodes, pod a on node-1, pod b (HTTP and TCP echo) on
// node-2 behind a service, and the data plane in mode ("none" for none).
func deploy(t *testing.T, mode string, opts ...func(*Reference)) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ref *Reference
	pods := []netns.PodSpec{{Name: "a", Node: 1}, {Name: "b", Node: 2}}
	apps := append([]netns.PodSpec(nil), pods...)
	var onEP func(netns.EndpointChange)
	if mode != "none" {
		ref = &Reference{Mode: mode, Dir: t.TempDir(), CertTTL: time.Hour, Drain: time.Second, Logf: t.Logf}
		for _, o := range opts {
			o(ref)
		}
		pods = append(pods, ref.InfraPods(2)...)
		onEP = ref.EndpointsChanged
	}
	cl, err := netns.Up(ctx, netns.Config{Nodes: 2, Pods: pods, Binary: brBinary, NotReadyGrace: 5 * time.Second,
		LogDir: t.TempDir(), EndpointsChanged: onEP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Down)
	if ref != nil {
		t.Cleanup(ref.Close)
		if err := ref.Deploy(ctx, cl, apps); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Start("b", netns.ProcSpec{Name: "server", Args: []string{"agent", "--http-listen", ":8080", "--tcp-listen", ":9000"}, ProbePort: 8080}); err != nil {
		t.Fatal(err)
	}
	svc, err := cl.AddService("echo-b", 80, 8080, []string{"b"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for len(svc.Endpoints()) == 0 {
		if ctx.Err() != nil {
			t.Fatal("no endpoints")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a, _ := cl.Pod("a")
	b, _ := cl.Pod("b")
	e := &env{cl: cl, ref: ref, a: a, b: b, vip: fmt.Sprintf("%s:80", svc.VIP)}
	// The proxies learn the service from the control plane asynchronously,
	// and until they do a request to its VIP is passed through in clear (as
	// for any destination outside the mesh). A request that succeeds is not
	// enough: ready means the client's proxy carried it over HBONE.
	if ref != nil {
		proxy := a
		if mode == "ambient" {
			proxy, _ = cl.Pod(ZtunnelPod(1))
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			before := metric(t, proxy, "hbone_streams_total", `direction="outbound"`)
			_, err := e.httpGet("/ready-check")
			if err == nil && metric(t, proxy, "hbone_streams_total", `direction="outbound"`) > before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the %s proxy did not carry a request to the service over HBONE within 10s (last error: %v)", mode, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return e
}

// dialA connects from inside pod a, as its application would.
func (e *env) dialA(addr string) (net.Conn, error) {
	var c net.Conn
	err := e.a.InPod(func() (err error) { c, err = net.DialTimeout("tcp", addr, 3*time.Second); return err })
	return c, err
}

func (e *env) httpGet(path string) (int, error) {
	c, err := e.dialA(e.vip)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: echo-b\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (e *env) echoTCP(msg string) error {
	c, err := e.dialA(e.b.IP.String() + ":9000")
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// metric reads one counter from a proxy pod's /metrics.
func metric(t *testing.T, pod *netns.Pod, name string, labels ...string) int64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s:%d/metrics", pod.IP, ProxyAdminPort))
	if err != nil {
		t.Fatalf("metrics of %s: %v", pod.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var total int64
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\d+)$`)
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		ok := true
		for _, l := range labels {
			ok = ok && regexp.MustCompile(regexp.QuoteMeta(l)).MatchString(m[1])
		}
		if ok {
			v, _ := strconv.ParseInt(m[2], 10, 64)
			total += v
		}
	}
	return total
}

func marker() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "MARKER-" + hex.EncodeToString(b)
}

// trafficOnNodeLink sends a marked TCP echo and an HTTP request from a (node-1)
// to b (node-2) and returns what the capture on node-2's link saw.
func trafficOnNodeLink(t *testing.T, e *env) (clear, tls bool, ports map[uint16]int) {
	t.Helper()
	c, err := startCapture(e.b.Node.InNode)
	if err != nil {
		t.Fatal(err)
	}
	m := marker()
	if err := e.echoTCP(m); err != nil {
		c.stop()
		t.Fatalf("pod to pod: %v", err)
	}
	if code, err := e.httpGet("/" + m); err != nil || code != 200 {
		c.stop()
		t.Fatalf("pod to service: %d %v", code, err)
	}
	return summarize(c.stop(), []byte(m))
}

// The capture must be able to fail: without a mesh the application's bytes
// cross the node link in clear.
func TestCaptureSeesPlaintextWithoutMesh(t *testing.T) {
	e := deploy(t, "none")
	clear, tls, ports := trafficOnNodeLink(t, e)
	if !clear || tls {
		t.Fatalf("no mesh: marker in clear = %v, TLS on 15008 = %v, ports %v", clear, tls, ports)
	}
}

func TestAmbientCrossesBothNodeProxiesOverHBONE(t *testing.T) {
	e := deploy(t, "ambient")
	z1, _ := e.cl.Pod(ZtunnelPod(1))
	z2, _ := e.cl.Pod(ZtunnelPod(2))
	out0 := metric(t, z1, "hbone_streams_total", `direction="outbound"`)
	in0 := metric(t, z2, "hbone_streams_total", `direction="inbound"`)
	clear, tls, ports := trafficOnNodeLink(t, e)
	if clear {
		t.Error("the application's bytes crossed the node link in clear")
	}
	if !tls {
		t.Errorf("no TLS records on port 15008 on the node link (ports seen: %v)", ports)
	}
	for _, p := range []uint16{8080, 9000, 80} {
		if ports[p] > 0 {
			t.Errorf("application port %d seen on the node link: %v", p, ports)
		}
	}
	if d := metric(t, z1, "hbone_streams_total", `direction="outbound"`) - out0; d < 2 {
		t.Errorf("node-1 proxy opened %d outbound HBONE streams, want ≥ 2 (pod and service)", d)
	}
	if d := metric(t, z2, "hbone_streams_total", `direction="inbound"`) - in0; d < 2 {
		t.Errorf("node-2 proxy accepted %d inbound HBONE streams, want ≥ 2", d)
	}
	if metric(t, z1, "proxy_routes_total", `route="hbone"`) < 2 {
		t.Error("node-1 proxy routed fewer than 2 connections over HBONE")
	}
}

func TestSidecarCrossesBothSidecars(t *testing.T) {
	e := deploy(t, "sidecar")
	out0 := metric(t, e.a, "hbone_streams_total", `direction="outbound"`)
	in0 := metric(t, e.b, "hbone_streams_total", `direction="inbound"`)
	clear, tls, ports := trafficOnNodeLink(t, e)
	if clear || !tls {
		t.Errorf("sidecar: marker in clear = %v, TLS on 15008 = %v (ports %v)", clear, tls, ports)
	}
	if d := metric(t, e.a, "hbone_streams_total", `direction="outbound"`) - out0; d < 2 {
		t.Errorf("a's sidecar opened %d outbound HBONE streams, want ≥ 2", d)
	}
	if d := metric(t, e.b, "hbone_streams_total", `direction="inbound"`) - in0; d < 2 {
		t.Errorf("b's sidecar accepted %d inbound HBONE streams, want ≥ 2", d)
	}
}

func TestAmbientSecurity(t *testing.T) {
	e := deploy(t, "ambient")
	z2, _ := e.cl.Pod(ZtunnelPod(2))

	// An application listener in b that counts what reaches it.
	var accepted atomic.Int64
	var ln net.Listener
	if err := e.b.InPod(func() (err error) { ln, err = net.Listen("tcp", ":7777"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			io.Copy(c, c)
			c.Close()
		}
	}()
	roundTrip := func() error {
		c, err := e.dialA(e.b.IP.String() + ":7777")
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("hello")); err != nil {
			return err
		}
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		return err
	}
	if err := roundTrip(); err != nil || accepted.Load() != 1 {
		t.Fatalf("allowed connection: %v, accepted %d", err, accepted.Load())
	}

	// Deny a's identity at b: 401 at the HBONE server, nothing reaches the app.
	denied0 := metric(t, z2, "proxy_policy_denials_total")
	if err := e.ref.SetPolicies([]xds.Policy{{Name: "deny-a", Namespace: Namespace, Workloads: []string{UID("b")},
		Action: xds.ActionDeny, Principals: []string{xds.SpiffeID(TrustDomain, Namespace, "a")}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for metric(t, z2, "proxy_policy_denials_total") == denied0 && time.Now().Before(deadline) {
		if err := roundTrip(); err == nil {
			time.Sleep(100 * time.Millisecond) // the policy has not arrived yet
		}
	}
	before := accepted.Load()
	if err := roundTrip(); err == nil {
		t.Fatal("denied connection carried data")
	}
	if accepted.Load() != before {
		t.Fatal("the application saw a denied connection")
	}
	if metric(t, z2, "proxy_policy_denials_total") <= denied0 {
		t.Fatal("denial not counted in proxy_policy_denials_total")
	}
	if metric(t, z2, "hbone_failures_total", `reason="policy_denied"`) == 0 {
		t.Error("denial not counted in hbone_failures_total{reason=policy_denied}")
	}

	// Plaintext straight to 15008 (not through a proxy) is refused.
	plain0 := metric(t, z2, "hbone_failures_total", `direction="inbound"`)
	c, err := net.DialTimeout("tcp", e.b.IP.String()+":15008", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "CONNECT %s:7777 HTTP/1.1\r\nHost: %s:7777\r\n\r\n", e.b.IP, e.b.IP)
	reply, _ := io.ReadAll(c)
	c.Close()
	if len(reply) > 0 && regexp.MustCompile(`^HTTP/1\.[01] 200`).Match(reply) {
		t.Fatalf("plaintext CONNECT accepted: %q", reply)
	}
	if metric(t, z2, "hbone_failures_total", `direction="inbound"`) <= plain0 {
		t.Error("plaintext attempt not counted in hbone_failures_total")
	}
	if accepted.Load() != before {
		t.Fatal("the application saw the plaintext attempt")
	}
}

func TestAmbientWaypointCarriesBoundService(t *testing.T) {
	e := deploy(t, "ambient", func(r *Reference) { r.WaypointFor, r.WaypointReplicas = "echo-b", 2 })
	z1, _ := e.cl.Pod(ZtunnelPod(1))
	w0, _ := e.cl.Pod(WaypointPod(0))
	w1, _ := e.cl.Pod(WaypointPod(1))
	via0 := metric(t, z1, "proxy_routes_total", `route="waypoint"`)
	in0 := metric(t, w0, "hbone_streams_total", `direction="inbound"`) + metric(t, w1, "hbone_streams_total", `direction="inbound"`)
	const n = 20
	for i := 0; i < n; i++ {
		if code, err := e.httpGet(fmt.Sprintf("/?i=%d", i)); err != nil || code != 200 {
			t.Fatalf("request %d through the waypoint: %d %v", i, code, err)
		}
	}
	if d := metric(t, z1, "proxy_routes_total", `route="waypoint"`) - via0; d < n {
		t.Errorf("node-1 proxy sent %d connections to the waypoint, want %d", d, n)
	}
	in := metric(t, w0, "hbone_streams_total", `direction="inbound"`) + metric(t, w1, "hbone_streams_total", `direction="inbound"`)
	if in-in0 < n {
		t.Errorf("waypoints accepted %d streams, want ≥ %d", in-in0, n)
	}
	// Both replicas serve: connections are spread over them.
	if metric(t, w0, "hbone_streams_total", `direction="inbound"`) == 0 || metric(t, w1, "hbone_streams_total", `direction="inbound"`) == 0 {
		t.Error("one waypoint replica got nothing")
	}
	// Pod-to-pod traffic (not bound to the waypoint) still goes direct.
	if err := e.echoTCP(marker()); err != nil {
		t.Fatal(err)
	}
	// A kept-alive client connection carries request after request through
	// the waypoint (the waypoint must not close it after the first).
	c, err := e.dialA(e.vip)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		fmt.Fprintf(c, "GET /?keepalive=%d HTTP/1.1\r\nHost: echo-b\r\n\r\n", i)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("kept-alive request %d through the waypoint: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("kept-alive request %d: status %d, close %v", i, resp.StatusCode, resp.Close)
		}
	}
}
