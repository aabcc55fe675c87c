package localk8s

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Host sysctls Up sets (and Down restores): the host routes between the
// bridge and the pods it reaches through the nodes.
var hostSysctls = map[string]string{
	"/proc/sys/net/ipv4/ip_forward": "1",
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(path, v string) error { return os.WriteFile(path, []byte(v), 0o644) }

// setupHostNet creates the bridge and sets the host's forwarding, recording
// what it changes first.
func setupHostNet(sf *stateFile) error {
	if _, err := netlink.LinkByName(bridgeName); err == nil {
		return fmt.Errorf("bridge %s exists: another local-k8s cluster is up (blastradius cluster down --dir <its dir>) or a previous one was not torn down", bridgeName)
	}
	prev := map[string]string{}
	for p, want := range hostSysctls {
		v, err := readSysctl(p)
		if err != nil {
			return err
		}
		if v != want {
			prev[p] = v
		}
	}
	policy, err := forwardPolicy()
	if err != nil {
		return err
	}
	if policy == "ACCEPT" {
		policy = ""
	}
	if err := sf.update(func(s *state) {
		s.Bridge = bridgeName
		s.Sysctls = prev
		s.ForwardPolicy = policy
	}); err != nil {
		return err
	}
	for p, want := range hostSysctls {
		if err := writeSysctl(p, want); err != nil {
			return err
		}
	}
	if policy != "" {
		if out, err := exec.Command("iptables", "-P", "FORWARD", "ACCEPT").CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -P FORWARD ACCEPT: %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("bridge %s: %w", bridgeName, err)
	}
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: bridgeIP, Mask: net.CIDRMask(24, 32)}}); err != nil {
		return fmt.Errorf("bridge %s address: %w", bridgeName, err)
	}
	return netlink.LinkSetUp(br)
}

// forwardPolicy reads the policy of the host's iptables FORWARD chain.
func forwardPolicy() (string, error) {
	out, err := exec.Command("iptables", "-S", "FORWARD").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("iptables -S FORWARD: %v: %s", err, strings.TrimSpace(string(out)))
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "-P" && f[1] == "FORWARD" {
			return f[2], nil
		}
	}
	return "", errors.New("iptables -S FORWARD: no policy line")
}

// setupNodeNet creates node n's network namespace (named, so it outlives
// the node's processes like a machine's NIC outlives a crash) and its veth
// pair: eth0 with the node IP inside, the host end on the bridge. Routes:
// in the node, other nodes' pod subnets through those nodes; on the host,
// each pod subnet through its node.
func setupNodeNet(n nodeState, all []nodeState) error {
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	ns, err := newNamedNetns(n.Netns)
	if err != nil {
		return fmt.Errorf("netns %s: %w", n.Netns, err)
	}
	defer ns.Close()
	br, err := netlink.LinkByName(bridgeName)
	if err != nil {
		return err
	}
	peer := "lkp-" + fmt.Sprint(n.Index)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.HostVeth, MasterIndex: br.Attrs().Index}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: %w", n.HostVeth, err)
	}
	pl, err := netlink.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetNsFd(pl, int(ns)); err != nil {
		return err
	}
	host, err := netlink.LinkByName(n.HostVeth)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return err
	}
	eth, err := h.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := h.LinkSetName(eth, "eth0"); err != nil {
		return err
	}
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(n.IP).To4(), Mask: net.CIDRMask(24, 32)}}); err != nil {
		return err
	}
	if err := h.LinkSetUp(eth); err != nil {
		return err
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: bridgeIP}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	for _, o := range all {
		if o.Name == n.Name {
			continue
		}
		_, dst, _ := net.ParseCIDR(o.PodCIDR)
		if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: dst, Gw: net.ParseIP(o.IP).To4()}); err != nil {
			return fmt.Errorf("route to %s: %w", o.PodCIDR, err)
		}
	}
	_, dst, _ := net.ParseCIDR(n.PodCIDR)
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: dst, Gw: net.ParseIP(n.IP).To4()}); err != nil {
		return fmt.Errorf("host route to %s: %w", n.PodCIDR, err)
	}
	return nil
}

// newNamedNetns creates a network namespace held by a bind mount at
// /run/netns/<name>, as `ip netns add` does, without moving the caller:
// the work runs on a locked thread that is discarded if it cannot return
// to the host namespace.
func newNamedNetns(name string) (netns.NsHandle, error) {
	path := filepath.Join("/run/netns", name)
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		f.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			os.Remove(path)
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		err = unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
		var h netns.NsHandle
		if err == nil {
			h, err = netns.GetFromPath(path)
		}
		if serr := netns.Set(orig); serr == nil {
			runtime.UnlockOSThread()
		} // else: the thread stays locked and dies with this goroutine
		ch <- result{h, err}
	}()
	r := <-ch
	return r.h, r.err
}

// inNetns runs fn on a thread inside the network namespace at path (the
// fork of a child from that thread puts the child in the namespace).
func inNetns(path string, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- err
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr == nil {
			runtime.UnlockOSThread()
		}
		ch <- err
	}()
	return <-ch
}

// deleteNetns unmounts and removes a named network namespace; the
// namespace itself goes when its last process and mount are gone.
func deleteNetns(name string) error { return unmountAndRemove(filepath.Join("/run/netns", name)) }

// unmountAndRemove detaches a mount (if it is one) and removes the mount
// point file.
func unmountAndRemove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	// A veth goes away with its peer's namespace, possibly between the
	// lookup and the delete.
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// setPartitioned takes a node's host veth down (the node loses the
// apiserver and every other node, its processes keep running) or up.
func setPartitioned(n nodeState, partitioned bool) error {
	l, err := netlink.LinkByName(n.HostVeth)
	if err != nil {
		return err
	}
	if partitioned {
		return netlink.LinkSetDown(l)
	}
	return netlink.LinkSetUp(l)
}
