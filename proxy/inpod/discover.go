package inpod

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// HostNetNSDir is where containerd's CNI setup leaves a bind mount of each
// pod sandbox's network namespace (cni-<uuid>); the node agent mounts the
// host's copy at the same place.
const HostNetNSDir = "/var/run/netns"

// NetNS is a network namespace found by FindNetNS. The caller owns FD.
type NetNS struct {
	Path string
	FD   int
	Ino  uint64 // identifies the namespace (the same for every path to it)
}

// NetNSScan is what FindNetNS found.
type NetNSScan struct {
	// Found maps each wanted IP to the one namespace that has it.
	Found map[netip.Addr]NetNS
	// Ambiguous lists wanted IPs that several namespaces have (a stale
	// sandbox not yet torn down): none is trusted, the caller retries.
	Ambiguous map[netip.Addr][]string
	// Skipped says why entries were not looked into (not a network
	// namespace, could not be entered), for a caller explaining a miss.
	Skipped []string
	// Scanned is how many network namespaces were looked into.
	Scanned int
}

// Close closes every descriptor in Found.
func (s *NetNSScan) Close() {
	for ip, ns := range s.Found {
		unix.Close(ns.FD)
		delete(s.Found, ip)
	}
}

// FindNetNS looks for the network namespaces that hold the given IPv4
// addresses: it opens every entry of dir (HostNetNSDir on a node), enters it
// and reads its interface addresses. The caller's own namespace is never a
// match: the node agent must not mistake its own pod, or the node, for an
// application pod. An unreadable dir is an error; an entry that cannot be
// used is only listed in Skipped.
func FindNetNS(dir string, ips []netip.Addr) (*NetNSScan, error) {
	want := map[netip.Addr]bool{}
	for _, ip := range ips {
		want[ip.Unmap()] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("inpod: find pod network namespaces: %w", err)
	}
	scan := &NetNSScan{Found: map[netip.Addr]NetNS{}, Ambiguous: map[netip.Addr][]string{}}
	if len(want) == 0 {
		return scan, nil
	}
	self, selfErr := ownNetNS()
	holders := map[netip.Addr][]NetNS{}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		ns, ok, why := openNetNS(p)
		if !ok {
			scan.Skipped = append(scan.Skipped, e.Name()+": "+why)
			continue
		}
		if selfErr == nil && ns.Ino == self {
			unix.Close(ns.FD)
			continue
		}
		scan.Scanned++
		addrs, err := netNSAddrs(ns.FD)
		if err != nil {
			unix.Close(ns.FD)
			scan.Skipped = append(scan.Skipped, e.Name()+": "+err.Error())
			continue
		}
		used := false
		for _, a := range addrs {
			if want[a] {
				holders[a] = append(holders[a], ns)
				used = true
			}
		}
		if !used {
			unix.Close(ns.FD)
		}
	}
	// Each opened entry owns one descriptor, which may hold several wanted
	// IPs (pods never share a namespace, but nothing here relies on it).
	handed := map[int]bool{}
	for ip, hs := range holders {
		distinct := map[uint64]bool{}
		for _, h := range hs {
			distinct[h.Ino] = true
		}
		if len(distinct) > 1 {
			for _, h := range hs {
				scan.Ambiguous[ip] = append(scan.Ambiguous[ip], filepath.Base(h.Path))
			}
			sort.Strings(scan.Ambiguous[ip])
			continue
		}
		ns := hs[0]
		if handed[ns.FD] {
			fd, err := unix.FcntlInt(uintptr(ns.FD), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				scan.Skipped = append(scan.Skipped, filepath.Base(ns.Path)+": dup: "+err.Error())
				continue
			}
			ns.FD = fd
		} else {
			handed[ns.FD] = true
		}
		scan.Found[ip] = ns
	}
	// Close what was not handed out: the holders of ambiguous IPs, and the
	// other paths to a namespace reached twice.
	closed := map[int]bool{}
	for _, hs := range holders {
		for _, h := range hs {
			if !handed[h.FD] && !closed[h.FD] {
				closed[h.FD] = true
				unix.Close(h.FD)
			}
		}
	}
	return scan, nil
}

// openNetNS opens p if it is a network namespace.
func openNetNS(p string) (NetNS, bool, string) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return NetNS{}, false, err.Error()
	}
	if err := checkNetNS(fd); err != nil {
		// A file whose bind mount is gone (a torn-down sandbox) is an
		// ordinary empty file.
		unix.Close(fd)
		return NetNS{}, false, "not a network namespace"
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return NetNS{}, false, err.Error()
	}
	return NetNS{Path: p, FD: fd, Ino: st.Ino}, true, ""
}

// ownNetNS is the inode of the caller's network namespace.
func ownNetNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// netNSAddrs lists the IPv4 addresses of every interface inside nsFD, but
// loopback's.
func netNSAddrs(nsFD int) ([]netip.Addr, error) {
	var out []netip.Addr
	err := netnsx.Do(nsFD, func() error {
		// The netlink socket behind InterfaceAddrs is opened on this
		// thread, so it lists the namespace's own addresses.
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.Is4() && !ip.IsLoopback() {
				out = append(out, ip)
			}
		}
		return nil
	})
	if err != nil {
		return nil, errors.New("read addresses: " + err.Error())
	}
	return out, nil
}
