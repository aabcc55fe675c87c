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
)

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
