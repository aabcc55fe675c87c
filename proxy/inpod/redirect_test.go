package inpod

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/netnsx"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const testMark = 0x539

var (
	outsideIP = netip.MustParseAddr("10.99.0.1")
	podIP     = netip.MustParseAddr("10.99.0.2")
	vip       = netip.MustParseAddrPort("10.96.0.10:80")
)

// podPair makes an "outside" namespace and a "pod" namespace joined by a
// veth pair (10.99.0.1 and 10.99.0.2), loopbacks up, the pod's default
// route via the outside.
func podPair(t *testing.T) (outside, pod int) {
	t.Helper()
	outside, _ = podNS(t)
	pod, _ = podNS(t)
	ho, hp := nlHandle(t, outside), nlHandle(t, pod)
	if err := ho.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "out0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(pod)}); err != nil {
		t.Fatal("add veth:", err)
	}
	for _, s := range []struct {
		h    *netlink.Handle
		link string
		cidr string
	}{{ho, "out0", "10.99.0.1/24"}, {hp, "eth0", "10.99.0.2/24"}, {ho, "lo", ""}, {hp, "lo", ""}} {
		l, err := s.h.LinkByName(s.link)
		if err != nil {
			t.Fatal(err)
		}
		if s.cidr != "" {
			a, _ := netlink.ParseAddr(s.cidr)
			if err := s.h.AddrAdd(l, a); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	// Like a pod, a default route via the node: service VIPs are routed
	// nowhere in particular and only exist in NAT rules.
	if err := hp.RouteAdd(&netlink.Route{Gw: outsideIP.AsSlice()}); err != nil {
		t.Fatal("default route:", err)
	}
	return outside, pod
}

func nlHandle(t *testing.T, fd int) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// announce listens in ns at addr and answers every connection with one line:
// its name and the connection's original destination ("-" if none).
func announce(t *testing.T, ns int, addr, name string) {
	t.Helper()
	ln, err := netnsx.ListenTCP(ns, addr, netnsx.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			orig := "-"
			if ap, err := netnsx.OriginalDst(c); err == nil {
				orig = ap.String()
			}
			fmt.Fprintf(c, "%s %s\n", name, orig)
			c.Close()
		}
	}()
}

// reach dials addr from ns with mark and returns the answering line.
func reach(t *testing.T, ns int, addr string, mark uint32) string {
	t.Helper()
	c, err := netnsx.DialTCP(context.Background(), ns, addr, mark, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s (mark %#x): %v", addr, mark, err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s (mark %#x): %v", addr, mark, err)
	}
	return strings.TrimSuffix(line, "\n")
}

// kubeProxyDNAT installs a kube-proxy-like service DNAT at the standard
// dstnat priority (-100) in ns: vip → 10.99.0.1:9090.
func kubeProxyDNAT(t *testing.T, ns int) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns))
	if err != nil {
		t.Fatal(err)
	}
	tb := conn.AddTable(&nftables.Table{Name: "kube-proxy", Family: nftables.TableFamilyIPv4})
	ch := conn.AddChain(&nftables.Chain{Name: "services", Table: tb, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	v := vip.Addr().As4()
	be := outsideIP.As4()
	conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: append(tcp(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: v[:]},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, vip.Port())},
		&expr.Immediate{Register: 1, Data: be[:]},
		&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, 9090)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestRedirectOutbound(t *testing.T) {
	outside, pod := podPair(t)
	announce(t, outside, "10.99.0.1:9090", "target")
	announce(t, pod, "127.0.0.1:15001", "outbound")
	announce(t, pod, "127.0.0.1:7000", "local")
	kubeProxyDNAT(t, pod)
	if err := ApplyRedirect(pod, podIP, testMark); err != nil {
		t.Fatal(err)
	}
	// Applying again replaces the table instead of failing or doubling.
	if err := ApplyRedirect(pod, podIP, testMark); err != nil {
		t.Fatal("second ApplyRedirect:", err)
	}

	for _, c := range []struct {
		addr string
		mark uint32
		want string
	}{
		// The proxy's own, marked, connections go where they were sent.
		{"10.99.0.1:9090", testMark, "target -"},
		// The application's go to 15001, which learns the real target.
		{"10.99.0.1:9090", 0, "outbound 10.99.0.1:9090"},
		{"10.99.0.1:9090", testMark + 1, "outbound 10.99.0.1:9090"},
		// Redirect runs before kube-proxy's DNAT: the proxy sees the VIP.
		{vip.String(), 0, "outbound " + vip.String()},
		// A marked connection to the VIP is left to kube-proxy.
		{vip.String(), testMark, "target -"},
		// Loopback is never redirected.
		{"127.0.0.1:7000", 0, "local 127.0.0.1:7000"},
	} {
		if got := reach(t, pod, c.addr, c.mark); got != c.want {
			t.Errorf("pod → %s mark %#x: answered %q, want %q", c.addr, c.mark, got, c.want)
		}
	}

	if err := RemoveRedirect(pod); err != nil {
		t.Fatal(err)
	}
	if got := reach(t, pod, "10.99.0.1:9090", 0); got != "target -" {
		t.Errorf("after RemoveRedirect: answered %q, want the target", got)
	}
	if err := RemoveRedirect(pod); err != nil {
		t.Fatal("RemoveRedirect with no table:", err)
	}
}

func TestRedirectInbound(t *testing.T) {
	outside, pod := podPair(t)
	announce(t, pod, ":15006", "inbound")
	announce(t, pod, ":15008", "hbone")
	announce(t, pod, ":8080", "app")
	if err := ApplyRedirect(pod, podIP, testMark); err != nil {
		t.Fatal(err)
	}
	if got, want := reach(t, outside, "10.99.0.2:8080", 0), "inbound 10.99.0.2:8080"; got != want {
		t.Errorf("outside → pod:8080 answered %q, want %q", got, want)
	}
	// HBONE is for the proxy itself: not redirected.
	if got, want := reach(t, outside, "10.99.0.2:15008", 0), "hbone 10.99.0.2:15008"; got != want {
		t.Errorf("outside → pod:15008 answered %q, want %q", got, want)
	}
	// The mark does not matter inbound: it is the pod's own sockets' mark.
	if got, want := reach(t, outside, "10.99.0.2:8080", testMark), "inbound 10.99.0.2:8080"; got != want {
		t.Errorf("outside → pod:8080 marked answered %q, want %q", got, want)
	}

	if err := RemoveRedirect(pod); err != nil {
		t.Fatal(err)
	}
	// Whether conntrack still tracks it (original destination known or
	// "-") is up to the kernel; what matters is that the app answers.
	if got := reach(t, outside, "10.99.0.2:8080", 0); !strings.HasPrefix(got, "app ") {
		t.Errorf("after RemoveRedirect outside → pod:8080 answered %q, want the app", got)
	}
}

func TestRedirectRefusesBadInput(t *testing.T) {
	if err := ApplyRedirect(-1, podIP, testMark); err == nil {
		t.Fatal("ApplyRedirect on the caller's own namespace accepted")
	}
	ns, _ := podNS(t)
	if err := ApplyRedirect(ns, netip.MustParseAddr("fd00::1"), testMark); err == nil {
		t.Fatal("IPv6 pod IP accepted")
	}
}
