package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/netnsx"
)

// tcpListeners lists the TCP (IPv4) sockets in LISTEN state of the calling
// thread's network namespace, as ip:port.
func tcpListeners(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/thread-self/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		host, port, ok := strings.Cut(fields[1], ":")
		if !ok {
			t.Fatalf("parse %q", sc.Text())
		}
		// The address is the in-kernel (network order) u32 printed as a
		// host-order number.
		raw, err := hex.DecodeString(host)
		if err != nil || len(raw) != 4 {
			t.Fatalf("parse %q", sc.Text())
		}
		var ip [4]byte
		binary.NativeEndian.PutUint32(ip[:], binary.BigEndian.Uint32(raw))
		p, err := strconv.ParseUint(port, 16, 16)
		if err != nil {
			t.Fatalf("parse %q", sc.Text())
		}
		out = append(out, netip.AddrPortFrom(netip.AddrFrom4(ip), uint16(p)).String())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func listenersIn(t *testing.T, nsFD int) []string {
	t.Helper()
	var out []string
	if err := netnsx.Do(nsFD, func() error { out = tcpListeners(t); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// podNS is a pod network namespace with loopback up and the pod IP on it, and
// the pod's redirect rules (which also make conntrack track its connections,
// as in a real pod).
func podNS(t *testing.T, ip netip.Addr) int {
	t.Helper()
	fd, err := netnsx.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(ip.String() + "/32")
	if err := h.AddrAdd(lo, addr); err != nil {
		t.Fatal(err)
	}
	if err := inpod.ApplyRedirect(fd, ip, DefaultMark); err != nil {
		t.Fatal(err)
	}
	return fd
}

// agentPodNS is podNS with the pod IP on an eth0 (a veth whose peer stays
// inside the namespace) instead of loopback, as in a real pod: the node
// proxy reads the IP of a pod the node agent hands over from its namespace
// (netnsx.PodIP), where loopback does not count.
func agentPodNS(t *testing.T, ip netip.Addr) int {
	t.Helper()
	fd := podNS(t, ip)
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	addr, _ := netlink.ParseAddr(ip.String() + "/32")
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrDel(lo, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal("add veth:", err)
	}
	for _, name := range []string{"eth0", "peer0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "eth0" {
			if err := h.AddrAdd(l, addr); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

// TestInpodHandlerReadsPodIP: the node agent's add carries no address; the
// proxy serves the pod under the one it finds in the pod's namespace, and
// NACKs a pod whose namespace has none, naming the pod.
func TestInpodHandlerReadsPodIP(t *testing.T) {
	ip := netip.MustParseAddr("10.244.2.2") // b in snap()
	authority, err := ca.New("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	log := &logLines{}
	p := New(Options{Node: "node-1", Mark: DefaultMark, Logf: log.logf},
		func(_ context.Context, csr []byte, id string) ([]byte, error) { return authority.Sign(csr, id) }, authority.RootPEM)
	p.SetSnapshot(snap())
	defer p.certs.Close()
	h := &inpodHandler{p: p, logf: log.logf}
	info := &zdsapi.WorkloadInfo{Name: "b", Namespace: "default", ServiceAccount: "b"}
	add := func(fd int) error {
		t.Helper()
		dup, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		return h.Add("default/b", dup, info) // the handler owns dup
	}

	// The IP only on loopback, as podNS puts it: not a pod address.
	err = add(podNS(t, ip))
	if err == nil || !strings.Contains(err.Error(), "default/b") || !strings.Contains(err.Error(), "no IPv4 address") {
		t.Fatalf("Add of a pod without an address: %v, want an error naming the pod", err)
	}
	if pods := p.Pods(); len(pods) != 0 {
		t.Fatalf("pods served after a failed Add: %v", pods)
	}

	fd := agentPodNS(t, ip)
	if err := add(fd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.DelPod("default/b") })
	p.mu.Lock()
	pd := p.pods["default/b"]
	p.mu.Unlock()
	if pd == nil || pd.ip != ip {
		t.Fatalf("pod served as %+v, want IP %v", pd, ip)
	}
	want := PodListenAddrs()
	slices.Sort(want)
	if got := listenersIn(t, fd); !slices.Equal(got, want) {
		t.Errorf("listeners in the pod's namespace: %v, want %v", got, want)
	}
}

// TestPodListenersOnlyInsidePodNetns: serving a pod binds exactly
// PodListenAddrs inside the pod's network namespace — the outbound capture
// port on loopback only — and nothing in the proxy's own namespace.
func TestPodListenersOnlyInsidePodNetns(t *testing.T) {
	ip := netip.MustParseAddr("10.244.2.2") // b in snap()
	fd := podNS(t, ip)
	authority, err := ca.New("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	log := &logLines{}
	p := New(Options{Node: "node-1", Mark: DefaultMark, Logf: log.logf},
		func(_ context.Context, csr []byte, id string) ([]byte, error) { return authority.Sign(csr, id) }, authority.RootPEM)
	p.SetSnapshot(snap())
	own := tcpListeners(t)
	servePod(t, p, fd, ip)

	want := PodListenAddrs()
	slices.Sort(want)
	if got := listenersIn(t, fd); !slices.Equal(got, want) {
		t.Errorf("listeners in the pod's namespace: %v, want %v", got, want)
	}
	if !slices.Contains(want, fmt.Sprintf("127.0.0.1:%d", OutboundPort)) {
		t.Errorf("outbound capture not on loopback: %v", want)
	}
	if got := tcpListeners(t); !slices.Equal(got, own) {
		t.Errorf("serving a pod changed the proxy's own namespace's listeners: %v, before %v", got, own)
	}

	// Another pod cannot reach the outbound capture port: it is not on the
	// pod IP. (Marked, so the pod's own redirect rules leave it alone, as
	// they would a connection arriving from outside.)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := netnsx.DialTCP(ctx, fd, fmt.Sprintf("%s:%d", ip, OutboundPort), DefaultMark, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("%s:%d accepted a connection from outside the pod", ip, OutboundPort)
	}
}

// servePod hands the proxy pod default/b in the namespace fd (a copy of
// it: the proxy owns what it is given), removed again after the test.
func servePod(t *testing.T, p *Proxy, fd int, ip netip.Addr) {
	t.Helper()
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AddPod("default/b", dup, ip); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.DelPod("default/b"); p.certs.Close() })
}

// TestConnectionToProxyItselfRefused: a connection dialled straight at a
// capture port (not redirected there) is reset at once instead of being
// forwarded to that same port again and again.
func TestConnectionToProxyItselfRefused(t *testing.T) {
	ip := netip.MustParseAddr("10.244.2.2")
	fd := podNS(t, ip)
	log := &logLines{}
	p := New(Options{Node: "node-1", Mark: DefaultMark, Logf: log.logf},
		func(context.Context, []byte, string) ([]byte, error) { return nil, fmt.Errorf("no CA in this test") }, func() []byte { return nil })
	p.SetSnapshot(snap())
	servePod(t, p, fd, ip)

	for i, tc := range []struct {
		addr   string
		mark   uint32
		opened func() int64
	}{
		// The pod's application connecting to the outbound port on
		// loopback (loopback is never redirected).
		{fmt.Sprintf("127.0.0.1:%d", OutboundPort), 0, p.Metrics.OutboundOpened.Load},
		// A peer connecting straight to the inbound plaintext port (the
		// inbound rule skips the proxy's ports).
		{fmt.Sprintf("%s:%d", ip, InboundPort), DefaultMark, p.Metrics.InboundOpened.Load},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := netnsx.DialTCP(ctx, fd, tc.addr, tc.mark, 2*time.Second)
		cancel()
		// The reset can come before the dial has returned.
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Errorf("%s: read data from a connection to the proxy itself", tc.addr)
		}
		if got := p.Metrics.Failures("loop"); got != int64(i+1) {
			t.Errorf("%s: loop failures %d, want %d (%v)", tc.addr, got, i+1, log.matching("failure"))
		}
		// Give a loop, if there were one, time to show.
		time.Sleep(500 * time.Millisecond)
		if n := tc.opened(); n != 1 {
			t.Errorf("%s: the proxy accepted %d connections for one, a forwarding loop", tc.addr, n)
		}
	}
}

// TestNodeProxyOwnNamespaceHasOnlyAdmin runs a node proxy as `blastradius
// proxy --mode node` does, with a node agent handing it a pod: in the
// proxy's own namespace the only new listener is the admin port, where
// --admin says (:15020 means every address of the proxy's pod, as a
// Kubernetes probe needs); the capture and HBONE ports are in the pod.
func TestNodeProxyOwnNamespaceHasOnlyAdmin(t *testing.T) {
	// TestMain put this process in a namespace of its own (loopback up), so
	// its listeners are only the tests'.
	ip := netip.MustParseAddr("10.244.2.2")
	pod := agentPodNS(t, ip)
	before := tcpListeners(t)
	const sock = "@blastradius-node-test-inpod"
	agent, err := inpod.NewServer(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	if err := agent.Add("default/b", pod, &zdsapi.WorkloadInfo{Name: "b", Namespace: "default", ServiceAccount: "b"}); err != nil {
		// No proxy yet: the pod is kept and sent when it connects.
		t.Logf("agent add before the proxy connects: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr strings.Builder
	log := &logLines{}
	go func() {
		done <- runProxy(ctx, mainFlags{mode: "node", node: "node-1", cp: "127.0.0.1:1", inpodPath: sock,
			admin: ":15020", handoff: HandoffMigrate, mark: DefaultMark, drain: time.Second,
			connectTimeout: 2 * time.Second, configWait: 5 * time.Second}, log.logf, &stderr)
	}()
	defer func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("runProxy exit %d: %s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("runProxy did not stop")
		}
	}()
	wantPod := PodListenAddrs()
	slices.Sort(wantPod)
	wantOwn := append(slices.Clone(before), "0.0.0.0:15020")
	slices.Sort(wantOwn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		own, inPod := tcpListeners(t), listenersIn(t, pod)
		if slices.Equal(own, wantOwn) && slices.Equal(inPod, wantPod) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy's namespace: %v (want %v); pod's: %v (want %v); log %q",
				own, wantOwn, inPod, wantPod, log.matching(""))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
