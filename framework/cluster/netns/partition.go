package netns

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"blastradius.dev/blastradius/internal/nftpart"
)

// Partition cuts the network between nodes a and b ("node-1", "node-3"):
// every packet between a's addresses (node IP and pod CIDR) and b's is
// dropped, both ways, established connections included. Traffic between
// either node and any third node, and between a node and the sandbox (where
// the readiness probes come from, as a kubelet's would from the node itself),
// is untouched: it is a failed link between two machines, not a failed
// machine. The rules are internal/nftpart's: dropped on arrival, before
// conntrack.
//
// at is when the rules are live in both nodes (the one installed first was
// live a few ms earlier, cutting one direction only). heal removes them and
// returns the instant removal began; calling it again returns the first
// result.
func (c *Cluster) Partition(a, b string) (at time.Time, heal func() (time.Time, error), err error) {
	na, ok := c.Node(a)
	if !ok {
		return time.Time{}, nil, fmt.Errorf("partition: no node %q", a)
	}
	nb, ok := c.Node(b)
	if !ok {
		return time.Time{}, nil, fmt.Errorf("partition: no node %q", b)
	}
	if na == nb {
		return time.Time{}, nil, fmt.Errorf("partition: %s from itself", a)
	}
	return c.partition(fmt.Sprintf("partition %s/%s", a, b), map[*Node][]*Node{na: {nb}, nb: {na}},
		func(peer *Node) string { return "blastradius-partition-" + peer.Name })
}

// PartitionAll fails the shared segment: every node is cut off from every
// other node (node IPs and pod CIDRs alike), while traffic inside one node,
// and between the nodes and the sandbox, keeps working. Semantics are
// Partition's; it uses its own tables, so it can overlap a Partition and each
// heals separately.
func (c *Cluster) PartitionAll() (at time.Time, heal func() (time.Time, error), err error) {
	if len(c.Nodes) < 2 {
		return time.Time{}, nil, errors.New("partition all: fewer than 2 nodes")
	}
	peers := map[*Node][]*Node{}
	for _, n := range c.Nodes {
		for _, o := range c.Nodes {
			if o != n {
				peers[n] = append(peers[n], o)
			}
		}
	}
	return c.partition("partition all", peers, func(*Node) string { return "blastradius-partition-all" })
}

// partition installs, in each node of peers, one table (named by table(peer)
// for its first peer: a table holds all of that node's peers) that drops
// everything arriving from those peers.
func (c *Cluster) partition(what string, peers map[*Node][]*Node, table func(peer *Node) string) (time.Time, func() (time.Time, error), error) {
	type install struct {
		n      *Node
		table  string
		remove func() error
	}
	var done []install
	// On failure the rules already installed come out again, so a failed
	// fault never leaves half a partition behind.
	undo := func() error {
		var errs []error
		for _, in := range done {
			if err := in.remove(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", in.n.Name, err))
			}
			c.partMu.Lock()
			delete(c.partitions, in.n.Name+"/"+in.table)
			c.partMu.Unlock()
		}
		return errors.Join(errs...)
	}
	// Nodes in index order: the same call always installs in the same order.
	for _, n := range c.Nodes {
		ps, ok := peers[n]
		if !ok {
			continue
		}
		if n.Crashed() {
			_ = undo()
			return time.Time{}, nil, fmt.Errorf("%s: %s is down", what, n.Name)
		}
		name := table(ps[0])
		key := n.Name + "/" + name
		c.partMu.Lock()
		if c.partitions == nil {
			c.partitions = map[string]bool{}
		}
		dup := c.partitions[key]
		c.partitions[key] = true
		c.partMu.Unlock()
		if dup {
			_ = undo()
			return time.Time{}, nil, fmt.Errorf("%s: already in place on %s", what, n.Name)
		}
		var from []*net.IPNet
		for _, o := range ps {
			from = append(from, host32(o.IP), o.PodCIDR)
		}
		remove, err := nftpart.Install(n.fd, name, []*net.IPNet{host32(n.IP), n.PodCIDR}, from)
		if err != nil {
			c.partMu.Lock()
			delete(c.partitions, key)
			c.partMu.Unlock()
			_ = undo()
			return time.Time{}, nil, fmt.Errorf("%s: %s: %w", what, n.Name, err)
		}
		done = append(done, install{n: n, table: name, remove: remove})
	}
	return time.Now(), sync.OnceValues(func() (time.Time, error) {
		began := time.Now()
		if err := undo(); err != nil {
			return began, fmt.Errorf("heal %s: %w", what, err)
		}
		return began, nil
	}), nil
}
