package measure

import (
	"fmt"
	"slices"
)

// Radius collects what the affected flows touched. Both ends of a flow count:
// a fault on the server side disrupts the client too, and the radius is about
// where disruption was felt, not where it came from.
func Radius(flows []FlowSummary) BlastRadius {
	var ids, pods, nodes []string
	for _, f := range flows {
		if !f.Affected {
			continue
		}
		ids = append(ids, f.Flow.ID)
		pods = append(pods, f.Flow.Client, f.Flow.Server)
		nodes = append(nodes, f.Flow.ClientNode, f.Flow.ServerNode)
	}
	return BlastRadius{Flows: set(ids), Pods: set(pods), Nodes: set(nodes)}
}

// set sorts and deduplicates, drops empty names (a flow may not know its
// server pod), and never returns nil so JSON shows [] rather than null.
func set(xs []string) []string {
	xs = slices.DeleteFunc(xs, func(s string) bool { return s == "" })
	slices.Sort(xs)
	xs = slices.Compact(xs)
	if xs == nil {
		xs = []string{}
	}
	return xs
}

// Summarize measures a whole trial. A disrupted control flow (at least
// minNoiseRequests bad requests) makes the trial noisy: the control is chosen so that the fault cannot reach it, so its
// outage means something else (the node, the network, the test rig) was
// misbehaving, and the other flows' outages cannot all be blamed on the fault.
func Summarize(flows []FlowSummary) Trial {
	t := Trial{Flows: flows, Radius: Radius(flows), NoisyReasons: []string{}}
	if t.Flows == nil {
		t.Flows = []FlowSummary{}
	}
	for _, f := range flows {
		if !f.Flow.Control || len(f.Outages) == 0 {
			continue
		}
		bad := 0
		for _, o := range f.Outages {
			bad += o.Failures + o.Slow
		}
		if bad < minNoiseRequests {
			continue
		}
		t.Noisy = true
		t.NoisyReasons = append(t.NoisyReasons, fmt.Sprintf(
			"control flow %s was disrupted for %.3fs in %d outage(s), %d request(s)",
			f.Flow.ID, f.DisruptionSeconds, len(f.Outages), bad))
	}
	return t
}

// minNoiseRequests is how many failed, missing or late requests on the
// control flow make a trial noisy. One alone is tolerated, as one is for a
// flow's verdict (docs/verdict.md "Inputs"): on two shared cores a single
// request can be late or lost for reasons that are neither the fault's nor
// a broken harness's, such as the node proxy the control flow shares being
// busy with the faulted flows' reconnections.
const minNoiseRequests = 2
