package scenario

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Modes a scenario can run in.
var AllModes = []string{"none", "sidecar", "ambient"}

// Meshes: the tool's own reference data plane, or Istio. A meshed mode of
// Istio is named by the mesh and the mode ("istio-ambient"): it is a
// column of its own beside the reference's ("ambient"), and plans,
// fault reach and skips follow its base mode.
const (
	MeshReference = "reference"
	MeshIstio     = "istio"
)

// IstioModes are the modes Istio's data plane runs in.
var IstioModes = []string{MeshIstio + "-sidecar", MeshIstio + "-ambient"}

// BaseMode is a mode without its mesh: none, sidecar or ambient.
func BaseMode(mode string) string { return strings.TrimPrefix(mode, MeshIstio+"-") }

// MeshOf is the mesh a mode runs: "" for none.
func MeshOf(mode string) string {
	switch {
	case mode == "none" || mode == "":
		return ""
	case strings.HasPrefix(mode, MeshIstio+"-"):
		return MeshIstio
	}
	return MeshReference
}

// ModeOf names the mode base (sidecar, ambient) of a mesh; none has no mesh.
func ModeOf(mesh, base string) string {
	if base == "none" || mesh == MeshReference || mesh == "" {
		return base
	}
	return mesh + "-" + base
}

// Mesh holds the data plane settings a scenario needs.
type Mesh struct {
	// Modes the scenario makes sense in; empty means every mode. A fault
	// adds its own requirement (see Faults).
	Modes   []string
	CertTTL time.Duration // 0: the default (1h)
	Drain   time.Duration // proxy drain deadline; 0: the default (5s)
	// Handoff is how a gracefully restarting node proxy hands its
	// listeners over (HandoffMigrate, HandoffNone); empty: migrate.
	Handoff string
	// Waypoint puts an L7 waypoint with Replicas replicas in front of
	// Service (ambient mode): node proxies send its traffic through them.
	Waypoint *Waypoint
}

// Handoff strategies of a graceful node-proxy restart (mesh.handoff). Both
// share the listening ports through SO_REUSEPORT, so the new proxy accepts
// before the old one stops; they differ in what happens to connections
// queued on the old proxy's listeners when it closes them.
const (
	// HandoffMigrate sets net.ipv4.tcp_migrate_req in each pod: the kernel
	// moves connections queued on a closing listener, and handshakes in
	// flight to it, to another listener of the same port.
	HandoffMigrate = "migrate"
	// HandoffNone closes the old listeners as they are: what is queued on
	// them is reset.
	HandoffNone = "none"
)

// HandoffKinds lists the values of Mesh.Handoff.
var HandoffKinds = []string{HandoffMigrate, HandoffNone}

// Waypoint binds a service to a waypoint.
type Waypoint struct {
	Service  string // e.g. "echo-n3"
	Replicas int
}

// Fault is what a scenario breaks and when, relative to the start of load.
type Fault struct {
	Kind string
	// Node is the target of a node fault ("node-3"); empty means the last node.
	Node string
	// Peer is the other side of a partition ("node-1"); empty means the first
	// node other than Node.
	Peer string
	// Pod is the target of a pod fault (sidecar crash); empty means the
	// server on the target node.
	Pod string
	At  time.Duration
	// RecoverAfter brings the target back that long after injection; 0 = never.
	RecoverAfter time.Duration
	// BlackHole: the flow to drop, the hole lengths in order, and the pause
	// between holes. Drop says what each hole drops (DropFlow or
	// DropClientPod); empty means DropFlow.
	Flow  string
	Holes []time.Duration
	Gap   time.Duration
	Drop  string
	// Then is the delay of a fault's second step (a node-proxy crash inside
	// a control plane outage) or between the steps of a rolling fault.
	Then time.Duration
}

// Scenario is topology + flows + fault + timing + expectations.
type Scenario struct {
	Name        string
	Description string
	// File is where the scenario was read from; empty for a built-in one.
	File  string
	Nodes int
	// WorkloadsPerNode is how many server workloads each node runs (default
	// 1). With more than one, a node's service spans all of them.
	WorkloadsPerNode int
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
	// Trials is how many times each mode runs the scenario (default 1; the
	// run's --trials overrides it).
	Trials int
	// Expect is checked after measurement.
	Expect []Expect
	// Matrix marks the scenarios of the default fault matrix (make e2e).
	Matrix bool
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

// Expect is one named expectation: a Name from the list below, with an
// argument for the ones that take one.
type Expect struct {
	Name    string
	Max     time.Duration // max-disruption
	Verdict string        // verdict
}

// Expectation names, as written in scenario files.
const (
	// ExpectNoOutage: no flow has any outage interval.
	ExpectNoOutage = "no-disruption"
	// ExpectNodeRadius: every flow with an end on the target node has an
	// outage, every other flow (the control flow included) none.
	ExpectNodeRadius = "node-radius"
	// ExpectProxyRadius: kept-alive and stream flows with an end on the
	// target node are disrupted, no flow between other nodes is.
	ExpectProxyRadius = "proxy-radius"
	// ExpectContained: the verdict is contained or no-impact.
	ExpectContained = "contained-to-node"
	// ExpectMaxDisruption: no flow is disrupted for longer than Max in total.
	ExpectMaxDisruption = "max-disruption"
	// ExpectVerdict: the verdict is exactly Verdict.
	ExpectVerdict = "verdict"
	// ExpectPrecision: every black hole is measured within one bucket and
	// nothing else is disrupted.
	ExpectPrecision = "precision"
	// ExpectGracefulHandoff: no request-response flow fails at all; stream
	// flows through the target node survive until the drain deadline and
	// break only then.
	ExpectGracefulHandoff = "graceful-handoff"
	// ExpectFailAtExpiry: no flow fails before the certificates expire, and
	// new-connection flows fail from expiry on.
	ExpectFailAtExpiry = "fail-at-expiry"
)

// expectNames documents every expectation for errors and help.
var expectNames = []string{ExpectNoOutage, ExpectNodeRadius, ExpectProxyRadius, ExpectContained,
	ExpectMaxDisruption + " <duration>", ExpectVerdict + " <" + strings.Join(Verdicts, "|") + ">",
	ExpectPrecision, ExpectGracefulHandoff, ExpectFailAtExpiry}

// ParseExpect reads one expectation as written in a scenario file:
// "contained-to-node", "max-disruption 2s", "verdict cluster-wide".
func ParseExpect(s string) (Expect, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return Expect{}, fmt.Errorf("empty expectation (known: %s)", strings.Join(expectNames, ", "))
	}
	e := Expect{Name: f[0]}
	args := f[1:]
	switch e.Name {
	case ExpectMaxDisruption:
		if len(args) != 1 {
			return e, fmt.Errorf("%q: want %q", s, "max-disruption <duration>")
		}
		d, err := time.ParseDuration(args[0])
		if err != nil || d < 0 {
			return e, fmt.Errorf("%q: %q is not a duration", s, args[0])
		}
		e.Max = d
		return e, nil
	case ExpectVerdict:
		if len(args) != 1 || !contains(Verdicts, args[0]) {
			return e, fmt.Errorf("%q: want verdict one of %s", s, strings.Join(Verdicts, ", "))
		}
		e.Verdict = args[0]
		return e, nil
	case ExpectNoOutage, ExpectNodeRadius, ExpectProxyRadius, ExpectContained, ExpectPrecision, ExpectGracefulHandoff, ExpectFailAtExpiry:
		if len(args) != 0 {
			return e, fmt.Errorf("%q: %s takes no argument", s, e.Name)
		}
		return e, nil
	}
	return e, fmt.Errorf("unknown expectation %q (known: %s)", f[0], strings.Join(expectNames, ", "))
}

func (e Expect) String() string {
	switch e.Name {
	case ExpectMaxDisruption:
		return e.Name + " " + e.Max.String()
	case ExpectVerdict:
		return e.Name + " " + e.Verdict
	}
	return e.Name
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Profile names, as the agent knows them.
const (
	ProfileKeepAlive = "http-keepalive"
	ProfileNewConn   = "http-newconn"
	ProfileStream    = "tcp-stream"
)

// Profiles lists the load profiles.
var Profiles = []string{ProfileKeepAlive, ProfileNewConn, ProfileStream}

var defaultKinds = []FlowKind{
	{Via: "svc", Profile: ProfileKeepAlive},
	{Via: "pod", Profile: ProfileNewConn},
	{Via: "pod", Profile: ProfileStream},
}

// DefaultFlows is the flow kinds every node pair gets unless a scenario
// says otherwise.
func DefaultFlows() []FlowKind { return append([]FlowKind(nil), defaultKinds...) }

// builtin is the scenario catalogue (catalogue.go).
var builtin = map[string]Scenario{}

func register(s Scenario) {
	if _, dup := builtin[s.Name]; dup {
		panic("scenario " + s.Name + " registered twice")
	}
	builtin[s.Name] = s
}

func repeat(n int, ds ...time.Duration) []time.Duration {
	var out []time.Duration
	for range n {
		out = append(out, ds...)
	}
	return out
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

// MatrixNames lists the scenarios of the default fault matrix, in the order
// they run.
func MatrixNames() []string {
	var out []string
	for _, n := range matrixOrder {
		if builtin[n].Matrix {
			out = append(out, n)
		}
	}
	return out
}

// Lookup returns a built-in scenario by name.
func Lookup(name string) (Scenario, error) {
	s, ok := builtin[name]
	if !ok {
		return Scenario{}, fmt.Errorf("unknown scenario %q (known: %s; or a .yaml file)", name, strings.Join(Names(), ", "))
	}
	return s, nil
}

// ParseList resolves a comma-separated list of scenario names and scenario
// files (anything ending in .yaml or .yml, or containing a slash). "matrix"
// stands for the default fault matrix.
func ParseList(list string) ([]Scenario, error) {
	var out []Scenario
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
			continue
		case n == "matrix":
			for _, m := range MatrixNames() {
				out = append(out, builtin[m])
			}
			continue
		case strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") || strings.Contains(n, "/"):
			s, err := LoadFile(n)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
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
