package localk8s

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

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
	var once sync.Once
	var began time.Time
	var herr error
	heal = func() (time.Time, error) {
		once.Do(func() {
			began = time.Now()
			if err := undo(); err != nil {
				herr = fmt.Errorf("local-k8s: heal partition of %v: %w", names, err)
			}
			c.logf("partition of %v healed", names)
		})
		return began, herr
	}
	return at, heal, nil
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
