package scenario

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"blastradius.dev/blastradius/framework/evidence"
)

// Capability is one thing a fault needs done: to the cluster (the
// backend's Infra) or to the data plane. Each fault kind names the
// capabilities it needs (FaultKind.Needs); each backend says which it
// offers in a mode (Backend.Capabilities). A trial whose fault needs one
// the backend lacks is skipped with that reason before anything is made.
type Capability string

// What a cluster can do (the backend's Infra implements the interface).
const (
	CapCrashNode        Capability = "crash-node"        // NodeCrasher
	CapPartitionNodes   Capability = "partition-nodes"   // Partitioner
	CapPartitionSegment Capability = "partition-segment" // SegmentPartitioner
	CapDropFlow         Capability = "drop-flow"         // FlowDropper
	CapDropPod          Capability = "drop-pod"          // PodDropper
	CapDrainNode        Capability = "drain-node"        // NodeDrainer
)

// What a data plane can do (the data plane implements the interface).
const (
	CapCrashNodeProxy    Capability = "crash-node-proxy"    // nodeProxyCrasher
	CapRestartNodeProxy  Capability = "restart-node-proxy"  // nodeProxyRestarter
	CapRollNodeProxies   Capability = "roll-node-proxies"   // nodeProxyRoller, or nodeProxyRestarter node by node
	CapCrashControlPlane Capability = "crash-control-plane" // controlPlane
	CapStopControlPlane  Capability = "stop-control-plane"  // controlPlane
	CapCrashNodeAgent    Capability = "crash-node-agent"    // nodeAgentCrasher
	CapWaypoints         Capability = "waypoints"           // waypoints
	CapCrashSidecar      Capability = "crash-sidecar"       // sidecarCrasher
	CapRestartAppPod     Capability = "restart-app-pod"     // appPodRestarter
)

// NodeCrasher crashes a node and brings it back (links down and every
// process killed; a reboot).
type NodeCrasher interface {
	CrashNode(node string) (time.Time, error)
	RecoverNode(node string) (time.Time, error)
}

// Partitioner cuts the network between two nodes, both ways; at is when
// the cut is live.
type Partitioner interface {
	Partition(a, b string) (at time.Time, heal func() (time.Time, error), err error)
}

// SegmentPartitioner cuts every node off from every other.
type SegmentPartitioner interface {
	PartitionAll() (at time.Time, heal func() (time.Time, error), err error)
}

// FlowDropper drops a flow's packets as they enter its server pod: TCP
// from the client pod to any of ports.
type FlowDropper interface {
	DropFlow(server, client string, ports ...int) (at time.Time, undo func() (time.Time, time.Duration, error), err error)
}

// PodDropper drops every packet in and out of a pod but loopback.
type PodDropper interface {
	DropPod(pod string) (at time.Time, undo func() (time.Time, time.Duration, error), err error)
}

// PodTapper watches a pod's packets (to place when its connections moved
// again after a black hole); names maps addresses to pod names.
type PodTapper interface {
	TapPod(pod string) (tap *evidence.Tap, names map[netip.Addr]string, err error)
}

// NodeDrainer drains a node the way kubectl drain does: the replacement
// pods start and join their services, then the node's workloads stop
// gracefully within grace. detail says how.
type NodeDrainer interface {
	DrainNode(ctx context.Context, node string, replacements []string, grace time.Duration) (replaced, evicted time.Time, detail string, err error)
}

type nodeProxyCrasher interface {
	CrashNodeProxy(node string) (time.Time, error)
}

type nodeProxyRestarter interface {
	RestartNodeProxy(ctx context.Context, node string) (started, ready, stopped time.Time, done <-chan struct{}, err error)
}

// nodeProxyRoller rolls every node proxy as its controller does on an
// upgrade: on each node the new proxy starts and is ready before the old
// one is stopped gracefully. stopped is called once per node when its old
// proxy is told to stop (with when the new one was ready), gone when it has
// exited. Data planes without one are rolled by restarting each node's
// proxy in turn.
type nodeProxyRoller interface {
	RollNodeProxies(ctx context.Context, nodes []string, stopped func(node string, at, newReady time.Time), gone func(node string, at time.Time)) error
}

type nodeProxyDrainer interface {
	DrainNodeProxy(ctx context.Context, node string) (stopped time.Time, done <-chan struct{}, err error)
}

type controlPlane interface {
	StopControlPlane() (time.Time, error)
	StartControlPlane(ctx context.Context) (time.Time, error)
	CrashControlPlane() (time.Time, error)
	CertExpiries(ctx context.Context) (map[string]time.Time, error)
	// ControlPlanePod names the control plane's pod, to find its node.
	ControlPlanePod() string
}

type nodeAgentCrasher interface {
	CrashNodeAgent(node string) (time.Time, error)
	RestartNodeAgent(node string) (time.Time, error)
}

type waypoints interface {
	WaypointPods() []string
	CrashWaypoint(pod string) (time.Time, error)
	StopWaypoints() (time.Time, error)
	StartWaypoints(ctx context.Context) (time.Time, error)
}

type sidecarCrasher interface {
	CrashSidecar(pod string) (time.Time, error)
}

type appPodRestarter interface {
	RestartAppPod(ctx context.Context, pod string) (stopped, ready time.Time, err error)
}

// waypointConfigurer is how a scenario's waypoint reaches the data plane
// before it deploys.
type waypointConfigurer interface {
	ConfigureWaypoint(service string, replicas int)
}

// Capabilities is what a backend offers in one mode, each with how it is
// done there.
type Capabilities map[Capability]string

// InfraCapabilities lists what infra implements of the cluster
// capabilities, with how (from hows, else a generic line).
func InfraCapabilities(infra any, hows Capabilities) Capabilities {
	out := Capabilities{}
	add := func(ok bool, c Capability, how string) {
		if !ok {
			return
		}
		if h := hows[c]; h != "" {
			how = h
		}
		out[c] = how
	}
	_, ok := infra.(NodeCrasher)
	add(ok, CapCrashNode, "the node's links go down and every process on it is killed; with recoverAfter it reboots")
	_, ok = infra.(Partitioner)
	add(ok, CapPartitionNodes, "nftables drops every packet between the two nodes' addresses, both ways")
	_, ok = infra.(SegmentPartitioner)
	add(ok, CapPartitionSegment, "nftables drops every packet between any two nodes")
	_, ok = infra.(FlowDropper)
	add(ok, CapDropFlow, "nftables drops the flow's packets as they enter its server pod")
	_, ok = infra.(PodDropper)
	add(ok, CapDropPod, "nftables drops every packet in and out of the pod but loopback")
	_, ok = infra.(NodeDrainer)
	add(ok, CapDrainNode, "replacements started and in service, then the node's workloads stopped gracefully")
	return out
}

// DataPlaneCapabilities lists what a data plane implements of the data
// plane capabilities (none for a nil one: mode none).
func DataPlaneCapabilities(dp FaultTarget) Capabilities {
	out := Capabilities{}
	if dp == nil {
		return out
	}
	name := dp.Describe()
	if _, ok := dp.(nodeProxyCrasher); ok {
		out[CapCrashNodeProxy] = name + ": node proxy SIGKILLed"
	}
	if _, ok := dp.(nodeProxyRestarter); ok {
		out[CapRestartNodeProxy] = name + ": node proxy restarted gracefully"
		out[CapRollNodeProxies] = name + ": each node's proxy restarted gracefully in turn"
	}
	if _, ok := dp.(controlPlane); ok {
		out[CapCrashControlPlane] = name + ": control plane killed"
		out[CapStopControlPlane] = name + ": control plane stopped and started"
	}
	if _, ok := dp.(nodeAgentCrasher); ok {
		out[CapCrashNodeAgent] = name + ": node agent killed"
	}
	if _, ok := dp.(waypoints); ok {
		out[CapWaypoints] = name + ": waypoints killed, stopped and started"
	}
	if _, ok := dp.(sidecarCrasher); ok {
		out[CapCrashSidecar] = name + ": sidecar SIGKILLed"
	}
	if _, ok := dp.(appPodRestarter); ok {
		out[CapRestartAppPod] = name + ": application pod restarted"
	}
	return out
}

// Merge returns the union of capability sets (later ones win on a clash).
func (c Capabilities) Merge(others ...Capabilities) Capabilities {
	out := Capabilities{}
	for _, m := range append([]Capabilities{c}, others...) {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// need is a FaultKind.Needs that needs caps whatever the fault's fields.
func need(caps ...Capability) func(Fault) []Capability {
	return func(Fault) []Capability { return caps }
}

// needs is what the scenario's fault needs (nil: no fault, or an unknown one).
func needs(f Fault) []Capability {
	k, ok := faultKinds[f.Kind]
	if !ok || k.Needs == nil {
		return nil
	}
	return k.Needs(f)
}

// missing says which of the fault's needs caps lacks, as a skip reason ("" when none).
func missing(f Fault, mode string, caps Capabilities) string {
	var lack []string
	for _, c := range needs(f) {
		if _, ok := caps[c]; !ok {
			lack = append(lack, string(c))
		}
	}
	if len(lack) == 0 {
		return ""
	}
	var have []string
	for c := range caps {
		have = append(have, string(c))
	}
	sort.Strings(have)
	offered := "nothing"
	if len(have) > 0 {
		offered = strings.Join(have, ", ")
	}
	return fmt.Sprintf("fault %s needs %s, which this provider does not offer in mode %s (it offers: %s)",
		f.Kind, strings.Join(lack, ", "), mode, offered)
}

// FaultsOffered lists the fault kinds b can inject in mode, each with how
// (its needs as b does them).
func FaultsOffered(b Backend, mode string) map[string]string {
	caps := b.Capabilities(mode)
	out := map[string]string{}
	for _, name := range FaultNames() {
		k := faultKinds[name]
		if k.Modes != nil && !contains(k.Modes, BaseMode(mode)) {
			continue
		}
		if missing(Fault{Kind: name}, mode, caps) != "" {
			continue
		}
		var hows []string
		for _, c := range k.Needs(Fault{Kind: name}) {
			hows = append(hows, caps[c])
		}
		out[name] = strings.Join(hows, "; ")
	}
	return out
}

// FaultSkip says why a scenario's fault cannot run on b in mode ("" when it can).
func FaultSkip(b Backend, sc Scenario, mode string) string {
	if sc.Fault.Kind == "" {
		return ""
	}
	caps := b.Capabilities(mode)
	if u, ok := b.(Unoffered); ok {
		why := u.Unoffered(mode)
		var reasons []string
		for _, c := range needs(sc.Fault) {
			if _, ok := caps[c]; !ok && why[c] != "" && !slices.Contains(reasons, why[c]) {
				reasons = append(reasons, why[c])
			}
		}
		if len(reasons) > 0 {
			return fmt.Sprintf("fault %s: %s", sc.Fault.Kind, strings.Join(reasons, "; "))
		}
	}
	return missing(sc.Fault, mode, caps)
}

// Unoffered is what a backend may say of capabilities it lacks in a mode:
// why not (a fault skipped for want of one then gives that reason).
type Unoffered interface {
	Unoffered(mode string) map[Capability]string
}
