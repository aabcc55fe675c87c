package scenario

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Fault kinds.
const (
	FaultNone      = ""
	FaultNodeCrash = "node-crash"
	FaultBlackHole = "blackhole"
	// FaultNodeProxyCrash SIGKILLs the target node's proxy (ambient).
	FaultNodeProxyCrash = "node-proxy-crash"
	// FaultNodeProxyRestart restarts the target node's proxy gracefully.
	FaultNodeProxyRestart = "node-proxy-restart"
	// FaultControlPlaneDown stops the control plane for RecoverAfter (0:
	// until the end).
	FaultControlPlaneDown = "controlplane-down"
	// FaultNodeProxyCrashCPDown stops the control plane, SIGKILLs the target
	// node's proxy Then later, and brings the control plane back after
	// RecoverAfter.
	FaultNodeProxyCrashCPDown = "node-proxy-crash-during-cp-outage"
)

// Mesh holds the data plane settings a scenario needs.
type Mesh struct {
	// Modes the scenario makes sense in; empty means every mode.
	Modes   []string
	CertTTL time.Duration // 0: the default (1h)
	Drain   time.Duration // node proxy drain deadline; 0: the default (5s)
}

// Fault is what a scenario breaks and when, relative to the start of load.
type Fault struct {
	Kind string
	// Node is the target of a node fault ("node-3"); empty means the last node.
	Node string
	At   time.Duration
	// RecoverAfter brings the target back that long after injection; 0 = never.
	RecoverAfter time.Duration
	// BlackHole: the flow to drop, the hole lengths in order, and the pause
	// between holes.
	Flow  string
	Holes []time.Duration
	Gap   time.Duration
	// Then is the delay of a fault's second step (see FaultNodeProxyCrashCPDown).
	Then time.Duration
}

// Scenario is topology + flows + fault + timing + expectations.
type Scenario struct {
	Name        string
	Description string
	Nodes       int
	// Profiles are the flows every (client node, server node) pair gets. Empty
	// means no pair flows (only Custom flows).
	Profiles []FlowKind
	// Custom replaces the pair matrix with explicit flows (used by precision
	// scenarios that need one fast flow).
	Custom   []CustomFlow
	Duration time.Duration // total load duration
	Fault    Fault
	Mesh     Mesh
	// Budget overrides the run's request budget (rps) when set.
	Budget float64
	// Expect is checked after measurement.
	Expect Expectation
}

// FlowKind is a (via, profile) pair.
type FlowKind struct {
	Via     string // "svc" or "pod"
	Profile string // load profile name
}

// CustomFlow is one explicit flow between pods placed on given nodes.
type CustomFlow struct {
	ClientNode, ServerNode int
	Kind                   FlowKind
	QPS                    float64
}

// Expectation names what must hold.
type Expectation int

const (
	// ExpectNoOutage: no flow has any outage interval.
	ExpectNoOutage Expectation = iota
	// ExpectNodeRadius: every flow with an end on the crashed node has an
	// outage, every other flow (the control flow included) none.
	ExpectNodeRadius
	// ExpectPrecision: every black hole is measured within one bucket and
	// nothing else is disrupted.
	ExpectPrecision
	// ExpectGracefulHandoff: no request-response flow fails at all; stream
	// flows through the target node survive until the drain deadline and
	// break only then.
	ExpectGracefulHandoff
	// ExpectProxyRadius: kept-alive and stream flows with an end on the
	// target node are disrupted, no flow between other nodes is.
	ExpectProxyRadius
	// ExpectFailAtExpiry: no flow fails before the certificates expire, and
	// new-connection flows fail from expiry on.
	ExpectFailAtExpiry
)

// Profile names, as the agent knows them.
const (
	ProfileKeepAlive = "http-keepalive"
	ProfileNewConn   = "http-newconn"
	ProfileStream    = "tcp-stream"
)

var defaultKinds = []FlowKind{
	{Via: "svc", Profile: ProfileKeepAlive},
	{Via: "pod", Profile: ProfileNewConn},
	{Via: "pod", Profile: ProfileStream},
}

// builtin is the scenario catalogue.
var builtin = map[string]Scenario{
	"baseline": {
		Name:        "baseline",
		Description: "No fault: every flow on every node pair for 10 s; any outage is noise in the harness itself.",
		Nodes:       3, Profiles: defaultKinds, Duration: 10 * time.Second,
		Expect: ExpectNoOutage,
	},
	"node-crash": {
		Name: "node-crash",
		Description: "The last node crashes (links down, every process SIGKILLed) 5 s into load and reboots 8 s later; " +
			"flows to or from it must show outages, every other flow none.",
		Nodes: 3, Profiles: defaultKinds, Duration: 22 * time.Second,
		Fault:  Fault{Kind: FaultNodeCrash, At: 5 * time.Second, RecoverAfter: 8 * time.Second},
		Expect: ExpectNodeRadius,
	},
	"blackhole-precision": {
		Name: "blackhole-precision",
		Description: "Ground truth for the measurement: one 250 rps new-connection flow between two nodes is black-holed " +
			"(nftables drop) for exactly 100 ms, 300 ms and 1 s, five times each; each hole must be measured within one bucket.",
		Nodes:  2,
		Custom: []CustomFlow{{ClientNode: 1, ServerNode: 2, Kind: FlowKind{Via: "pod", Profile: ProfileNewConn}, QPS: 250}},
		Fault: Fault{Kind: FaultBlackHole, At: 2 * time.Second, Gap: 700 * time.Millisecond,
			Holes: repeat(5, 100*time.Millisecond, 300*time.Millisecond, time.Second)},
		Expect: ExpectPrecision,
	},
}

func init() {
	ambient := []string{"ambient"}
	meshed := []string{"ambient", "sidecar"}
	for _, s := range []Scenario{
		{
			Name: "node-proxy-crash",
			// A lighter load than the default: every request crosses two
			// proxies on the same two cores, and a starved machine times
			// out requests on flows the fault never touched.
			Description: "The node proxy of the last node is SIGKILLed 5 s into load; its supervisor restarts it. " +
				"Flows through that node's proxy break; flows between other nodes must not.",
			Nodes: 3, Profiles: defaultKinds, Duration: 15 * time.Second, Budget: 450,
			Fault: Fault{Kind: FaultNodeProxyCrash, At: 5 * time.Second}, Mesh: Mesh{Modes: ambient},
			Expect: ExpectProxyRadius,
		},
		{
			Name: "node-proxy-restart",
			Description: "Graceful restart of the last node's proxy under 500 rps of new-connection load through it: " +
				"the new proxy binds the same listeners, then the old one drains for 3 s. No request may fail; " +
				"long-lived streams survive until the drain deadline and are then closed.",
			Nodes: 3, Duration: 14 * time.Second,
			Custom: []CustomFlow{
				{ClientNode: 1, ServerNode: 3, Kind: FlowKind{Via: "pod", Profile: ProfileNewConn}, QPS: 200},
				{ClientNode: 3, ServerNode: 1, Kind: FlowKind{Via: "pod", Profile: ProfileNewConn}, QPS: 200},
				{ClientNode: 3, ServerNode: 3, Kind: FlowKind{Via: "pod", Profile: ProfileNewConn}, QPS: 100},
				{ClientNode: 2, ServerNode: 3, Kind: FlowKind{Via: "pod", Profile: ProfileStream}, QPS: 20},
				{ClientNode: 3, ServerNode: 2, Kind: FlowKind{Via: "pod", Profile: ProfileStream}, QPS: 20},
			},
			Fault: Fault{Kind: FaultNodeProxyRestart, At: 4 * time.Second}, Mesh: Mesh{Modes: ambient, Drain: 3 * time.Second},
			Expect: ExpectGracefulHandoff,
		},
		{
			Name: "controlplane-down",
			Description: "The control plane is down for 8 s from 4 s into load. Established and new flows between " +
				"known workloads must keep working: proxies serve from the configuration and certificates they hold.",
			Nodes: 3, Profiles: defaultKinds, Duration: 16 * time.Second, Budget: 450,
			Fault: Fault{Kind: FaultControlPlaneDown, At: 4 * time.Second, RecoverAfter: 8 * time.Second}, Mesh: Mesh{Modes: meshed},
			Expect: ExpectNoOutage,
		},
		{
			Name: "cert-expiry",
			Description: "Certificates live 10 s; the control plane goes down 4 s into load and stays down. Nothing fails " +
				"until the certificates expire; from expiry on, new connections fail.",
			Nodes: 2, Profiles: []FlowKind{{Via: "pod", Profile: ProfileNewConn}}, Duration: 20 * time.Second, Budget: 300,
			Fault: Fault{Kind: FaultControlPlaneDown, At: 4 * time.Second}, Mesh: Mesh{Modes: meshed, CertTTL: 10 * time.Second},
			Expect: ExpectFailAtExpiry,
		},
		{
			Name: "node-proxy-crash-during-cp-outage",
			Description: "The control plane goes down 4 s into load; 2 s later the last node's proxy is SIGKILLed; the " +
				"control plane returns 8 s after it went down. The restarted proxy keeps nothing on disk, so it has no " +
				"configuration and no certificates: every flow through that node fails until the control plane is back. " +
				"Flows between other nodes must not be affected.",
			Nodes: 3, Profiles: defaultKinds, Duration: 18 * time.Second, Budget: 450,
			Fault:  Fault{Kind: FaultNodeProxyCrashCPDown, At: 4 * time.Second, Then: 2 * time.Second, RecoverAfter: 8 * time.Second},
			Mesh:   Mesh{Modes: ambient},
			Expect: ExpectNodeRadius,
		},
	} {
		builtin[s.Name] = s
	}
}

func repeat(n int, ds ...time.Duration) []time.Duration {
	var out []time.Duration
	for range n {
		out = append(out, ds...)
	}
	return out
}

func init() {
	// The precision scenario's length follows from its holes.
	s := builtin["blackhole-precision"]
	total := s.Fault.At
	for _, h := range s.Fault.Holes {
		total += h + s.Fault.Gap
	}
	s.Duration = total + 2*time.Second
	builtin["blackhole-precision"] = s
}

// Names lists the built-in scenarios.
func Names() []string {
	var out []string
	for n := range builtin {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Lookup returns a built-in scenario by name.
func Lookup(name string) (Scenario, error) {
	s, ok := builtin[name]
	if !ok {
		return Scenario{}, fmt.Errorf("unknown scenario %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	return s, nil
}

// ParseList resolves a comma-separated list of scenario names.
func ParseList(list string) ([]Scenario, error) {
	var out []Scenario
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		s, err := Lookup(n)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no scenario given (known: %s)", strings.Join(Names(), ", "))
	}
	return out, nil
}
