package netns

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Partition cuts the network between nodes a and b ("node-1", "node-3"):
// every packet between a's addresses (node IP and pod CIDR) and b's is
// dropped, both ways, established connections included. Traffic between
// either node and any third node, and between a node and the sandbox (where
// the readiness probes come from, as a kubelet's would from the node itself),
// is untouched: it is a failed link between two machines, not a failed
// machine.
//
// The drop sits in each node's prerouting hook at raw priority, matching
// packets that arrive from the peer and are addressed to this node or its
// pods. Prerouting sees forwarded pod traffic and traffic for the node itself
// alike, and runs before conntrack, so established flows are cut too.
// Dropping on arrival rather than in the sender's output hook makes it a true
// black hole: a locally generated packet dropped in output fails the sender's
// send with EPERM, which no real partition does.
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
		n    *Node
		conn *nftables.Conn
		t    *nftables.Table
	}
	var done []install
	// On failure the rules already installed come out again, so a failed
	// fault never leaves half a partition behind.
	undo := func() error {
		var errs []error
		for _, in := range done {
			in.conn.DelTable(in.t)
			if err := in.conn.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", in.n.Name, err))
			}
			c.partMu.Lock()
			delete(c.partitions, in.n.Name+"/"+in.t.Name)
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
		conn, err := nftables.New(nftables.WithNetNSFd(n.fd))
		if err != nil {
			c.partMu.Lock()
			delete(c.partitions, key)
			c.partMu.Unlock()
			_ = undo()
			return time.Time{}, nil, fmt.Errorf("%s: %s: %w", what, n.Name, err)
		}
		t := conn.AddTable(&nftables.Table{Name: name, Family: nftables.TableFamilyIPv4})
		ch := conn.AddChain(&nftables.Chain{Name: "drop", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
		self := []*net.IPNet{host32(n.IP), n.PodCIDR}
		for _, o := range ps {
			for _, src := range []*net.IPNet{host32(o.IP), o.PodCIDR} {
				for _, dst := range self {
					ex := append(matchNet(12, src), matchNet(16, dst)...)
					conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(ex, &expr.Verdict{Kind: expr.VerdictDrop})})
				}
			}
		}
		if err := conn.Flush(); err != nil {
			c.partMu.Lock()
			delete(c.partitions, key)
			c.partMu.Unlock()
			_ = undo()
			return time.Time{}, nil, fmt.Errorf("%s: %s: %w", what, n.Name, err)
		}
		done = append(done, install{n: n, conn: conn, t: t})
	}
	at := time.Now()
	var once sync.Once
	var began time.Time
	var herr error
	heal := func() (time.Time, error) {
		once.Do(func() {
			began = time.Now()
			if err := undo(); err != nil {
				herr = fmt.Errorf("heal %s: %w", what, err)
			}
		})
		return began, herr
	}
	return at, heal, nil
}

// matchNet matches the IPv4 address at offset off of the network header (12:
// source, 16: destination) against the network n.
func matchNet(off uint32, n *net.IPNet) []expr.Any {
	ex := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}}
	if ones, _ := n.Mask.Size(); ones < 32 {
		ex = append(ex, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: []byte(n.Mask), Xor: []byte{0, 0, 0, 0}})
	}
	return append(ex, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.IP.To4().Mask(n.Mask)})
}
