package netnsx

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// newNS returns a fresh namespace with loopback up, closed at cleanup.
func newNS(t *testing.T) int {
	t.Helper()
	fd, err := NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	h := handle(t, fd)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return fd
}

func handle(t *testing.T, fd int) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// veth links namespaces a and b with a veth pair, a side addressed aCIDR and
// b side bCIDR.
func veth(t *testing.T, a, b int, aCIDR, bCIDR string) {
	t.Helper()
	ha, hb := handle(t, a), handle(t, b)
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb", PeerNamespace: netlink.NsFd(b)}); err != nil {
		t.Fatal("add veth:", err)
	}
	for _, s := range []struct {
		h    *netlink.Handle
		name string
		cidr string
	}{{ha, "va", aCIDR}, {hb, "vb", bCIDR}} {
		l, err := s.h.LinkByName(s.name)
		if err != nil {
			t.Fatal(err)
		}
		addr, err := netlink.ParseAddr(s.cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := s.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

// echo serves ln with a line echo ("name: line") until ln closes.
func echo(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s: %s", name, line)
			}
		}()
	}
}

func roundTrip(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(line, "\n")
}

func nsInode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestNewNSIsNewAndCallerStays(t *testing.T) {
	var before unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &before); err != nil {
		t.Fatal(err)
	}
	fd := newNS(t)
	if nsInode(t, fd) == before.Ino {
		t.Fatal("NewNS returned the caller's namespace")
	}
	// Do switched a different thread: work run inside sees the new
	// namespace, and the caller's namespace is untouched afterwards.
	var inside unix.Stat_t
	if err := Do(fd, func() error { return unix.Stat("/proc/thread-self/ns/net", &inside) }); err != nil {
		t.Fatal(err)
	}
	if inside.Ino != nsInode(t, fd) {
		t.Fatalf("Do ran in netns %d, want %d", inside.Ino, nsInode(t, fd))
	}
	for range 50 { // the pool's threads must all be back home
		var now unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &now); err != nil {
			t.Fatal(err)
		}
		if now.Ino != before.Ino {
			t.Fatal("caller's thread left in another namespace")
		}
	}
	if err := Do(12345, func() error { return nil }); err == nil {
		t.Fatal("Do with a bad fd succeeded")
	}
}

func TestListenAndDialAcrossVeth(t *testing.T) {
	client, server := newNS(t), newNS(t)
	veth(t, client, server, "10.99.0.1/24", "10.99.0.2/24")

	ln, err := ListenTCP(server, "10.99.0.2:8080", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echo(ln, "server")

	// The address exists only inside the namespaces: a socket made in the
	// caller's namespace could not reach it, nor bind it.
	ctx := context.Background()
	c, err := DialTCP(ctx, client, "10.99.0.2:8080", 0, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := roundTrip(t, c, "hi"); got != "server: hi" {
		t.Fatalf("got %q", got)
	}
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != "10.99.0.1" {
		t.Fatalf("local address %s, want 10.99.0.1", got)
	}
	// The pod address is not local to the client namespace. (Not checked
	// against the caller's namespace: in one with no address at all, as in
	// a user-namespace test run, Linux lets any address be bound.)
	if _, err := ListenTCP(client, "10.99.0.2:8081", ListenOptions{}); err == nil {
		t.Fatal("listening on the server's address in the client namespace succeeded")
	}

	// Refused fast, and a plain error.
	if _, err := DialTCP(ctx, client, "10.99.0.2:9", 0, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial closed port: %v, want ECONNREFUSED", err)
	}
	// A black hole (no neighbour answers) ends at the timeout, and ctx
	// cancellation ends it too.
	start := time.Now()
	_, err = DialTCP(ctx, client, "10.99.0.77:80", 0, 200*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("dial black hole: %v after %v, want deadline after ~200ms", err, time.Since(start))
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	if _, err = DialTCP(cctx, client, "10.99.0.77:80", 0, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("dial cancelled: %v, want context.Canceled", err)
	}
	if _, err := DialTCP(ctx, client, "pod.example:80", 0, 0); err == nil {
		t.Fatal("dial to a host name succeeded")
	}
}

func TestReusePortBothAccept(t *testing.T) {
	client, server := newNS(t), newNS(t)
	veth(t, client, server, "10.99.0.1/24", "10.99.0.2/24")
	opts := ListenOptions{ReusePort: true}
	ln1, err := ListenTCP(server, ":15008", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer ln1.Close()
	ln2, err := ListenTCP(server, ":15008", opts)
	if err != nil {
		t.Fatal("second listener on the same port:", err)
	}
	defer ln2.Close()
	go echo(ln1, "one")
	go echo(ln2, "two")
	// Without SO_REUSEPORT the second bind fails.
	if ln3, err := ListenTCP(server, ":15008", ListenOptions{}); err == nil {
		ln3.Close()
		t.Fatal("listener without ReusePort shared the port")
	}

	// The kernel spreads connections by a hash of the 4-tuple; both see some
	// well before 200 connections unless one of them is not really listening.
	seen := map[string]bool{}
	for i := 0; i < 200 && len(seen) < 2; i++ {
		c, err := DialTCP(context.Background(), client, "10.99.0.2:15008", 0, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := roundTrip(t, c, "x")
		c.Close()
		seen[strings.TrimSuffix(got, ": x")] = true
	}
	if !seen["one"] || !seen["two"] {
		t.Fatalf("accepted by %v, want both listeners", seen)
	}
}

func TestListenOptionsApplied(t *testing.T) {
	ns := newNS(t)
	ln, err := ListenTCP(ns, "127.0.0.1:0", ListenOptions{Transparent: true, Mark: 0x539, ReusePort: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark, transparent, reuse int
	var gerr error
	rc.Control(func(fd uintptr) {
		var e1, e2, e3 error
		mark, e1 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
		transparent, e2 = unix.GetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT)
		reuse, e3 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT)
		gerr = errors.Join(e1, e2, e3)
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	if mark != 0x539 || transparent != 1 || reuse != 1 {
		t.Fatalf("mark=%#x transparent=%d reuseport=%d", mark, transparent, reuse)
	}
}

func TestDialSetsMark(t *testing.T) {
	ns := newNS(t)
	ln, err := ListenTCP(ns, "127.0.0.1:0", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echo(ln, "lo")
	c, err := DialTCP(context.Background(), ns, ln.Addr().String(), 0x539, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.(syscall.Conn).SyscallConn()
	var mark int
	var gerr error
	rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
	if gerr != nil || mark != 0x539 {
		t.Fatalf("SO_MARK %#x (%v), want 0x539", mark, gerr)
	}
	if got := roundTrip(t, c, "m"); got != "lo: m" {
		t.Fatalf("got %q", got)
	}
}

func TestSetSysctlIsPerNamespace(t *testing.T) {
	const name = "net.ipv4.tcp_migrate_req"
	read := func(fd int) string {
		var b []byte
		if err := Do(fd, func() (err error) {
			b, err = os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	host := read(-1)
	ns := newNS(t)
	want := "1"
	if read(ns) == "1" {
		want = "0"
	}
	if err := SetSysctl(ns, name, want); err != nil {
		t.Fatal(err)
	}
	if got := read(ns); got != want {
		t.Fatalf("%s in namespace = %s, want %s", name, got, want)
	}
	if got := read(-1); got != host {
		t.Fatalf("%s leaked to the caller's namespace: %s, was %s", name, got, host)
	}
	if err := SetSysctl(ns, "kernel.hostname", "x"); err == nil {
		t.Fatal("non-net sysctl accepted")
	}
}

func TestOriginalDstNeedsSocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := OriginalDst(a); err == nil {
		t.Fatal("OriginalDst on a pipe succeeded")
	}
}

func TestParseAddr(t *testing.T) {
	for addr, want := range map[string]string{
		":15001":               "0.0.0.0:15001",
		"10.0.0.1:80":          "10.0.0.1:80",
		"[::ffff:10.0.0.1]:80": "10.0.0.1:80",
	} {
		got, err := parseAddr(addr, true)
		if err != nil || got != netip.MustParseAddrPort(want) {
			t.Errorf("parseAddr(%q) = %v, %v; want %s", addr, got, err, want)
		}
	}
	for _, addr := range []string{"[::1]:80", "host:80", "10.0.0.1", "10.0.0.1:99999"} {
		if _, err := parseAddr(addr, true); err == nil {
			t.Errorf("parseAddr(%q) accepted", addr)
		}
	}
}

// A connect in progress waits in the poller, not on a thread held in the
// namespace: many hanging dials do not add a thread each.
func TestHangingDialsDoNotPinThreads(t *testing.T) {
	client, server := newNS(t), newNS(t)
	veth(t, client, server, "10.99.0.1/24", "10.99.0.2/24")
	threads := func() int {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		for l := range strings.Lines(string(b)) {
			if n, ok := strings.CutPrefix(l, "Threads:"); ok {
				var v int
				fmt.Sscan(strings.TrimSpace(n), &v)
				return v
			}
		}
		t.Fatal("no Threads line")
		return 0
	}
	before := threads()
	const n = 64
	errs := make(chan error, n)
	for i := range n {
		go func() {
			// Nobody answers ARP for these: the connect hangs until the timeout.
			_, err := DialTCP(context.Background(), client, fmt.Sprintf("10.99.0.%d:80", 100+i), 0, 500*time.Millisecond)
			errs <- err
		}()
	}
	time.Sleep(250 * time.Millisecond)
	during := threads()
	t.Logf("threads: %d before, %d during %d hanging dials", before, during, n)
	for range n {
		if err := <-errs; !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("hanging dial: %v, want deadline", err)
		}
	}
	if during-before > n/2 {
		t.Fatalf("%d threads during %d hanging dials, %d before: dials pin threads", during, n, before)
	}
}
