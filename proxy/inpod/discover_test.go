package inpod

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// addrNS is a fresh network namespace with cidr on its eth0 (one end of a
// veth pair whose other end stays inside, like a pod's interface whose peer
// is on the node), loopback up.
func addrNS(t *testing.T, cidr string) (fd int, ino uint64) {
	t.Helper()
	fd, ino = podNS(t)
	h := nlHandle(t, fd)
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
		t.Fatal("add veth:", err)
	}
	for _, name := range []string{"lo", "eth0", "peer0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "eth0" && cidr != "" {
			a, err := netlink.ParseAddr(cidr)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.AddrAdd(l, a); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return fd, ino
}

// bindNS bind-mounts the namespace fd at dir/name, as containerd's CNI setup
// pins a sandbox's namespace in /var/run/netns.
func bindNS(t *testing.T, dir, name string, fd int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", fd), p, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount netns at %s: %v", p, err)
	}
	t.Cleanup(func() { unix.Unmount(p, unix.MNT_DETACH) })
	return p
}

func inoOf(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestFindNetNSByPodIP(t *testing.T) {
	dir := t.TempDir()
	a, aIno := addrNS(t, "10.7.0.2/24")
	b, bIno := addrNS(t, "10.7.0.3/24")
	c, _ := addrNS(t, "10.7.0.4/24")
	bindNS(t, dir, "cni-a", a)
	bindNS(t, dir, "cni-b", b)
	bindNS(t, dir, "cni-b-again", b) // one namespace, two paths
	bindNS(t, dir, "cni-c", c)
	// A sandbox torn down leaves at most an empty file; a directory is not
	// a namespace either.
	os.WriteFile(filepath.Join(dir, "cni-stale"), nil, 0o444)
	os.Mkdir(filepath.Join(dir, "subdir"), 0o755)

	ipA, ipB, absent := netip.MustParseAddr("10.7.0.2"), netip.MustParseAddr("10.7.0.3"), netip.MustParseAddr("10.7.0.9")
	scan, err := FindNetNS(dir, []netip.Addr{ipA, ipB, absent})
	if err != nil {
		t.Fatal(err)
	}
	defer scan.Close()
	if len(scan.Found) != 2 {
		t.Fatalf("found %v, want 10.7.0.2 and 10.7.0.3", scan.Found)
	}
	if ns := scan.Found[ipA]; ns.Ino != aIno || inoOf(t, ns.FD) != aIno || filepath.Base(ns.Path) != "cni-a" {
		t.Errorf("10.7.0.2 in %+v, want cni-a (inode %d)", ns, aIno)
	}
	if ns := scan.Found[ipB]; ns.Ino != bIno || inoOf(t, ns.FD) != bIno {
		t.Errorf("10.7.0.3 in %+v, want inode %d", ns, bIno)
	}
	if err := checkNetNS(scan.Found[ipA].FD); err != nil {
		t.Errorf("handed fd: %v", err)
	}
	if scan.Scanned != 4 {
		t.Errorf("scanned %d namespaces, want 4 (cni-b twice)", scan.Scanned)
	}
	if len(scan.Skipped) != 1 || !strings.HasPrefix(scan.Skipped[0], "cni-stale: not a network namespace") {
		t.Errorf("skipped %q", scan.Skipped)
	}
	if len(scan.Ambiguous) != 0 {
		t.Errorf("ambiguous %v", scan.Ambiguous)
	}
	fds := []int{scan.Found[ipA].FD, scan.Found[ipB].FD}
	scan.Close()
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			t.Errorf("fd %d still open after Close", fd)
		}
	}
}

// No descriptor is leaked, whatever is found.
func TestFindNetNSLeaksNothing(t *testing.T) {
	dir := t.TempDir()
	for i := range 5 {
		fd, _ := addrNS(t, fmt.Sprintf("10.8.0.%d/24", i+2))
		bindNS(t, dir, fmt.Sprintf("cni-%d", i), fd)
	}
	dup, _ := addrNS(t, "10.8.0.2/24") // the same IP as cni-0
	bindNS(t, dir, "cni-dup", dup)
	before := openFDs(t)
	for range 3 {
		scan, err := FindNetNS(dir, []netip.Addr{netip.MustParseAddr("10.8.0.2"), netip.MustParseAddr("10.8.0.4"), netip.MustParseAddr("10.8.0.99")})
		if err != nil {
			t.Fatal(err)
		}
		if len(scan.Found) != 1 || len(scan.Ambiguous) != 1 {
			t.Fatalf("found %v ambiguous %v", scan.Found, scan.Ambiguous)
		}
		if got := scan.Ambiguous[netip.MustParseAddr("10.8.0.2")]; !slices.Equal(got, []string{"cni-0", "cni-dup"}) {
			t.Errorf("ambiguous holders %v", got)
		}
		scan.Close()
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open before, %d after", before, after)
	}
}

// The caller's own namespace is never taken for a pod's: the agent's pod
// (and so its IP) must not be captured by its own rules.
func TestFindNetNSSkipsItsOwnNamespace(t *testing.T) {
	dir := t.TempDir()
	own, _ := addrNS(t, "10.9.0.2/24")
	bindNS(t, dir, "cni-own", own)
	var scan *NetNSScan
	err := netnsx.Do(own, func() (err error) {
		scan, err = FindNetNS(dir, []netip.Addr{netip.MustParseAddr("10.9.0.2")})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer scan.Close()
	if len(scan.Found) != 0 || scan.Scanned != 0 {
		t.Errorf("found %v in the caller's own namespace (scanned %d)", scan.Found, scan.Scanned)
	}
}

func TestFindNetNSBadDir(t *testing.T) {
	_, err := FindNetNS(filepath.Join(t.TempDir(), "missing"), []netip.Addr{netip.MustParseAddr("10.0.0.1")})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing dir: %v", err)
	}
	scan, err := FindNetNS(t.TempDir(), nil)
	if err != nil || len(scan.Found) != 0 {
		t.Errorf("nothing wanted: %v %v", scan, err)
	}
}

// hasRedirect reports whether the redirect table is in namespace fd.
func hasRedirect(t *testing.T, fd int) bool {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == RedirectTable {
			return true
		}
	}
	return false
}

// redirectRules counts the rules of each chain of the redirect table in fd.
func redirectRules(t *testing.T, fd int) map[string]int {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, ch := range chains {
		if ch.Table.Name != RedirectTable {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		out[ch.Name] = len(rules)
	}
	return out
}
