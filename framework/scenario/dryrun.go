package scenario

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// PlannedPod is a pod of a trial plan, before any cluster exists.
type PlannedPod struct {
	Name, Role string
	Node       int // 1-based
}

// PlannedFlow is a flow of a trial plan.
type PlannedFlow struct {
	ID, Client, Server     string
	ClientNode, ServerNode int
	Via, Profile, Service  string
	QPS                    float64
	Control                bool
}

// Plan is what a trial will do, computed without a cluster: the dry run
// prints it and the Kubernetes providers render manifests from it.
type Plan struct {
	Scenario, Mode string
	// Skip is why the scenario cannot run in this mode ("" if it can).
	Skip     string
	Nodes    int
	Target   string // node the fault aims at, "" if none
	Pods     []PlannedPod
	Services map[string][]string
	Flows    []PlannedFlow
	Duration time.Duration
	Budget   float64
	Mesh     Mesh
	Fault    Fault
	// NoControl says why the plan has no control flow ("" when it has one).
	NoControl string
}

// PlanFor plans a scenario in a mode with the run's request budget (the
// scenario's own budget wins, as in a run).
func PlanFor(sc Scenario, mode string, budget float64) (Plan, error) {
	mode = modeName(mode)
	if sc.Budget > 0 {
		budget = sc.Budget
	}
	out := Plan{Scenario: sc.Name, Mode: mode, Nodes: sc.Nodes, Duration: sc.Duration, Budget: budget, Mesh: sc.Mesh, Fault: sc.Fault,
		Skip: skipReason(sc, mode)}
	if out.Skip != "" {
		return out, nil
	}
	p, err := makePlanIn(sc, mode, budget)
	if err != nil {
		return out, err
	}
	if p.Target > 0 {
		out.Target = nodeName(p.Target)
	}
	out.NoControl = p.NoControl
	for _, pp := range p.Pods {
		out.Pods = append(out.Pods, PlannedPod{Name: pp.Name, Role: pp.Role, Node: pp.Node})
	}
	out.Services = map[string][]string{}
	for s, pods := range p.Services {
		out.Services[s] = append([]string(nil), pods...)
		sort.Strings(out.Services[s])
	}
	for _, f := range p.Flows {
		out.Flows = append(out.Flows, PlannedFlow{ID: f.ID, Client: f.Client, Server: f.Server, ClientNode: f.ClientNode,
			ServerNode: f.ServerNode, Via: f.Kind.Via, Profile: f.Kind.Profile, Service: f.Service, QPS: f.QPS, Control: f.Control})
	}
	return out, nil
}

// FaultTiming describes when a plan's fault happens, relative to the start
// of load, on one line ("" without a fault).
func (p Plan) FaultTiming() string {
	f := p.Fault
	if f.Kind == "" {
		return ""
	}
	var parts []string
	what := f.Kind
	if p.Target != "" {
		what += " on " + p.Target
	}
	if f.Peer != "" {
		what += " from " + f.Peer
	}
	if f.Pod != "" {
		what += " (pod " + f.Pod + ")"
	}
	if f.Flow != "" {
		what += " (flow " + f.Flow + ")"
	}
	if f.Drop != "" {
		what += " (drop " + f.Drop + ")"
	}
	parts = append(parts, what, "inject at +"+f.At.String())
	if f.RecoverAfter > 0 {
		parts = append(parts, fmt.Sprintf("recover %s later (+%s)", f.RecoverAfter, f.At+f.RecoverAfter))
	} else {
		parts = append(parts, "no recovery")
	}
	if f.Then > 0 {
		parts = append(parts, "next step "+f.Then.String()+" later")
	}
	if len(f.Holes) > 0 {
		parts = append(parts, fmt.Sprintf("%d holes (%s ... %s), %s apart", len(f.Holes), f.Holes[0], f.Holes[len(f.Holes)-1], f.Gap))
	}
	parts = append(parts, "load "+p.Duration.String())
	return strings.Join(parts, ", ")
}
