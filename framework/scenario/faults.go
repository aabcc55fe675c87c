package scenario

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

// FaultKind is one entry of the fault catalogue. Each lives in a file of its
// own (fault_*.go) and registers itself.
type FaultKind struct {
	Name string
	Doc  string
	// Modes the fault exists in (nil: every mode) and why not elsewhere.
	Modes      []string
	ModeReason string
	// Target: the fault aims at a node (default: the last one).
	Target bool
	// ControlPlane: a control-plane fault, whose good outcome is
	// no-data-plane-impact.
	ControlPlane bool
	// Fields lists the optional fault fields of a scenario file the fault
	// reads besides kind, at and (with Target) node. The file decoder
	// refuses any other, so a scenario never silently does less than it
	// says.
	Fields []string
	// NeedsWaypoint: the fault needs a waypoint in the scenario
	// (mesh.waypoint).
	NeedsWaypoint bool
	// Needs lists what the fault needs the cluster or the data plane to do,
	// for the fault as configured (a black hole needs a flow or a pod drop).
	Needs func(f Fault) []Capability
	// Inject carries the fault out on schedule, recording every injection
	// and recovery the moment it happens.
	Inject func(e *FaultEnv) error
	// Scope lists the nodes the fault is aimed at, for the verdict. Nil
	// means the target node.
	Scope func(e *FaultEnv) []string
	// Reach says how far past its nodes the fault reaches in a data plane
	// mode, for placing the control flow, and why (nil: ReachNodes).
	Reach func(sc Scenario, mode string) (Reach, string)
}

// Reach is how far a fault reaches, as the planner sees it.
type Reach int

const (
	// ReachNodes: the nodes the fault is aimed at, nothing else. The
	// control flow runs between two other nodes.
	ReachNodes Reach = iota
	// ReachLinks: every link between nodes. The control flow runs inside
	// one node the fault is not aimed at.
	ReachLinks
	// ReachAll: every node. No control flow can be placed.
	ReachAll
)

// faultReach is the scenario's fault's reach in mode and the reason for it.
func faultReach(sc Scenario, mode string) (Reach, string) {
	k, ok := faultKinds[sc.Fault.Kind]
	if !ok || k.Reach == nil {
		return ReachNodes, ""
	}
	return k.Reach(sc, BaseMode(mode))
}

var faultKinds = map[string]*FaultKind{}

func registerFault(k *FaultKind) {
	if k.Needs == nil {
		panic("fault " + k.Name + " names no capabilities it needs")
	}
	if _, dup := faultKinds[k.Name]; dup {
		panic("fault " + k.Name + " registered twice")
	}
	faultKinds[k.Name] = k
}

// FaultNames lists the fault catalogue.
func FaultNames() []string {
	var out []string
	for n := range faultKinds {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// LookupFault returns a fault kind by name.
func LookupFault(name string) (*FaultKind, error) {
	k, ok := faultKinds[name]
	if !ok {
		return nil, fmt.Errorf("unknown fault %q (known: %s)", name, strings.Join(FaultNames(), ", "))
	}
	return k, nil
}

// skipReason says why a scenario cannot run in mode, or "".
func skipReason(sc Scenario, mode string) string {
	mode = BaseMode(mode)
	if len(sc.Mesh.Modes) > 0 && !contains(sc.Mesh.Modes, mode) {
		return fmt.Sprintf("scenario needs mode %s", strings.Join(sc.Mesh.Modes, " or "))
	}
	if sc.Fault.Kind == "" {
		return ""
	}
	k, err := LookupFault(sc.Fault.Kind)
	if err != nil {
		return ""
	}
	if k.Modes != nil && !contains(k.Modes, mode) {
		return fmt.Sprintf("fault %s needs mode %s: %s", k.Name, strings.Join(k.Modes, " or "), k.ModeReason)
	}
	return ""
}

// FaultEnv is what a fault works with during a trial.
type FaultEnv struct {
	Ctx context.Context
	// Infra is the cluster as faults see it: where pods run, and the
	// cluster capabilities (NodeCrasher, Partitioner, ...) it implements.
	Infra Infra
	// DataPlane is nil in mode none. Faults type-assert the capability they
	// need, so a data plane without it is a skip, not a crash.
	DataPlane FaultTarget
	Scenario  Scenario
	Fault     Fault
	Mode      string
	// Target is the node the fault aims at ("node-3"), empty if none.
	Target string
	// Start is when load started; Fault.At counts from it.
	Start time.Time
	Logf  func(string, ...any)

	plan  plan
	r     *Runner
	tr    *results.Trial
	phase *phaseBox
}

// Infra is what a fault sees of the cluster. The capabilities it offers
// are the interfaces of capabilities.go it implements.
type Infra interface {
	// PodNode is the planned node ("node-2") a pod runs on: application
	// pods and the data plane's own alike.
	PodNode(pod string) (string, bool)
}

// FaultTarget is what a fault sees of a data plane: its name, and the
// capability interfaces it may implement.
type FaultTarget interface{ Describe() string }

// podNode is the planned node a pod runs on.
func (e *FaultEnv) podNode(pod string) (string, bool) {
	if e.Infra == nil {
		return "", false
	}
	return e.Infra.PodNode(pod)
}

// Record appends a fault record to the trial (saved at once) and returns
// its index for Recovered.
func (e *FaultEnv) Record(rec results.FaultRecord) int {
	i := 0
	e.r.update(func() { e.tr.Faults = append(e.tr.Faults, rec); i = len(e.tr.Faults) - 1 })
	return i
}

// Recovered sets record i's recovery time.
func (e *FaultEnv) Recovered(i int, at time.Time) {
	e.r.update(func() { e.tr.Faults[i].Recover = &at })
	e.phase.set("recover")
}

// Sleep waits until t or the trial ends.
func (e *FaultEnv) Sleep(t time.Time) error { return sleepUntil(e.Ctx, t) }

// WaitInject sleeps until the fault's injection time and marks the phase.
func (e *FaultEnv) WaitInject() error {
	if err := e.Sleep(e.Start.Add(e.Fault.At)); err != nil {
		return err
	}
	e.phase.set("fault")
	return nil
}

// RecoverAfter brings record i's target back Fault.RecoverAfter after at
// (nothing when it is 0) with start, which gets recoverTimeout to succeed.
func (e *FaultEnv) RecoverAfter(i int, at time.Time, what string, start func(context.Context) (time.Time, error)) error {
	if e.Fault.RecoverAfter <= 0 {
		return nil
	}
	if err := e.Sleep(at.Add(e.Fault.RecoverAfter)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.Ctx, recoverTimeout)
	defer cancel()
	back, err := start(ctx)
	if err != nil {
		return err
	}
	e.Recovered(i, back)
	e.Logf("fault: %s", what)
	return nil
}

// recoverTimeout bounds bringing a fault's target back.
const recoverTimeout = 20 * time.Second

// infraCap returns the cluster as T, or an error naming what is missing.
func infraCap[T any](e *FaultEnv, what string) (T, error) {
	c, ok := e.Infra.(T)
	if !ok {
		return c, fmt.Errorf("fault %s: this provider cannot %s", e.Fault.Kind, what)
	}
	return c, nil
}

// Capability returns the data plane as T, or an error naming what is missing.
func capability[T any](e *FaultEnv, what string) (T, error) {
	var zero T
	if e.DataPlane == nil {
		return zero, fmt.Errorf("fault %s needs %s, and mode %s has no data plane", e.Fault.Kind, what, e.Mode)
	}
	c, ok := e.DataPlane.(T)
	if !ok {
		return zero, fmt.Errorf("fault %s needs %s, which the %s data plane does not offer", e.Fault.Kind, what, e.DataPlane.Describe())
	}
	return c, nil
}

// ServerPods are the application server pods on a node.
func (e *FaultEnv) ServerPods(node string) []string {
	var out []string
	for _, p := range e.plan.Pods {
		if p.Role == "server" && nodeName(p.Node) == node {
			out = append(out, p.Name)
		}
	}
	return out
}

// Pods of the plan with a role, on any node, in plan order.
func (e *FaultEnv) podsWithRole(roles ...string) []string {
	var out []string
	for _, p := range e.plan.Pods {
		if contains(roles, p.Role) {
			out = append(out, p.Name)
		}
	}
	return out
}

// Nodes names every node.
func (e *FaultEnv) Nodes() []string {
	var out []string
	for i := 1; i <= e.Scenario.Nodes; i++ {
		out = append(out, nodeName(i))
	}
	return out
}

// sleepUntil waits for t or ctx.
func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

// ms formats a duration as milliseconds for fault details.
func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
