package scenario

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"blastradius.dev/blastradius/framework/evidence"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// FaultBlackHole drops packets for exactly the given hole lengths: the
// measurement's ground truth.
const FaultBlackHole = "blackhole"

// What a black hole drops (Fault.Drop).
const (
	// DropFlow: the flow's own packets, dropped as they enter its server
	// pod; the flow's client and every other flow work on.
	DropFlow = "flow"
	// DropClientPod: every packet in and out of the flow's client pod but
	// its loopback traffic, as when the pod's network is gone: every flow of
	// that client is in the hole.
	DropClientPod = "client-pod"
)

// HBONEPort is where ambient mode's tunnels enter a pod (ztunnel's inbound
// port).
const HBONEPort = 15008

// DropKinds lists the values of Fault.Drop.
var DropKinds = []string{DropFlow, DropClientPod}

func init() {
	registerFault(&FaultKind{
		Name: FaultBlackHole, Fields: []string{"flow", "holes", "gap", "drop"},
		Needs: func(f Fault) []Capability {
			if f.Drop == DropClientPod {
				return []Capability{CapDropPod}
			}
			return []Capability{CapDropFlow}
		},
		Doc: "one flow's packets (drop: flow, the default) or every packet in and out of its client pod (drop: client-pod) " +
			"are dropped (nftables) for exactly each of the given hole lengths: ground truth for the measurement",
		Scope: func(e *FaultEnv) []string {
			f := e.blackHoleFlow()
			switch {
			case f == nil:
				return nil
			case e.Fault.Drop == DropClientPod:
				return []string{nodeName(f.ClientNode)}
			}
			return []string{nodeName(f.ClientNode), nodeName(f.ServerNode)}
		},
		Inject: func(e *FaultEnv) error {
			f := e.Fault
			flow := e.blackHoleFlow()
			if flow == nil {
				return fmt.Errorf("black hole: no flow %q", f.Flow)
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			drop, target, what, err := e.blackHoleDrop(flow)
			if err != nil {
				return err
			}
			tap := e.openHoleTap(flow)
			if tap != nil {
				defer tap.close()
			}
			for i, d := range f.Holes {
				at, undo, err := drop()
				if err != nil {
					return err
				}
				rec := results.FaultRecord{Kind: FaultBlackHole, Target: target, Inject: at, Detail: what + " for " + d.String()}
				// Hold the hole for exactly d from the instant the rule went live.
				serr := e.Sleep(at.Add(d))
				end, took, uerr := undo()
				if uerr != nil {
					return uerr
				}
				if tap != nil {
					// Read after the drop is gone, so that reading the
					// pod's socket table (tens of milliseconds with
					// thousands of sockets) never lengthens the hole.
					tap.tap.HoleClosing()
				}
				rec.Recover = &end
				rec.Detail += fmt.Sprintf(" (rule removal took %s)", ms(took))
				e.Logf("fault: black hole %d/%d on %s: %s (ground truth %s)", i+1, len(f.Holes), target, d, ms(end.Sub(at)))
				gerr := serr
				if gerr == nil {
					gerr = e.Sleep(end.Add(f.Gap))
				}
				// The record waits for the gap: the tap reads, up to the next
				// hole, when the pod's connections came back.
				if tap != nil {
					rec.Wire = tap.resumed(at, end)
				}
				e.Record(rec)
				if gerr != nil {
					return gerr
				}
			}
			return nil
		},
	})
}

// blackHoleFlow is the flow the black hole aims at: the named one, or the
// first that is not the control flow.
func (e *FaultEnv) blackHoleFlow() *plannedFlow {
	for i := range e.plan.Flows {
		if e.plan.Flows[i].ID == e.Fault.Flow || (e.Fault.Flow == "" && !e.plan.Flows[i].Control) {
			return &e.plan.Flows[i]
		}
	}
	return nil
}

// openHole opens one hole and returns the instant it went live and what
// closes it (a FlowDropper's DropFlow or a PodDropper's DropPod).
type openHole func() (time.Time, func() (time.Time, time.Duration, error), error)

// blackHoleDrop returns what opens one hole, the fault records' target
// (holeTarget) and a description of the drop.
func (e *FaultEnv) blackHoleDrop(flow *plannedFlow) (open openHole, target, what string, err error) {
	target = holeTarget(e.Fault, *flow)
	if e.Fault.Drop == DropClientPod {
		d, err := infraCap[PodDropper](e, "drop a pod's packets")
		if err != nil {
			return nil, "", "", err
		}
		open = func() (time.Time, func() (time.Time, time.Duration, error), error) { return d.DropPod(flow.Client) }
		return open, target, "drop every packet in and out of pod " + flow.Client + " but loopback", nil
	}
	d, err := infraCap[FlowDropper](e, "drop a flow's packets")
	if err != nil {
		return nil, "", "", err
	}
	port := HTTPPort
	if flow.Kind.Profile == ProfileStream {
		port = TCPPort
	}
	ports := []int{port}
	what = "drop " + flow.Client + " -> " + flow.Server + ":" + strconv.Itoa(port)
	if BaseMode(e.Mode) == "ambient" {
		// The flow's packets cross the network inside the two pods' HBONE
		// tunnel, and the server pod's proxy hands the stream to the app
		// from the pod's own address: only the tunnel carries the flow
		// between the pods. Every flow between the same two pods shares it.
		ports = append(ports, HBONEPort)
		what += " and its HBONE tunnel (:" + strconv.Itoa(HBONEPort) + ", shared by every flow between the two pods)"
	}
	open = func() (time.Time, func() (time.Time, time.Duration, error), error) {
		return d.DropFlow(flow.Server, flow.Client, ports...)
	}
	return open, target, what, nil
}

// holeTap is a packet tap in a black-holed client pod's namespace, naming
// the peers it saw by pod.
type holeTap struct {
	tap   *evidence.Tap
	names map[netip.Addr]string
	drops int
	logf  func(string, ...any)
}

// openHoleTap starts a packet tap in the client pod of a client-pod black
// hole where the cluster can tap a pod; nil elsewhere, or if it cannot
// start (the holes' ends are then placed without it, and the log says why).
func (e *FaultEnv) openHoleTap(flow *plannedFlow) *holeTap {
	tp, ok := e.Infra.(PodTapper)
	if e.Fault.Drop != DropClientPod || !ok {
		return nil
	}
	t, names, err := tp.TapPod(flow.Client)
	if err != nil {
		e.Logf("black hole: %v; hole ends are placed without it", err)
		return nil
	}
	return &holeTap{tap: t, names: names, logf: e.Logf}
}

// resumed is when the pod's connections with each peer moved again after
// the hole from at to end, by pod name.
func (h *holeTap) resumed(at, end time.Time) []results.WireResume {
	until := time.Now()
	rs := h.tap.Resumed(at, end, until)
	drops, err := h.tap.Health()
	if err != nil {
		h.logf("black hole: packet tap stopped: %v", err)
	}
	newDrops := drops - h.drops
	h.drops = drops
	out := make([]results.WireResume, 0, len(rs))
	for _, r := range rs {
		w := results.WireResume{Peer: r.Peer.String(), Until: until, Connections: r.Connections, Stuck: r.Stuck, TapDrops: newDrops}
		if n, ok := h.names[r.Peer]; ok {
			w.Peer = n
		}
		if !r.At.IsZero() {
			w.Resumed, w.Last = ptr(r.At), ptr(r.Last)
		}
		out = append(out, w)
	}
	return out
}

func (h *holeTap) close() {
	if err := h.tap.Close(); err != nil {
		h.logf("black hole: close packet tap: %v", err)
	}
}

// podTargetPrefix marks a black hole record's target as a pod.
const podTargetPrefix = "pod/"

// holeTarget is what a black hole's fault records name as their target: the
// flow for a per-flow drop, "pod/<client>" for a client-pod drop.
func holeTarget(f Fault, flow plannedFlow) string {
	if f.Drop == DropClientPod {
		return podTargetPrefix + flow.Client
	}
	return flow.ID
}

// inHole says whether a black hole's fault record covers a flow: the flow it
// names, or any flow whose client is the pod it names (the control flow has
// a client of its own, so never).
func inHole(f results.FaultRecord, m measure.FlowMeta) bool {
	if pod, ok := strings.CutPrefix(f.Target, podTargetPrefix); ok {
		return m.Client == pod && !m.Control
	}
	return m.ID == f.Target
}

// holeFlowCount is how many flows each of the scenario's black holes covers
// in plan p: one per-flow drop covers its flow, a client-pod drop every
// flow of that client.
func holeFlowCount(sc Scenario, p plan) int {
	e := FaultEnv{Fault: sc.Fault, plan: p}
	f := e.blackHoleFlow()
	if f == nil {
		return 0
	}
	n := 0
	for _, pf := range p.Flows {
		if inHole(results.FaultRecord{Target: holeTarget(sc.Fault, *f)}, measure.FlowMeta{ID: pf.ID, Client: pf.Client, Control: pf.Control}) {
			n++
		}
	}
	return n
}
