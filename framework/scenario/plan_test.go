package scenario

import (
	"fmt"
	"math"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

func mustLookup(t *testing.T, name string) Scenario {
	t.Helper()
	sc, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func controlFlows(p plan) []plannedFlow {
	var out []plannedFlow
	for _, f := range p.Flows {
		if f.Control {
			out = append(out, f)
		}
	}
	return out
}

func TestMakePlanBaseline(t *testing.T) {
	sc := mustLookup(t, "baseline")
	for _, tc := range []struct {
		budget, wantQPS float64
	}{
		{budget: 560, wantQPS: 20},
		{budget: 600, wantQPS: 600.0 / 28},
		{budget: 2800, wantQPS: 100},
		{budget: 28, wantQPS: 5}, // 1 rps each is raised to the 5 rps floor
	} {
		t.Run(fmt.Sprint(tc.budget), func(t *testing.T) {
			p, err := makePlan(sc, tc.budget)
			if err != nil {
				t.Fatal(err)
			}
			if p.Target != 0 {
				t.Errorf("Target = %d, want 0 (no fault)", p.Target)
			}
			if len(p.Flows) != 28 {
				t.Fatalf("%d flows, want 27 pair flows + 1 control = 28", len(p.Flows))
			}
			ids := map[string]bool{}
			pairs := map[[2]int]map[FlowKind]bool{}
			for _, f := range p.Flows {
				if ids[f.ID] {
					t.Errorf("duplicate flow ID %s", f.ID)
				}
				ids[f.ID] = true
				if f.QPS != tc.wantQPS {
					t.Errorf("%s: QPS = %v, want %v", f.ID, f.QPS, tc.wantQPS)
				}
				if f.Control {
					continue
				}
				if want := fmt.Sprintf("n%d-to-n%d.%s.%s", f.ClientNode, f.ServerNode, f.Kind.Via, f.Kind.Profile); f.ID != want {
					t.Errorf("flow ID %s, want %s", f.ID, want)
				}
				if want := fmt.Sprintf("client-n%d", f.ClientNode); f.Client != want {
					t.Errorf("%s: client %s, want %s", f.ID, f.Client, want)
				}
				if want := fmt.Sprintf("server-n%d", f.ServerNode); f.Server != want {
					t.Errorf("%s: server %s, want %s", f.ID, f.Server, want)
				}
				wantSvc := ""
				if f.Kind.Via == "svc" {
					wantSvc = fmt.Sprintf("echo-n%d", f.ServerNode)
				}
				if f.Service != wantSvc {
					t.Errorf("%s: service %q, want %q", f.ID, f.Service, wantSvc)
				}
				k := [2]int{f.ClientNode, f.ServerNode}
				if pairs[k] == nil {
					pairs[k] = map[FlowKind]bool{}
				}
				pairs[k][f.Kind] = true
			}
			for c := 1; c <= 3; c++ {
				for s := 1; s <= 3; s++ {
					got := pairs[[2]int{c, s}]
					if len(got) != len(defaultKinds) {
						t.Errorf("pair node-%d -> node-%d has kinds %v, want all of %v", c, s, got, defaultKinds)
					}
					for _, k := range defaultKinds {
						if !got[k] {
							t.Errorf("pair node-%d -> node-%d misses %v", c, s, k)
						}
					}
				}
			}
			ctl := controlFlows(p)
			if len(ctl) != 1 {
				t.Fatalf("%d control flows, want 1", len(ctl))
			}
			want := plannedFlow{ID: "control.pod.http-keepalive", Client: "ctl-client", Server: "ctl-server", ClientNode: 1, ServerNode: 2,
				Kind: FlowKind{Via: "pod", Profile: ProfileKeepAlive}, QPS: tc.wantQPS, Control: true}
			if ctl[0] != want {
				t.Errorf("control flow = %+v, want %+v", ctl[0], want)
			}
			if p.Flows[len(p.Flows)-1] != want {
				t.Errorf("control flow is not last")
			}
			wantPods := []plannedPod{
				{Name: "client-n1", Role: "client", Node: 1}, {Name: "server-n1", Role: "server", Node: 1},
				{Name: "server-n2", Role: "server", Node: 2}, {Name: "server-n3", Role: "server", Node: 3},
				{Name: "client-n2", Role: "client", Node: 2}, {Name: "client-n3", Role: "client", Node: 3},
				{Name: "ctl-client", Role: "control-client", Node: 1}, {Name: "ctl-server", Role: "control-server", Node: 2},
			}
			if !reflect.DeepEqual(p.Pods, wantPods) {
				t.Errorf("pods = %+v\nwant %+v", p.Pods, wantPods)
			}
			wantSvcs := map[string][]string{"echo-n1": {"server-n1"}, "echo-n2": {"server-n2"}, "echo-n3": {"server-n3"}}
			if !reflect.DeepEqual(p.Services, wantSvcs) {
				t.Errorf("services = %v, want %v", p.Services, wantSvcs)
			}
		})
	}
}

func TestMakePlanNodeTarget(t *testing.T) {
	crash := mustLookup(t, "node-crash")
	withNode := func(node string) Scenario {
		sc := crash
		sc.Fault.Node = node
		return sc
	}
	for _, tc := range []struct {
		name       string
		sc         Scenario
		wantTarget int
		wantFlows  int
		wantCtl    [2]int // client, server node; zero = no control flow
		wantErr    string
	}{
		{name: "node-crash defaults to the last node", sc: crash, wantTarget: 3, wantFlows: 28, wantCtl: [2]int{1, 2}},
		{name: "explicit last node", sc: withNode("node-3"), wantTarget: 3, wantFlows: 28, wantCtl: [2]int{1, 2}},
		{name: "first node", sc: withNode("node-1"), wantTarget: 1, wantFlows: 28, wantCtl: [2]int{2, 3}},
		{name: "middle node", sc: withNode("node-2"), wantTarget: 2, wantFlows: 28, wantCtl: [2]int{1, 3}},
		{name: "node beyond the cluster", sc: withNode("node-4"), wantErr: "scenario node-crash: fault target node-4 is not a node (the topology has node-1..node-3)"},
		{name: "node zero", sc: withNode("node-0"), wantErr: "scenario node-crash: fault target node-0 is not a node (the topology has node-1..node-3)"},
		{name: "bare index", sc: withNode("3"), wantErr: "scenario node-crash: fault target 3 is not a node (the topology has node-1..node-3)"},
		{name: "pod name", sc: withNode("server-n3"), wantErr: "scenario node-crash: fault target server-n3 is not a node (the topology has node-1..node-3)"},
		{name: "two nodes: control on the survivor alone", sc: func() Scenario { s := crash; s.Nodes = 2; return s }(),
			wantTarget: 2, wantFlows: 13, wantCtl: [2]int{1, 1}},
		{name: "one node: nothing is spared, no control flow", sc: func() Scenario { s := crash; s.Nodes = 1; return s }(),
			wantTarget: 1, wantFlows: 3},
		{name: "no nodes", sc: func() Scenario { s := crash; s.Nodes = 0; return s }(), wantErr: "scenario node-crash: needs at least one node"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := makePlan(tc.sc, 600)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Target != tc.wantTarget {
				t.Errorf("Target = %d, want %d", p.Target, tc.wantTarget)
			}
			if len(p.Flows) != tc.wantFlows {
				t.Errorf("%d flows, want %d", len(p.Flows), tc.wantFlows)
			}
			ctl := controlFlows(p)
			if tc.wantCtl == [2]int{} {
				if len(ctl) != 0 {
					t.Errorf("control flows %+v, want none", ctl)
				}
				return
			}
			if len(ctl) != 1 {
				t.Fatalf("%d control flows, want 1", len(ctl))
			}
			if got := [2]int{ctl[0].ClientNode, ctl[0].ServerNode}; got != tc.wantCtl {
				t.Errorf("control flow nodes = %v, want %v", got, tc.wantCtl)
			}
			if ctl[0].ClientNode == p.Target || ctl[0].ServerNode == p.Target {
				t.Errorf("control flow %v touches the target node %d", [2]int{ctl[0].ClientNode, ctl[0].ServerNode}, p.Target)
			}
			// The control pods are placed where the control flow says.
			for _, pod := range p.Pods {
				switch pod.Name {
				case "ctl-client":
					if pod.Node != tc.wantCtl[0] {
						t.Errorf("ctl-client on node %d, want %d", pod.Node, tc.wantCtl[0])
					}
				case "ctl-server":
					if pod.Node != tc.wantCtl[1] {
						t.Errorf("ctl-server on node %d, want %d", pod.Node, tc.wantCtl[1])
					}
				}
			}
		})
	}
}

func TestMakePlanNodeOnlyForNodeFaults(t *testing.T) {
	// A black hole aims at a flow, not a node: Fault.Node is not consulted.
	sc := mustLookup(t, "blackhole-precision")
	sc.Fault.Node = "node-9"
	p, err := makePlan(sc, 600)
	if err != nil {
		t.Fatalf("makePlan: %v", err)
	}
	if p.Target != 0 {
		t.Errorf("Target = %d, want 0", p.Target)
	}
}

func TestMakePlanBlackholePrecision(t *testing.T) {
	sc := mustLookup(t, "blackhole-precision")
	for _, tc := range []struct {
		budget, wantCtlQPS float64
	}{
		{budget: 600, wantCtlQPS: 350}, // the budget is a total: the fixed 250 rps flow takes its share first
		{budget: 10, wantCtlQPS: 5},    // nothing left: the floor
		{budget: 1, wantCtlQPS: 5},
	} {
		t.Run(fmt.Sprint(tc.budget), func(t *testing.T) {
			p, err := makePlan(sc, tc.budget)
			if err != nil {
				t.Fatal(err)
			}
			want := []plannedFlow{
				{ID: "n1-to-n2.pod.http-newconn", Client: "client-n1", Server: "server-n2", ClientNode: 1, ServerNode: 2,
					Kind: FlowKind{Via: "pod", Profile: ProfileNewConn}, QPS: 250},
				{ID: "control.pod.http-keepalive", Client: "ctl-client", Server: "ctl-server", ClientNode: 1, ServerNode: 2,
					Kind: FlowKind{Via: "pod", Profile: ProfileKeepAlive}, QPS: tc.wantCtlQPS, Control: true},
			}
			if !reflect.DeepEqual(p.Flows, want) {
				t.Errorf("flows = %+v\nwant %+v", p.Flows, want)
			}
			if p.Target != 0 {
				t.Errorf("Target = %d, want 0", p.Target)
			}
			if len(p.Services) != 0 {
				t.Errorf("services = %v, want none", p.Services)
			}
			if len(p.Pods) != 4 {
				t.Errorf("pods = %+v, want client-n1, server-n2, ctl-client, ctl-server", p.Pods)
			}
		})
	}
}

func TestPrecisionScenarioDuration(t *testing.T) {
	sc := mustLookup(t, "blackhole-precision")
	if len(sc.Fault.Holes) != 15 {
		t.Fatalf("%d holes, want 15", len(sc.Fault.Holes))
	}
	for i, h := range sc.Fault.Holes {
		want := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, time.Second}[i%3]
		if h != want {
			t.Errorf("hole %d = %s, want %s", i, h, want)
		}
	}
	want := sc.Fault.At
	for _, h := range sc.Fault.Holes {
		want += h + sc.Fault.Gap
	}
	want += 2 * time.Second
	if sc.Duration != want {
		t.Errorf("Duration = %s, want At + holes + gaps + 2s = %s", sc.Duration, want)
	}
	// 2s + 5×(0.1+0.3+1)s + 15×0.7s + 2s
	if sc.Duration != 21500*time.Millisecond {
		t.Errorf("Duration = %s, want 21.5s", sc.Duration)
	}
}

// TestBlackholeProfilesPlan: three fast flows from one client pod, the hole
// at that pod covering all three, and a control flow the hole cannot reach.
func TestBlackholeProfilesPlan(t *testing.T) {
	sc := mustLookup(t, "blackhole-profiles")
	if sc.Fault.Drop != DropClientPod || len(sc.Fault.Holes) != 15 || sc.Fault.Gap < 1500*time.Millisecond {
		t.Errorf("fault = %+v, want 15 client-pod holes at least 1.5s apart", sc.Fault)
	}
	// 2s + 5×(0.1+0.3+1)s + 15×1.5s + 2s
	if sc.Duration != 33500*time.Millisecond {
		t.Errorf("Duration = %s, want 33.5s", sc.Duration)
	}
	p, err := makePlan(sc, 600)
	if err != nil {
		t.Fatal(err)
	}
	var profiles []string
	for _, f := range p.Flows {
		switch {
		case f.Control:
			// Away from the pod and from the proxies its tunnels cross.
			if f.Client == "client-n1" || f.ClientNode != 3 || f.ServerNode != 3 {
				t.Errorf("control flow %+v, want inside node-3", f)
			}
		case f.Client != "client-n1" || f.ServerNode != 2 || f.QPS < 200:
			t.Errorf("flow %+v, want client-n1 to node-2 at >= 200 rps", f)
		default:
			profiles = append(profiles, f.Kind.Profile)
		}
	}
	slices.Sort(profiles)
	if want := []string{ProfileKeepAlive, ProfileNewConn, ProfileStream}; !reflect.DeepEqual(profiles, want) {
		t.Errorf("profiles = %v, want %v", profiles, want)
	}
	if n := holeFlowCount(sc, p); n != 3 {
		t.Errorf("each hole covers %d flows, want 3", n)
	}
	// The same holes dropping one flow at its server cover that flow only.
	sc.Fault.Drop = ""
	if n := holeFlowCount(sc, p); n != 1 {
		t.Errorf("a per-flow hole covers %d flows, want 1", n)
	}
}

func TestRepeat(t *testing.T) {
	if got := repeat(0, time.Second); got != nil {
		t.Errorf("repeat(0) = %v, want nil", got)
	}
	got := repeat(2, time.Second, time.Millisecond)
	if want := []time.Duration{time.Second, time.Millisecond, time.Second, time.Millisecond}; !reflect.DeepEqual(got, want) {
		t.Errorf("repeat(2) = %v, want %v", got, want)
	}
}

func TestLookupAndNames(t *testing.T) {
	names := Names()
	for _, want := range []string{"baseline", "blackhole-precision", "node-crash", "node-drain", "segment-partition", "scale"} {
		if !slices.Contains(names, want) {
			t.Errorf("Names() = %v, lacks %s", names, want)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("Names() not sorted: %v", names)
	}
	known := "(known: " + strings.Join(names, ", ") + "; or a .yaml file)"
	for _, tc := range []struct {
		name       string
		wantNodes  int
		wantFault  string
		wantExpect string
		wantErr    string
	}{
		{name: "baseline", wantNodes: 3, wantFault: "", wantExpect: ExpectNoOutage},
		{name: "node-crash", wantNodes: 3, wantFault: FaultNodeCrash, wantExpect: ExpectNodeRadius},
		{name: "blackhole-precision", wantNodes: 2, wantFault: FaultBlackHole, wantExpect: ExpectPrecision},
		{name: "segment-partition", wantNodes: 3, wantFault: FaultSegmentPartition, wantExpect: "verdict cluster-wide"},
		{name: "Baseline", wantErr: `unknown scenario "Baseline" ` + known},
		{name: "", wantErr: `unknown scenario "" ` + known},
	} {
		sc, err := Lookup(tc.name)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("Lookup(%q): err = %v, want %q", tc.name, err, tc.wantErr)
			}
			if !reflect.DeepEqual(sc, Scenario{}) {
				t.Errorf("Lookup(%q) returned %+v with an error", tc.name, sc)
			}
			continue
		}
		if err != nil {
			t.Errorf("Lookup(%q): %v", tc.name, err)
			continue
		}
		if sc.Name != tc.name || sc.Nodes != tc.wantNodes || sc.Fault.Kind != tc.wantFault || len(sc.Expect) != 1 || sc.Expect[0].String() != tc.wantExpect {
			t.Errorf("Lookup(%q) = name %q, %d nodes, fault %q, expect %v", tc.name, sc.Name, sc.Nodes, sc.Fault.Kind, sc.Expect)
		}
		if sc.Description == "" || sc.Duration <= 0 {
			t.Errorf("Lookup(%q): description %q, duration %s", tc.name, sc.Description, sc.Duration)
		}
	}
}

// Every built-in scenario plans without error, its fault is in the
// catalogue, and the matrix holds at least ten faults.
func TestCatalogueConsistent(t *testing.T) {
	for _, n := range Names() {
		sc, _ := Lookup(n)
		if sc.Fault.Kind != "" {
			if _, err := LookupFault(sc.Fault.Kind); err != nil {
				t.Errorf("%s: %v", n, err)
			}
			if sc.Fault.At >= sc.Duration {
				t.Errorf("%s: fault at %s, after load ends at %s", n, sc.Fault.At, sc.Duration)
			}
		}
		if _, err := makePlan(sc, 450); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	faults := map[string]bool{}
	for _, n := range MatrixNames() {
		sc, _ := Lookup(n)
		faults[sc.Fault.Kind] = true
	}
	if len(faults) < 10 {
		t.Errorf("matrix has %d faults, want >= 10: %v", len(faults), MatrixNames())
	}
}

func TestParseList(t *testing.T) {
	known := "(known: " + strings.Join(Names(), ", ") + ")"
	knownOrFile := "(known: " + strings.Join(Names(), ", ") + "; or a .yaml file)"
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "baseline", want: []string{"baseline"}},
		{in: "node-crash,baseline", want: []string{"node-crash", "baseline"}},
		{in: " baseline , blackhole-precision ,, ", want: []string{"baseline", "blackhole-precision"}},
		{in: "baseline,baseline", want: []string{"baseline", "baseline"}},
		{in: "", wantErr: "no scenario given " + known},
		{in: " , ,", wantErr: "no scenario given " + known},
		{in: "baseline,nope", wantErr: `unknown scenario "nope" ` + knownOrFile},
		{in: "node_crash", wantErr: `unknown scenario "node_crash" ` + knownOrFile},
	} {
		got, err := ParseList(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("ParseList(%q): err = %v, want %q", tc.in, err, tc.wantErr)
			}
			if got != nil {
				t.Errorf("ParseList(%q) = %v with an error", tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseList(%q): %v", tc.in, err)
			continue
		}
		var names []string
		for _, s := range got {
			names = append(names, s.Name)
		}
		if !reflect.DeepEqual(names, tc.want) {
			t.Errorf("ParseList(%q) = %v, want %v", tc.in, names, tc.want)
		}
	}
}

func TestMakePlanDrainSpares(t *testing.T) {
	p, err := makePlan(mustLookup(t, "node-drain"), 450)
	if err != nil {
		t.Fatal(err)
	}
	var spare *plannedPod
	for i, pp := range p.Pods {
		if pp.Role == "spare" {
			if spare != nil {
				t.Fatalf("two spares: %s and %s", spare.Name, pp.Name)
			}
			spare = &p.Pods[i]
		}
	}
	if spare == nil || spare.Name != "server-n3-moved" || spare.Node != 1 {
		t.Fatalf("spare = %+v, want server-n3-moved on node 1", spare)
	}
	if got := p.Services["echo-n3"]; !reflect.DeepEqual(got, []string{"server-n3", "server-n3-moved"}) {
		t.Errorf("echo-n3 pods = %v", got)
	}
	if got := p.Services["echo-n1"]; !reflect.DeepEqual(got, []string{"server-n1"}) {
		t.Errorf("echo-n1 pods = %v, the drain must not touch it", got)
	}
}

func TestMakePlanWorkloadsPerNode(t *testing.T) {
	p, err := makePlan(mustLookup(t, "scale"), 500)
	if err != nil {
		t.Fatal(err)
	}
	servers := 0
	for _, pp := range p.Pods {
		if pp.Role == "server" {
			servers++
		}
	}
	if servers != 200 {
		t.Errorf("%d server pods, want 200", servers)
	}
	if got := len(p.Services["echo-n10"]); got != 20 {
		t.Errorf("echo-n10 has %d pods, want 20", got)
	}
	if len(p.Flows) != 21 {
		t.Errorf("%d flows, want 20 + control", len(p.Flows))
	}
}

func TestMakePlanImpossible(t *testing.T) {
	wp := mustLookup(t, "waypoint-outage")
	wp.Mesh.Waypoint = &Waypoint{Service: "echo-n7", Replicas: 2}
	part := mustLookup(t, "node-partition")
	part.Fault.Peer = "node-3"
	custom := mustLookup(t, "node-proxy-restart")
	custom.Custom = append(custom.Custom, CustomFlow{ClientNode: 1, ServerNode: 4, Kind: FlowKind{Via: "pod", Profile: ProfileNewConn}})
	for _, tc := range []struct {
		sc   Scenario
		want string
	}{
		{wp, "waypoint service echo-n7 is not a service of this topology"},
		{part, "fault peer node-3 is not another node"},
		{custom, "flow 1->4: the topology has nodes 1..3"},
	} {
		if _, err := makePlan(tc.sc, 450); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.sc.Name, err, tc.want)
		}
	}
}

// The control flow runs where the fault cannot reach it, or the plan says
// why there is none.
func TestControlFlowPlacement(t *testing.T) {
	for _, tc := range []struct {
		scenario string
		wantCtl  [2]int // client, server node; zero = no control flow
		wantWhy  string
		mode     string
	}{
		{"node-crash", [2]int{1, 2}, "", ""},
		// node-3 and node-1 are cut from each other: node-2 alone is spared.
		{"node-partition", [2]int{2, 2}, "", ""},
		// Every link is cut: inside a node the fault is not aimed at.
		{"segment-partition", [2]int{1, 1}, "", "none"},
		{"segment-partition", [2]int{1, 1}, "", "sidecar"},
		// In ambient, node-1's proxy also carries tunnels across the cut.
		{"segment-partition", [2]int{}, "every node proxy", "ambient"},
		// The drain moves node-3's servers to node-1.
		{"node-drain", [2]int{2, 2}, "", ""},
		{"node-proxy-rolling-upgrade", [2]int{}, "every node's proxy is restarted", "ambient"},
		{"cert-expiry", [2]int{}, "past the certificate TTL", "ambient"},
		// Down for less than a TTL it would need: the control plane's outage
		// reaches nothing by itself.
		{"controlplane-down", [2]int{1, 2}, "", "ambient"},
	} {
		t.Run(tc.scenario+"/"+tc.mode, func(t *testing.T) {
			p, err := makePlanIn(mustLookup(t, tc.scenario), tc.mode, 450)
			if err != nil {
				t.Fatal(err)
			}
			ctl := controlFlows(p)
			if tc.wantCtl == [2]int{} {
				if len(ctl) != 0 || !strings.Contains(p.NoControl, tc.wantWhy) {
					t.Errorf("control flows %+v, reason %q; want none because %q", ctl, p.NoControl, tc.wantWhy)
				}
				return
			}
			if len(ctl) != 1 || p.NoControl != "" {
				t.Fatalf("control flows %+v (reason %q), want one", ctl, p.NoControl)
			}
			if got := [2]int{ctl[0].ClientNode, ctl[0].ServerNode}; got != tc.wantCtl {
				t.Errorf("control flow nodes %v, want %v", got, tc.wantCtl)
			}
		})
	}
}

func TestAutoBudgetAndResolution(t *testing.T) {
	// Few flows get 200 rps each; many share what the CPUs carry.
	if got := AutoBudget(3, 2); got != 600 {
		t.Errorf("3 flows on 2 CPUs: %v rps, want 600", got)
	}
	if got := AutoBudget(2, 2); got != 400 {
		t.Errorf("2 flows on 2 CPUs: %v rps, want 400", got)
	}
	if got := AutoBudget(33, 8); got != 2400 {
		t.Errorf("33 flows on 8 CPUs: %v rps, want 2400", got)
	}
	sc := mustLookup(t, "baseline")
	p, err := makePlan(sc, 0)
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range p.Flows {
		total += f.QPS
	}
	if want := AutoBudget(len(p.Flows), runtime.NumCPU()); math.Abs(total-want) > 1e-6 {
		t.Errorf("auto budget split: %v rps in all, want %v", total, want)
	}

	refs := []results.FlowRef{{FlowMeta: measure.FlowMeta{ID: "fine", QPS: 20}}, {FlowMeta: measure.FlowMeta{ID: "coarse", QPS: 8}}}
	if w := resolutionWarning(refs, 100*time.Millisecond); !strings.Contains(w, "1 flow(s)") || !strings.Contains(w, "125 ms") || !strings.Contains(w, "coarse") {
		t.Errorf("warning %q", w)
	}
	if w := resolutionWarning(refs[:1], 100*time.Millisecond); w != "" {
		t.Errorf("fine flows warned: %q", w)
	}
}

// A segment partition cuts every link between nodes: the planner's control
// flow stays inside one node, so the trial is not judged noisy by it; a
// control flow that is disrupted anyway (another trial's harness trouble)
// still makes its trial noisy.
func TestControlFlowNoiseFollowsPlacement(t *testing.T) {
	win := measure.Window{Start: time.Unix(1000, 0), End: time.Unix(1010, 0)}
	inject, recover := win.Start.Add(3*time.Second), win.Start.Add(6*time.Second)
	flow := func(down bool) []events.Event {
		var evs []events.Event
		for at := win.Start; at.Before(win.End); at = at.Add(20 * time.Millisecond) {
			e := events.Event{Start: at.UnixNano(), Latency: int64(2 * time.Millisecond), Class: events.ClassOK}
			if down && !at.Before(inject) && at.Before(recover) {
				e.Class, e.Latency = events.ClassTimeout, int64(500*time.Millisecond)
			}
			evs = append(evs, e)
		}
		return evs
	}
	measureWith := func(sc Scenario, cut func(f plannedFlow) bool) measure.Trial {
		p, err := makePlan(sc, 450)
		if err != nil {
			t.Fatal(err)
		}
		var sums []measure.FlowSummary
		for _, f := range p.Flows {
			meta := measure.FlowMeta{ID: f.ID, Client: f.Client, Server: f.Server, ClientNode: nodeName(f.ClientNode),
				ServerNode: nodeName(f.ServerNode), QPS: 50, Control: f.Control, Profile: f.Kind.Profile}
			sums = append(sums, measure.AnalyzeFlow(meta, flow(cut(f)), win, &measure.Fault{Inject: inject, Recover: recover}, measure.Options{}))
		}
		return measure.Summarize(sums)
	}
	// Every flow between two nodes is cut, as the segment partition does.
	seg := measureWith(mustLookup(t, "segment-partition"), func(f plannedFlow) bool { return f.ClientNode != f.ServerNode })
	if seg.Noisy {
		t.Errorf("segment-partition flagged noisy: %v", seg.NoisyReasons)
	}
	if len(seg.Radius.Flows) == 0 {
		t.Error("the partition disrupted nothing: the test measures nothing")
	}
	// Placed as before (node-1 to node-2), the same cut reaches the control.
	old := mustLookup(t, "segment-partition")
	old.Fault.Kind = FaultNodeCrash
	if tr := measureWith(old, func(f plannedFlow) bool { return f.ClientNode != f.ServerNode }); !tr.Noisy {
		t.Error("a control flow between two nodes cut by the partition should make the trial noisy")
	}
	// Another trial whose control flow is disrupted is still noisy.
	crash := measureWith(mustLookup(t, "node-crash"), func(f plannedFlow) bool { return f.Control || f.ClientNode == 3 || f.ServerNode == 3 })
	if !crash.Noisy || !strings.Contains(strings.Join(crash.NoisyReasons, ";"), "control flow") {
		t.Errorf("node-crash with a disrupted control flow: noisy=%v %v", crash.Noisy, crash.NoisyReasons)
	}
}
