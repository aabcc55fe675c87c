package localk8s

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"blastradius.dev/blastradius/internal/nftpart"
)

// PartitionNodes cuts the network between every two of the named nodes,
// both ways: every packet from one node's addresses (its IP and pod CIDR)
// to another's is dropped on arrival, established connections included
// (internal/nftpart, in each node's network namespace). Each node keeps the
// API server and every node outside the set: with two names it is a failed
// link between two machines, with every node a failed shared segment.
//
// at is when the rules are live in every node. heal removes them and returns
// the instant removal began; calling it again returns the first result.
// Unlike Partition, which takes a node's whole link down, the nodes stay
// Ready unless the cut outlives the node monitor's grace.
func (c *Cluster) PartitionNodes(names ...string) (at time.Time, heal func() (time.Time, error), err error) {
	if len(names) < 2 {
		return time.Time{}, nil, errors.New("local-k8s: a partition needs two nodes")
	}
	type member struct {
		name string
		nets []*net.IPNet
		path string
	}
	var ms []member
	for _, name := range names {
		n, err := c.node(name)
		if err != nil {
			return time.Time{}, nil, err
		}
		if !n.Init.alive() {
			return time.Time{}, nil, fmt.Errorf("local-k8s: partition: %s is down", name)
		}
		nets, err := nftpart.Nets(n.IP, n.PodCIDR)
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("local-k8s: partition: %s: %w", name, err)
		}
		for _, o := range ms {
			if o.name == name {
				return time.Time{}, nil, fmt.Errorf("local-k8s: partition: %s named twice", name)
			}
		}
		ms = append(ms, member{name: name, nets: nets, path: n.netnsPath()})
	}
	var removes []func() error
	undo := func() error {
		var errs []error
		for _, r := range removes {
			errs = append(errs, r())
		}
		removes = nil
		return errors.Join(errs...)
	}
	for _, m := range ms {
		var from []*net.IPNet
		for _, o := range ms {
			if o.name != m.name {
				from = append(from, o.nets...)
			}
		}
		remove, err := installIn(m.path, from, m.nets)
		if err != nil {
			return time.Time{}, nil, errors.Join(fmt.Errorf("local-k8s: partition: %s: %w", m.name, err), undo())
		}
		removes = append(removes, remove)
	}
	at = time.Now()
	c.logf("nodes %v partitioned from each other (nftables drops in each node)", names)
	return at, sync.OnceValues(func() (time.Time, error) {
		began := time.Now()
		if err := undo(); err != nil {
			return began, fmt.Errorf("local-k8s: heal partition of %v: %w", names, err)
		}
		c.logf("partition of %v healed", names)
		return began, nil
	}), nil
}

// partitionTable names the nftables table of a partition in a node.
const partitionTable = "blastradius-partition"

// installIn installs the partition table in the network namespace at path
// (the node's namespace goes with the cluster, and the table with it).
func installIn(path string, from, self []*net.IPNet) (func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	remove, err := nftpart.Install(fd, partitionTable, self, from)
	if err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		defer f.Close()
		return remove()
	}, nil
}

// podNetNS opens the network namespace of the pod with address ip on node
// name: the namespace, among those of the node's processes (its pods'
// sandboxes and containers), that holds the address.
func (c *Cluster) podNetNS(name, ip string) (*os.File, error) {
	n, err := c.node(name)
	if err != nil {
		return nil, err
	}
	want := net.ParseIP(ip)
	if want == nil {
		return nil, fmt.Errorf("local-k8s: %q is not a pod address", ip)
	}
	nodeNS, _ := os.Stat(n.netnsPath())
	seen := map[uint64]bool{}
	for _, pid := range nodeProcs(n) {
		ino, err := nsInode(pid, "net")
		if err != nil || seen[ino] {
			continue
		}
		seen[ino] = true
		path := fmt.Sprintf("/proc/%d/ns/net", pid)
		if st, err := os.Stat(path); err == nil && nodeNS != nil && os.SameFile(st, nodeNS) {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		if hasAddr(f, want) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("local-k8s: no pod with address %s on %s", ip, name)
}

// hasAddr says whether the network namespace f has address ip.
func hasAddr(f *os.File, ip net.IP) bool {
	h, err := netlink.NewHandleAt(netns.NsHandle(int(f.Fd())))
	if err != nil {
		return false
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// DropFlow black-holes one flow inside its server pod on node name (address
// server): TCP from client to server on any of ports is dropped as it enters the pod,
// the embedded cluster's rule (nftpart.DropFlow). It returns the instant the
// rule is live and what removes it.
func (c *Cluster) DropFlow(name, server, client string, ports ...int) (time.Time, func() (time.Time, time.Duration, error), error) {
	f, err := c.podNetNS(name, server)
	if err != nil {
		return time.Time{}, nil, err
	}
	at, undo, err := nftpart.DropFlow(int(f.Fd()), net.ParseIP(client), net.ParseIP(server), ports...)
	if err != nil {
		f.Close()
		return time.Time{}, nil, fmt.Errorf("local-k8s: drop flow to %s: %w", server, err)
	}
	c.logf("flow %s -> %s:%v black-holed in the server pod", client, server, ports)
	return at, closing(f, undo), nil
}

// DropPod cuts the pod with address pod on node name off the network,
// loopback excepted (nftpart.DropPod).
func (c *Cluster) DropPod(name, pod string) (time.Time, func() (time.Time, time.Duration, error), error) {
	f, err := c.podNetNS(name, pod)
	if err != nil {
		return time.Time{}, nil, err
	}
	at, undo, err := nftpart.DropPod(int(f.Fd()))
	if err != nil {
		f.Close()
		return time.Time{}, nil, fmt.Errorf("local-k8s: drop pod %s: %w", pod, err)
	}
	c.logf("pod %s cut off (every packet but loopback dropped)", pod)
	return at, closing(f, undo), nil
}

// closing runs undo, then closes the namespace it acted in.
func closing(f *os.File, undo nftpart.Undo) func() (time.Time, time.Duration, error) {
	return func() (time.Time, time.Duration, error) {
		defer f.Close()
		return undo()
	}
}
