package istiodtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/netnsx"
	"blastradius.dev/blastradius/proxy/node"
)

// envProxy makes the test binary run the node proxy (node.Main) instead of
// the tests: the ztunnel-mode proxy runs as a process of its own, configured
// by the chart's environment and stopped by SIGTERM, as the DaemonSet runs it.
const envProxy = "BLASTRADIUS_ISTIODTEST_PROXY"

// mesh is a node's pods as network namespaces on a bridge, the way a CNI
// plugin wires them: each pod's eth0 holds its IP in the node's pod CIDR.
type mesh struct {
	t      *testing.T
	nodeNS int
	n      int
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	fd, err := netnsx.NewNS()
	if err != nil {
		t.Fatalf("node network namespace: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	m := &mesh{t: t, nodeNS: fd}
	h := m.handle(fd)
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("bridge: %v", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *mesh) handle(fd int) *netlink.Handle {
	m.t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		m.t.Fatal(err)
	}
	return h
}

// pod is a pod network namespace with ip on eth0 (a /24 on the bridge),
// loopback up, and the in-pod redirect rules the node agent installs.
func (m *mesh) pod(ip netip.Addr) int {
	m.t.Helper()
	fd, err := netnsx.NewNS()
	if err != nil {
		m.t.Fatalf("pod network namespace: %v", err)
	}
	m.t.Cleanup(func() { unix.Close(fd) })
	m.n++
	host, peer := fmt.Sprintf("veth%d", m.n), fmt.Sprintf("pod%d", m.n)
	nh := m.handle(m.nodeNS)
	defer nh.Close()
	if err := nh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: peer}); err != nil {
		m.t.Fatalf("veth: %v", err)
	}
	br, err := nh.LinkByName("br0")
	if err != nil {
		m.t.Fatal(err)
	}
	hl, err := nh.LinkByName(host)
	if err != nil {
		m.t.Fatal(err)
	}
	pl, err := nh.LinkByName(peer)
	if err != nil {
		m.t.Fatal(err)
	}
	for _, step := range []error{nh.LinkSetMaster(hl, br), nh.LinkSetUp(hl), nh.LinkSetNsFd(pl, fd)} {
		if step != nil {
			m.t.Fatalf("wire pod %s: %v", ip, step)
		}
	}
	ph := m.handle(fd)
	defer ph.Close()
	eth, err := ph.LinkByName(peer)
	if err != nil {
		m.t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(ip.String() + "/24")
	lo, err := ph.LinkByName("lo")
	if err != nil {
		m.t.Fatal(err)
	}
	for _, step := range []error{ph.LinkSetName(eth, "eth0"), ph.AddrAdd(eth, addr), ph.LinkSetUp(eth), ph.LinkSetUp(lo)} {
		if step != nil {
			m.t.Fatalf("pod %s: %v", ip, step)
		}
	}
	if err := inpod.ApplyRedirect(fd, ip, node.DefaultMark); err != nil {
		m.t.Fatalf("redirect rules in pod %s: %v", ip, err)
	}
	return fd
}

// ztunnelProcess runs this test binary as `blastradius proxy ztunnel` with
// the environment the ztunnel chart gives its container.
type ztunnelProcess struct {
	cmd              *exec.Cmd
	done             chan error
	log              string
	ready, statsAddr string
}

func startZtunnel(t *testing.T, env map[string]string, args ...string) *ztunnelProcess {
	t.Helper()
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	z := &ztunnelProcess{done: make(chan error, 1), log: filepath.Join(t.TempDir(), "ztunnel.log"),
		ready: "127.0.0.1:" + strconv.Itoa(ports[0]), statsAddr: "127.0.0.1:" + strconv.Itoa(ports[1])}
	logf, err := os.Create(z.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	z.cmd = exec.Command(os.Args[0], append([]string{"ztunnel", "--ready-addr", z.ready, "--stats-addr", z.statsAddr,
		"--drain-deadline", "1s"}, args...)...)
	z.cmd.Env = append(os.Environ(), envProxy+"=1")
	for k, v := range env {
		z.cmd.Env = append(z.cmd.Env, k+"="+v)
	}
	z.cmd.Stdout, z.cmd.Stderr = logf, logf
	z.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := z.cmd.Start(); err != nil {
		t.Fatalf("start the node proxy: %v", err)
	}
	go func() { z.done <- z.cmd.Wait() }()
	t.Cleanup(func() { z.stop(t) })
	return z
}

// stop is SIGTERM, as the kubelet stops the pod: the proxy drains and
// exits 0.
func (z *ztunnelProcess) stop(t *testing.T) {
	if z.cmd.ProcessState != nil {
		return
	}
	_ = z.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-z.done:
		z.done <- err
		if err != nil {
			t.Errorf("node proxy exit: %v; log:\n%s", err, tail(z.log, 30))
		}
	case <-time.After(15 * time.Second):
		_ = z.cmd.Process.Kill()
		t.Errorf("node proxy did not stop within 15s of SIGTERM; log:\n%s", tail(z.log, 30))
	}
}

func (z *ztunnelProcess) get(path string) (int, string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func (z *ztunnelProcess) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		select {
		case err := <-z.done:
			z.done <- err
			t.Fatalf("node proxy exited (%v); log:\n%s", err, tail(z.log, 40))
		default:
		}
		code, body, err := z.get("http://" + z.ready + "/healthz/ready")
		if err == nil && code == http.StatusOK {
			return
		}
		last = fmt.Sprintf("%d %q %v", code, strings.TrimSpace(body), err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("node proxy not ready within %v (last: %s); log:\n%s", within, last, tail(z.log, 40))
}

// counter reads one series of the proxy's Prometheus text.
func (z *ztunnelProcess) counter(t *testing.T, series string) int64 {
	t.Helper()
	code, body, err := z.get("http://" + z.statsAddr + "/stats/prometheus")
	if err != nil || code != http.StatusOK {
		t.Fatalf("stats: %d %v", code, err)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				t.Fatalf("stats %s: %v", series, err)
			}
			return n
		}
	}
	return 0
}

// request opens a plain TCP connection from inside a pod to addr (the
// redirect rules hand it to the node proxy, which carries it over HBONE),
// sends a line and returns what comes back before the connection ends.
func request(ctx context.Context, podNS int, addr string) (string, error) {
	c, err := netnsx.DialTCP(ctx, podNS, addr, 0, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "balance?\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// The node proxy in ztunnel mode, run as the chart runs it, against the real
// istiod and pods as network namespaces handed over with istio-cni's ZDS
// messages: it takes its configuration and its pods' certificates from
// istiod (impersonation, bound token), carries a pod's connection to another
// over HBONE with mutual TLS, and once an AuthorizationPolicy DENY for the
// client's service account reaches it through istiod the same connection is
// refused: 401 on the HBONE CONNECT, counted on both sides of the tunnel.
func TestZtunnelModeWithIstiod(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "needs root: the pods are network namespaces the node proxy enters"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatal(msg + " ($" + EnvRequire + "=1: required, not skipped)")
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const nodeName = "node-3"
	kube, d, c, zt, token := startEnv(t, ctx, nodeName, "10.244.3.2", "vault")
	safeIP, tellerIP := netip.MustParseAddr("10.244.3.7"), netip.MustParseAddr("10.244.3.8")
	safe := c.pod(ctx, "vault", "safe-1", "safe", nodeName, safeIP.String(), map[string]string{"app": "safe"})
	teller := c.pod(ctx, "vault", "teller-1", "teller", nodeName, tellerIP.String(), map[string]string{"app": "teller"})

	// The pods' network namespaces, and the safe's app on 8080.
	m := newMesh(t)
	safeNS, tellerNS := m.pod(safeIP), m.pod(tellerIP)
	ln, err := netnsx.ListenTCP(safeNS, safeIP.String()+":8080", netnsx.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				line, _ := bufio.NewReader(conn).ReadString('\n')
				fmt.Fprintf(conn, "safe-1 answers %s", line)
			}()
		}
	}()

	// istio-cni's side: its ZDS server knows both pods by their UIDs.
	sock := filepath.Join(t.TempDir(), "ztunnel.sock")
	agent, err := inpod.NewServer(sock, inpod.WithLogf(t.Logf), inpod.WithPods(
		inpod.Pod{UID: string(safe.UID), NetNSFD: safeNS, Workload: &zdsapi.WorkloadInfo{Name: safe.Name, Namespace: "vault", ServiceAccount: "safe"}},
		inpod.Pod{UID: string(teller.UID), NetNSFD: tellerNS, Workload: &zdsapi.WorkloadInfo{Name: teller.Name, Namespace: "vault", ServiceAccount: "teller"}},
	))
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()

	// The proxy as the ztunnel DaemonSet runs it; istiod's address by the
	// name its serving certificate carries here (ISTIOD_CUSTOM_HOST).
	dir := t.TempDir()
	root := filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(root, d.RootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(d.SecureXDS)
	z := startZtunnel(t, map[string]string{
		"XDS_ADDRESS": "localhost:" + port, "CA_ADDRESS": "localhost:" + port,
		"ISTIO_META_CLUSTER_ID": ClusterID, "INPOD_ENABLED": "true",
		"POD_NAME": zt.Name, "POD_NAMESPACE": Namespace, "NODE_NAME": nodeName, "INSTANCE_IP": "10.244.3.2",
		"SERVICE_ACCOUNT": "ztunnel",
	}, "--token-file", token, "--root-cert", root, "--zds-socket", sock)
	z.waitReady(t, 60*time.Second)

	target := safeIP.String() + ":8080"
	got, err := request(ctx, tellerNS, target)
	if err != nil || got != "safe-1 answers balance?\n" {
		t.Fatalf("teller-1 -> safe-1 through the proxy: %q, %v; proxy log:\n%s", got, err, tail(z.log, 40))
	}
	// It went over HBONE, not around the proxy: the tunnel's two ends
	// counted it.
	if n := z.counter(t, `proxy_routes_total{node="`+nodeName+`",mode="ztunnel",route="hbone"}`); n < 1 {
		t.Errorf("no outbound workload route counted (%d); the connection did not cross the proxy", n)
	}
	if n := z.counter(t, `proxy_connections_opened_total{node="`+nodeName+`",mode="ztunnel",direction="inbound"}`); n < 1 {
		t.Errorf("no inbound HBONE connection counted (%d)", n)
	}

	// DENY teller's identity to the safe, through the API server and istiod.
	c.denyPrincipal(ctx, kube.Config, "vault", "no-teller", "safe", "cluster.local/ns/vault/sa/teller")
	denials := `proxy_policy_denials_total{node="` + nodeName + `",mode="ztunnel"}`
	status401 := `proxy_failures_total{node="` + nodeName + `",mode="ztunnel",reason="hbone_status_401"}`
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err = request(ctx, tellerNS, target)
		if got == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("teller-1 still reaches safe-1 30s after the DENY policy: %q, %v; proxy log:\n%s", got, err, tail(z.log, 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("teller-1 -> safe-1 after the DENY: %q, %v", got, err)
	before, before401 := z.counter(t, denials), z.counter(t, status401)
	if before < 1 || before401 < 1 {
		t.Fatalf("refused, but denials %d and HBONE 401s %d counted; proxy log:\n%s", before, before401, tail(z.log, 40))
	}
	// One more attempt: exactly one more denial and one more 401.
	if got, err := request(ctx, tellerNS, target); got != "" {
		t.Fatalf("teller-1 reached safe-1 again: %q, %v", got, err)
	}
	if d, s := z.counter(t, denials)-before, z.counter(t, status401)-before401; d != 1 || s != 1 {
		t.Errorf("one refused connection counted %d denials and %d HBONE 401s, want 1 and 1", d, s)
	}
	z.stop(t)
}
