package scenario

import (
	"fmt"
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
}

func nodeName(i int) string { return fmt.Sprintf("node-%d", i) }

// makePlan lays out pods, services and flows: by default every ordered
// (client node, server node) pair gets every flow kind, plus one control flow
// between nodes the fault does not touch.
func makePlan(sc Scenario, budget float64) (plan, error) {
	p := plan{Services: map[string][]string{}}
	if sc.Nodes < 1 {
		return p, fmt.Errorf("scenario %s: needs at least one node", sc.Name)
	}
	switch sc.Fault.Kind {
	case FaultNodeCrash, FaultNodeProxyCrash, FaultNodeProxyRestart, FaultNodeProxyCrashCPDown:
		p.Target = sc.Nodes
		if sc.Fault.Node != "" {
			found := false
			for i := 1; i <= sc.Nodes; i++ {
				if nodeName(i) == sc.Fault.Node {
					p.Target, found = i, true
				}
			}
			if !found {
				return p, fmt.Errorf("scenario %s: fault target %s is not a node", sc.Name, sc.Fault.Node)
			}
		}
	}
	have := map[string]bool{}
	addPod := func(name, role string, node int) {
		if !have[name] {
			have[name] = true
			p.Pods = append(p.Pods, plannedPod{Name: name, Role: role, Node: node})
		}
	}
	client := func(n int) string { return fmt.Sprintf("client-n%d", n) }
	server := func(n int) string { return fmt.Sprintf("server-n%d", n) }
	addFlow := func(c, s int, k FlowKind, qps float64) {
		addPod(client(c), "client", c)
		addPod(server(s), "server", s)
		f := plannedFlow{
			ID:     fmt.Sprintf("n%d-to-n%d.%s.%s", c, s, k.Via, k.Profile),
			Client: client(c), Server: server(s), ClientNode: c, ServerNode: s, Kind: k, QPS: qps,
		}
		if k.Via == "svc" {
			f.Service = fmt.Sprintf("echo-n%d", s)
			if !slices.Contains(p.Services[f.Service], server(s)) {
				p.Services[f.Service] = append(p.Services[f.Service], server(s))
			}
		}
		p.Flows = append(p.Flows, f)
	}
	if len(sc.Custom) > 0 {
		for _, cf := range sc.Custom {
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
	// The control flow runs between the first nodes the fault leaves alone.
	var spared []int
	for i := 1; i <= sc.Nodes; i++ {
		if i != p.Target {
			spared = append(spared, i)
		}
	}
	if len(spared) > 0 {
		cn, sn := spared[0], spared[len(spared)-1]
		if len(spared) > 1 {
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
