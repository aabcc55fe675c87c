package scenario

import (
	"fmt"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

// Partitions (nftables drops: a black hole, not a reject).
const (
	// FaultPartition cuts the target node off from its peer, both ways.
	FaultPartition = "node-partition"
	// FaultSegmentPartition is a fault on the target node's link that takes
	// the whole shared segment down with it: every node is cut off from
	// every other. It exists to show a fault reaching beyond its node.
	FaultSegmentPartition = "segment-partition"
)

func init() {
	registerFault(&FaultKind{
		Name: FaultPartition, Fields: []string{"peer", "recoverAfter"}, Target: true, Needs: need(CapPartitionNodes),
		Doc:   "every packet between the node and its peer (default the first other node) is dropped, both ways; healed after recoverAfter",
		Scope: func(e *FaultEnv) []string { return []string{e.Target, e.peer()} },
		Inject: func(e *FaultEnv) error {
			peer := e.peer()
			if peer == "" {
				return fmt.Errorf("fault %s needs two nodes", FaultPartition)
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			pt, err := infraCap[Partitioner](e, "partition two nodes")
			if err != nil {
				return err
			}
			at, heal, err := pt.Partition(e.Target, peer)
			if err != nil {
				return err
			}
			return e.holdPartition(at, heal, e.Target+"<->"+peer, "every packet between "+e.Target+" and "+peer+" dropped")
		},
	})
	registerFault(&FaultKind{
		Name: FaultSegmentPartition, Fields: []string{"recoverAfter"}, Target: true, Needs: need(CapPartitionSegment),
		Doc: "the node's link fault takes the shared segment with it: every node is cut off from every other; healed after recoverAfter",
		Reach: func(_ Scenario, mode string) (Reach, string) {
			if mode == "ambient" {
				// Every node proxy carries tunnels across the cut segment and
				// serves its node's local traffic too: measured, node-1's
				// proxy stalled every same-node flow for ~350 ms at the heal.
				return ReachAll, "every link between nodes is cut, and every node proxy, which also carries its node's local traffic, has tunnels across them"
			}
			return ReachLinks, "every link between nodes is cut"
		},
		Inject: func(e *FaultEnv) error {
			if err := e.WaitInject(); err != nil {
				return err
			}
			pt, err := infraCap[SegmentPartitioner](e, "partition the nodes' segment")
			if err != nil {
				return err
			}
			at, heal, err := pt.PartitionAll()
			if err != nil {
				return err
			}
			return e.holdPartition(at, heal, e.Target, "every node cut off from every other (shared segment down)")
		},
	})
}

func (e *FaultEnv) holdPartition(at time.Time, heal func() (time.Time, error), target, detail string) error {
	i := e.Record(results.FaultRecord{Kind: e.Fault.Kind, Target: target, Inject: at, Detail: detail})
	e.Logf("fault: %s", detail)
	var serr error
	if e.Fault.RecoverAfter > 0 {
		serr = e.Sleep(at.Add(e.Fault.RecoverAfter))
	} else {
		// Held to the end of load, then healed so it cannot outlive the trial.
		serr = e.Sleep(e.Start.Add(e.Scenario.Duration))
	}
	// Healed even when the trial is ending: a partition must not outlive it.
	back, err := heal()
	if err != nil {
		return err
	}
	if e.Fault.RecoverAfter > 0 && serr == nil {
		e.Recovered(i, back)
		e.Logf("fault: partition healed after %s", ms(back.Sub(at)))
	}
	return serr
}

// peer is the other side of a partition.
func (e *FaultEnv) peer() string {
	if e.Fault.Peer != "" {
		return e.Fault.Peer
	}
	for _, n := range e.Nodes() {
		if n != e.Target {
			return n
		}
	}
	return ""
}
