package netnsx

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// podLink adds to namespace fd a veth pair eth0/peer0 whose peer stays
// inside (like a pod's interface, whose peer is on the node), both up, with
// cidrs on eth0.
func podLink(t *testing.T, fd int, cidrs ...string) {
	t.Helper()
	h := handle(t, fd)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal("add veth:", err)
	}
	for _, name := range []string{"eth0", "peer0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "eth0" {
			addAddrs(t, fd, l, cidrs...)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
}

func addAddrs(t *testing.T, fd int, l netlink.Link, cidrs ...string) {
	t.Helper()
	h := handle(t, fd)
	for _, c := range cidrs {
		a, err := netlink.ParseAddr(c)
		if err != nil {
			t.Fatal(err)
		}
		a.Flags |= unix.IFA_F_NODAD // an IPv6 address is usable at once
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("add %s: %v", c, err)
		}
	}
}

func TestPodIP(t *testing.T) {
	t.Run("one address on eth0", func(t *testing.T) {
		fd := newNS(t)
		podLink(t, fd, "10.244.1.2/32")
		ip, err := PodIP(fd)
		if err != nil || ip != netip.MustParseAddr("10.244.1.2") {
			t.Fatalf("PodIP = %v, %v; want 10.244.1.2", ip, err)
		}
	})
	t.Run("IPv6 and loopback do not count", func(t *testing.T) {
		fd := newNS(t)
		podLink(t, fd, "10.244.1.3/24", "fd00::3/128")
		lo, err := handle(t, fd).LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		addAddrs(t, fd, lo, "10.9.9.9/32")
		if ip, err := PodIP(fd); err != nil || ip != netip.MustParseAddr("10.244.1.3") {
			t.Fatalf("PodIP = %v, %v; want 10.244.1.3", ip, err)
		}
	})
	t.Run("loopback only", func(t *testing.T) {
		fd := newNS(t) // 127.0.0.1 on lo
		lo, err := handle(t, fd).LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		addAddrs(t, fd, lo, "10.244.1.4/32") // an address on loopback is not the pod's
		if ip, err := PodIP(fd); err == nil || !strings.Contains(err.Error(), "no IPv4 address") {
			t.Fatalf("PodIP = %v, %v; want an error saying there is no address", ip, err)
		}
	})
	t.Run("eth0 without address", func(t *testing.T) {
		fd := newNS(t)
		podLink(t, fd)
		if ip, err := PodIP(fd); err == nil || !strings.Contains(err.Error(), "no IPv4 address") {
			t.Fatalf("PodIP = %v, %v; want an error saying there is no address", ip, err)
		}
	})
	t.Run("two addresses", func(t *testing.T) {
		fd := newNS(t)
		podLink(t, fd, "10.244.1.5/32", "10.244.1.6/32")
		ip, err := PodIP(fd)
		if err == nil || !strings.Contains(err.Error(), "several") ||
			!strings.Contains(err.Error(), "10.244.1.5") || !strings.Contains(err.Error(), "10.244.1.6") {
			t.Fatalf("PodIP = %v, %v; want an error naming both addresses", ip, err)
		}
	})
	t.Run("two interfaces", func(t *testing.T) {
		fd := newNS(t)
		podLink(t, fd, "10.244.1.7/32")
		peer, err := handle(t, fd).LinkByName("peer0")
		if err != nil {
			t.Fatal(err)
		}
		addAddrs(t, fd, peer, "10.244.1.8/32")
		if ip, err := PodIP(fd); err == nil || !strings.Contains(err.Error(), "several") {
			t.Fatalf("PodIP = %v, %v; want an error", ip, err)
		}
	})
	t.Run("not a namespace", func(t *testing.T) {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if ip, err := PodIP(fd); err == nil {
			t.Fatalf("PodIP of /dev/null = %v", ip)
		}
	})
}
