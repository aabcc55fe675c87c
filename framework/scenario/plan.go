package scenario

import (
	"fmt"
	"runtime"
	"slices"
)

// Ports the agent servers listen on inside every server pod.
const (
	HTTPPort   = 8080
	TCPPort    = 9000
	ServiceTCP = 80 // service VIP port, mapped to HTTPPort
)

// plannedFlow is a flow before the cluster exists (no IPs yet).
type plannedFlow struct {
	ID             string
	Client, Server string
	ClientNode     int
	ServerNode     int
	Kind           FlowKind
	QPS            float64
	Control        bool
	Service        string // for via=svc
}

type plannedPod struct {
	Name, Role string
	Node       int
}

type plan struct {
	Target   int // node index the fault aims at (0 = none)
	Pods     []plannedPod
	Services map[string][]string // service -> pods (sorted by name when used)
	Flows    []plannedFlow
	// NoControl says why the plan has no control flow ("" when it has one).
	NoControl string
}

func nodeName(i int) string { return fmt.Sprintf("node-%d", i) }

// makePlan lays out pods, services and flows: by default every ordered
// (client node, server node) pair gets every flow kind, plus one control flow
// between nodes the fault does not touch.
func makePlan(sc Scenario, budget float64) (plan, error) { return makePlanIn(sc, "", budget) }

// makePlanIn is makePlan for a data plane mode: how far a fault reaches,
// and so where the control flow can run, may depend on it ("" for none
// in particular).
func makePlanIn(sc Scenario, mode string, budget float64) (plan, error) {
	p := plan{Services: map[string][]string{}}
	if sc.Nodes < 1 {
		return p, fmt.Errorf("scenario %s: needs at least one node", sc.Name)
	}
	isNode := func(n string) bool {
		var i int
		_, err := fmt.Sscanf(n, "node-%d", &i)
		return err == nil && nodeName(i) == n && i >= 1 && i <= sc.Nodes
	}
	if sc.Fault.Kind != "" {
		k, err := LookupFault(sc.Fault.Kind)
		if err != nil {
			return p, fmt.Errorf("scenario %s: %w", sc.Name, err)
		}
		if k.Target {
			p.Target = sc.Nodes
			if sc.Fault.Node != "" {
				if !isNode(sc.Fault.Node) {
					return p, fmt.Errorf("scenario %s: fault target %s is not a node (the topology has node-1..node-%d)", sc.Name, sc.Fault.Node, sc.Nodes)
				}
				fmt.Sscanf(sc.Fault.Node, "node-%d", &p.Target)
			}
		}
		if sc.Fault.Peer != "" && (!isNode(sc.Fault.Peer) || sc.Fault.Peer == nodeName(p.Target)) {
			return p, fmt.Errorf("scenario %s: fault peer %s is not another node (the topology has node-1..node-%d)", sc.Name, sc.Fault.Peer, sc.Nodes)
		}
		if sc.Fault.Kind == FaultPartition && sc.Nodes < 2 {
			return p, fmt.Errorf("scenario %s: a partition needs at least two nodes", sc.Name)
		}
	}
	workloads := sc.WorkloadsPerNode
	if workloads < 1 {
		workloads = 1
	}
	have := map[string]bool{}
	addPod := func(name, role string, node int) {
		if !have[name] {
			have[name] = true
			p.Pods = append(p.Pods, plannedPod{Name: name, Role: role, Node: node})
		}
	}
	client := func(n int) string { return fmt.Sprintf("client-n%d", n) }
	servers := func(n int) []string {
		if workloads == 1 {
			return []string{fmt.Sprintf("server-n%d", n)}
		}
		var out []string
		for k := 1; k <= workloads; k++ {
			out = append(out, fmt.Sprintf("server-n%d-%d", n, k))
		}
		return out
	}
	addFlow := func(c, s int, k FlowKind, qps float64) {
		addPod(client(c), "client", c)
		for _, srv := range servers(s) {
			addPod(srv, "server", s)
		}
		// A pod flow targets the node's first server; a service flow
		// reaches all of them.
		f := plannedFlow{
			ID:     fmt.Sprintf("n%d-to-n%d.%s.%s", c, s, k.Via, k.Profile),
			Client: client(c), Server: servers(s)[0], ClientNode: c, ServerNode: s, Kind: k, QPS: qps,
		}
		if k.Via == "svc" {
			f.Service = fmt.Sprintf("echo-n%d", s)
			for _, srv := range servers(s) {
				if !slices.Contains(p.Services[f.Service], srv) {
					p.Services[f.Service] = append(p.Services[f.Service], srv)
				}
			}
		}
		p.Flows = append(p.Flows, f)
	}
	if len(sc.Custom) > 0 {
		for _, cf := range sc.Custom {
			if cf.ClientNode < 1 || cf.ClientNode > sc.Nodes || cf.ServerNode < 1 || cf.ServerNode > sc.Nodes {
				return p, fmt.Errorf("scenario %s: flow %d->%d: the topology has nodes 1..%d", sc.Name, cf.ClientNode, cf.ServerNode, sc.Nodes)
			}
			addFlow(cf.ClientNode, cf.ServerNode, cf.Kind, cf.QPS)
		}
	} else {
		for c := 1; c <= sc.Nodes; c++ {
			for s := 1; s <= sc.Nodes; s++ {
				for _, k := range sc.Profiles {
					addFlow(c, s, k, 0)
				}
			}
		}
	}
	// A drain moves the target's servers to the next node: their
	// replacements exist from the start (meshed like any pod) but idle.
	if sc.Fault.Kind == FaultNodeDrain {
		if sc.Nodes < 2 {
			return p, fmt.Errorf("scenario %s: a drain needs another node to move workloads to", sc.Name)
		}
		to := p.Target%sc.Nodes + 1
		for _, pp := range slices.Clone(p.Pods) {
			if pp.Role != "server" || pp.Node != p.Target {
				continue
			}
			spare := pp.Name + spareSuffix
			addPod(spare, "spare", to)
			for svc, pods := range p.Services {
				if slices.Contains(pods, pp.Name) {
					p.Services[svc] = append(pods, spare)
				}
			}
		}
	}
	if sc.Mesh.Waypoint != nil {
		if _, ok := p.Services[sc.Mesh.Waypoint.Service]; !ok {
			var names []string
			for n := range p.Services {
				names = append(names, n)
			}
			slices.Sort(names)
			return p, fmt.Errorf("scenario %s: waypoint service %s is not a service of this topology (%v)", sc.Name, sc.Mesh.Waypoint.Service, names)
		}
	}
	// The control flow runs where the fault cannot reach it: between the
	// first two nodes the fault leaves alone, inside one of them when the
	// fault cuts every link between nodes, and nowhere when it reaches every
	// node. Without one, the trial says why instead of judging noise.
	reach, why := faultReach(sc, mode)
	var spared []int
	aimed := plannedFaultNodes(sc, p.Target, p.Flows)
	for i := 1; i <= sc.Nodes; i++ {
		if !slices.Contains(aimed, i) {
			spared = append(spared, i)
		}
	}
	switch {
	case reach == ReachAll:
		p.NoControl = why
	case len(spared) == 0:
		p.NoControl = fmt.Sprintf("the fault aims at every node of the %d-node topology", sc.Nodes)
	default:
		cn, sn := spared[0], spared[0]
		if len(spared) > 1 && reach != ReachLinks {
			sn = spared[1]
		}
		addPod("ctl-client", "control-client", cn)
		addPod("ctl-server", "control-server", sn)
		p.Flows = append(p.Flows, plannedFlow{
			ID: "control.pod." + ProfileKeepAlive, Client: "ctl-client", Server: "ctl-server",
			ClientNode: cn, ServerNode: sn, Kind: FlowKind{Via: "pod", Profile: ProfileKeepAlive}, Control: true,
		})
	}
	// Split what is left of the request budget, after flows with a fixed
	// rate, across the others.
	free, fixed := 0, 0.0
	for _, f := range p.Flows {
		if f.QPS == 0 {
			free++
		}
		fixed += f.QPS
	}
	if budget <= 0 {
		budget = fixed + AutoBudget(free, runtime.NumCPU())
	}
	for i := range p.Flows {
		if p.Flows[i].QPS == 0 {
			p.Flows[i].QPS = (budget - fixed) / float64(free)
			if p.Flows[i].QPS < 5 {
				p.Flows[i].QPS = 5
			}
		}
	}
	return p, nil
}

// plannedFaultNodes are the nodes a fault is aimed at, known before the
// cluster exists: the target, a partition's peer, a drain's destination; for
// a black hole that cuts off a client pod, the nodes of its flow: in ambient
// mode their node proxies carry the pod's tunnels, and the backlog they
// flush after a hole delays every other flow through them (measured: a
// control flow through the same two proxies answered 134 ms late after a
// 1 s hole).
func plannedFaultNodes(sc Scenario, target int, flows []plannedFlow) []int {
	if sc.Fault.Kind == FaultBlackHole && sc.Fault.Drop == DropClientPod {
		for _, f := range flows {
			if f.ID == sc.Fault.Flow || (sc.Fault.Flow == "" && !f.Control) {
				return []int{f.ClientNode, f.ServerNode}
			}
		}
	}
	if target == 0 {
		return nil
	}
	out := []int{target}
	switch sc.Fault.Kind {
	case FaultPartition:
		peer := 0
		if sc.Fault.Peer != "" {
			fmt.Sscanf(sc.Fault.Peer, "node-%d", &peer)
		} else {
			for i := 1; i <= sc.Nodes && peer == 0; i++ {
				if i != target {
					peer = i
				}
			}
		}
		if peer > 0 {
			out = append(out, peer)
		}
	case FaultNodeDrain:
		out = append(out, target%sc.Nodes+1)
	}
	return out
}

// Auto budget: each flow gets up to autoPerFlowRPS (twenty requests in a
// 100 ms bucket: more buys no resolution) while the whole run stays within
// autoPerCPURPS per CPU, the rate two cores carry through two proxies per
// request without the CPU sampler finding them saturated in most trials.
const (
	autoPerFlowRPS = 200
	autoPerCPURPS  = 300
)

// AutoBudget is the request budget of flows flows without a fixed rate on
// a machine with cpus CPUs: it grows with the flow count until the machine's
// share is reached.
func AutoBudget(flows, cpus int) float64 {
	return min(float64(flows)*autoPerFlowRPS, float64(max(cpus, 1))*autoPerCPURPS)
}
