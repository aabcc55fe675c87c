package scenario

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkFileError asserts the error format every caller relies on: one
// line, starting with the file name.
func checkFileError(t testing.TB, name string, err error) {
	t.Helper()
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("error spans several lines: %q", msg)
	}
	if !strings.HasPrefix(msg, name+":") {
		t.Errorf("error does not start with %q: %q", name+":", msg)
	}
}

func TestParseFileErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     string // the whole error, or its start when it ends in "..."
	}{
		{"empty file", "", "x.yaml: empty file (a scenario needs at least name, topology and load)"},
		{"comments only", "# nothing yet\n", "x.yaml: empty file (a scenario needs at least name, topology and load)"},
		{"null document", "~\n", "x.yaml:1:1: empty document (a scenario needs at least name, topology and load)"},
		{"not a mapping", "- a\n- b\n", "x.yaml:1:1: want a mapping of the scenario's fields, got a list"},
		{"syntax error", "name: x\ntopology:\n  nodes: 3\n bad: [\n", "x.yaml:3: syntax error: did not find expected key"},
		{"mapping value in scalar", "name: x\ntopology: nodes: 3\n", "x.yaml:2: syntax error: mapping values are not allowed in this context"},
		{"two documents", "name: x\ntopology: {nodes: 3}\nload: {duration: 5s}\n---\nname: y\n",
			"x.yaml:5:1: a second YAML document: a scenario file holds exactly one (remove the \"---\")"},
		{"unknown top-level field", "name: x\ntopolgy: {nodes: 3}\n", "x.yaml:2:1: topolgy: unknown field (known: name, description, topology, modes, mesh, flows, load, fault, trials, expect)"},
		{"unknown nested field", "name: x\ntopology:\n  nodes: 3\n  nodez: 3\n", "x.yaml:4:3: topology.nodez: unknown field (known: nodes, workloadsPerNode)"},
		{"misspelt field", "name: x\ntopology: {nodes: 3, workloads_per_node: 2}\n", "x.yaml:2:22: topology.workloads_per_node: unknown field (did you mean workloadsPerNode?)"},
		{"duplicate field", "name: x\nname: y\n", "x.yaml:2:1: name: given twice (first on line 1)"},
		{"missing name", "topology: {nodes: 3}\nload: {duration: 5s}\n", "x.yaml:1:1: name: required"},
		{"bad name", "name: My Scenario\n", `x.yaml:1:7: name: "My Scenario": want lower-case letters, digits and dashes, at most 63 characters`},
		{"missing topology.nodes", "name: x\ntopology:\n  workloadsPerNode: 2\nload: {duration: 5s}\n", "x.yaml:2:1: topology.nodes: required"},
		{"wrong type", "name: x\ntopology:\n  nodes: three\n", `x.yaml:3:10: topology.nodes: want a whole number, got "three"`},
		{"quoted number", "name: x\ntopology: {nodes: \"3\"}\n", `x.yaml:2:19: topology.nodes: want a whole number, got "3"`},
		{"too many nodes", "name: x\ntopology: {nodes: 21}\n", "x.yaml:2:19: topology.nodes: 21 is out of range 1..20"},
		{"zero workloads", "name: x\ntopology: {nodes: 2, workloadsPerNode: 0}\n", "x.yaml:2:40: topology.workloadsPerNode: 0 is out of range 1..50"},
		{"missing load", "name: x\ntopology: {nodes: 2}\n", "x.yaml:1:1: load: required"},
		{"missing load.duration", "name: x\ntopology: {nodes: 2}\nload: {budget: 100}\n", "x.yaml:3:1: load.duration: required"},
		{"bad duration", "name: x\ntopology: {nodes: 2}\nload: {duration: 12}\n", `x.yaml:3:18: load.duration: "12" is not a duration (want e.g. "3s" or "500ms")`},
		{"duration out of range", "name: x\ntopology: {nodes: 2}\nload: {duration: 1h}\n", "x.yaml:3:18: load.duration: 1h0m0s is out of range 1s..10m0s"},
		{"budget out of range", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s, budget: 0}\n", "x.yaml:3:30: load.budget: 0 is out of range (0, 100000]"},
		{"budget not a number", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s, budget: .nan}\n", "x.yaml:3:30: load.budget: .nan is out of range (0, 100000]"},
		{"unknown mode", "name: x\ntopology: {nodes: 2}\nmodes: [ambient, istio]\n", `x.yaml:3:18: modes[1]: unknown mode "istio" (known: none, sidecar, ambient)`},
		{"modes not a list", "name: x\ntopology: {nodes: 2}\nmodes: ambient\n", `x.yaml:3:8: modes: want a list, got "ambient"`},
		{"cert TTL too short", "name: x\ntopology: {nodes: 2}\nmesh: {certTTL: 500ms}\n", "x.yaml:3:17: mesh.certTTL: 500ms is too short (at least 1s)"},
		{"unknown handoff", "name: x\ntopology: {nodes: 2}\nmesh: {handoff: fd-pass}\n", "x.yaml:3:17: mesh.handoff: unknown handoff strategy \"fd-pass\" (known: migrate, none)"},
		{"waypoint service not in topology", "name: x\ntopology: {nodes: 2}\nmesh:\n  waypoint: {service: echo-n3, replicas: 2}\n",
			`x.yaml:4:23: mesh.waypoint.service: "echo-n3" is not a service of the topology (echo-n1..echo-n2)`},
		{"waypoint replicas out of range", "name: x\ntopology: {nodes: 3}\nmesh:\n  waypoint: {service: echo-n3, replicas: 6}\n",
			"x.yaml:4:42: mesh.waypoint.replicas: 6 is out of range 1..5"},
		{"waypoint without a service flow", "name: x\ntopology: {nodes: 3}\nmesh: {waypoint: {service: echo-n3}}\nflows: {matrix: [pod/http-newconn]}\nload: {duration: 5s}\n",
			"x.yaml:3:8: mesh.waypoint: impossible topology: waypoint service echo-n3 is not a service of this topology ([])"},
		{"waypoint outside ambient", "name: x\ntopology: {nodes: 3}\nmodes: [sidecar]\nmesh: {waypoint: {service: echo-n3}}\nload: {duration: 5s}\n",
			"x.yaml:4:8: mesh.waypoint: waypoints exist only in ambient mode, which modes leaves out"},
		{"unknown via", "name: x\ntopology: {nodes: 2}\nflows: {matrix: [node/http-newconn]}\n", `x.yaml:3:18: flows.matrix[0]: unknown via "node" (known: svc, pod)`},
		{"unknown profile", "name: x\ntopology: {nodes: 2}\nflows:\n  custom:\n    - {from: 1, to: 2, via: pod, profile: grpc}\n",
			`x.yaml:5:43: flows.custom[0].profile: unknown profile "grpc" (known: http-keepalive, http-newconn, tcp-stream)`},
		{"matrix entry without via", "name: x\ntopology: {nodes: 2}\nflows: {matrix: [http-newconn]}\n", `x.yaml:3:18: flows.matrix[0]: "http-newconn": want via/profile, e.g. pod/http-newconn`},
		{"matrix and custom", "name: x\ntopology: {nodes: 2}\nflows:\n  matrix: [pod/http-newconn]\n  custom: [{from: 1, to: 2, via: pod, profile: http-newconn}]\n",
			"x.yaml:5:3: flows.custom: give matrix or custom, not both (custom replaces the matrix)"},
		{"custom flow node out of topology", "name: x\ntopology: {nodes: 3}\nflows:\n  custom:\n    - {from: 1, to: 4, via: pod, profile: http-newconn}\n",
			"x.yaml:5:21: flows.custom[0].to: impossible topology: node 4 is not in it (nodes 1..3)"},
		{"custom flow missing profile", "name: x\ntopology: {nodes: 3}\nflows:\n  custom:\n    - {from: 1, to: 2, via: pod}\n",
			"x.yaml:5:7: flows.custom[0].profile: required"},
		{"custom flow twice", "name: x\ntopology: {nodes: 3}\nflows:\n  custom:\n    - {from: 1, to: 2, via: pod, profile: tcp-stream}\n    - {from: 1, to: 2, via: pod, profile: tcp-stream}\n",
			"x.yaml:6:7: flows.custom[1]: the same flow as flows.custom[0] (n1-to-n2.pod.tcp-stream)"},
		{"empty matrix", "name: x\ntopology: {nodes: 2}\nflows: {matrix: []}\n", "x.yaml:3:17: flows.matrix: empty list (leave the field out instead)"},
		{"missing fault.kind", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault:\n  at: 1s\n", "x.yaml:4:1: fault.kind: required"},
		{"missing fault.at", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault:\n  kind: node-crash\n", "x.yaml:4:1: fault.at: required"},
		{"empty fault", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault:\n", "x.yaml:4:1: fault.kind: required"},
		{"unknown fault kind", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: meteor, at: 1s}\n",
			`x.yaml:4:15: fault.kind: unknown fault "meteor" (known: blackhole, controlplane-crash, controlplane-down, node-agent-crash, node-crash, ...`},
		{"fault node not a node", "name: x\ntopology: {nodes: 3}\nload: {duration: 12s}\nfault:\n  kind: node-crash\n  at: 3s\n  node: node-5\n",
			`x.yaml:7:9: fault.node: "node-5" is not a node (the topology has node-1..node-3)`},
		{"fault peer not a node", "name: x\ntopology: {nodes: 3}\nload: {duration: 12s}\nfault: {kind: node-partition, at: 3s, peer: node-0}\n",
			`x.yaml:4:45: fault.peer: "node-0" is not a node (the topology has node-1..node-3)`},
		{"fault peer is the target", "name: x\ntopology: {nodes: 3}\nload: {duration: 12s}\nfault: {kind: node-partition, at: 3s, peer: node-3}\n",
			"x.yaml:4:45: fault.peer: node-3 is the fault's own node: a partition needs two sides"},
		{"fault node on an untargeted fault", "name: x\ntopology: {nodes: 3}\nload: {duration: 12s}\nfault: {kind: controlplane-crash, at: 3s, node: node-1}\n",
			"x.yaml:4:43: fault.node: controlplane-crash does not use node (only ..."},
		{"fault at the end of load", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: node-crash, at: 5s}\n",
			"x.yaml:4:31: fault.at: 5s is not before the end of load (load.duration 5s)"},
		{"recovery after the end of load", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: node-crash, at: 3s, recoverAfter: 2s}\n",
			"x.yaml:4:49: fault.recoverAfter: recovery at 5s is not before the end of load (load.duration 5s); leave recoverAfter out for no recovery"},
		{"holes on a non-blackhole fault", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: node-crash, at: 1s, holes: [100ms]}\n",
			"x.yaml:4:35: fault.holes: node-crash does not use holes (only blackhole does)"},
		{"blackhole without holes", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: blackhole, at: 1s}\n", "x.yaml:4:1: fault.holes: required"},
		{"bad hole", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: blackhole, at: 1s, holes: [100ms, soon]}\n",
			`x.yaml:4:49: fault.holes[1]: "soon" is not a duration (want e.g. "3s" or "500ms")`},
		{"holes past the end of load", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: blackhole, at: 1s, gap: 1s, holes: [1s, 1s, 1s]}\n",
			"x.yaml:4:50: fault.holes: the last hole ends at 6s, not before the end of load (load.duration 5s)"},
		{"unknown blackhole drop", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: blackhole, at: 1s, holes: [1s], drop: server-pod}\n",
			`x.yaml:4:53: fault.drop: unknown drop "server-pod" (known: flow, client-pod)`},
		{"drop on a non-blackhole fault", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: node-crash, at: 1s, drop: client-pod}\n",
			"x.yaml:4:35: fault.drop: node-crash does not use drop (only blackhole does)"},
		{"blackhole flow not in the scenario", "name: x\ntopology: {nodes: 2}\nflows: {matrix: [pod/tcp-stream]}\nload: {duration: 5s}\nfault: {kind: blackhole, at: 1s, holes: [1s], flow: n1-to-n3.pod.tcp-stream}\n",
			`x.yaml:5:53: fault.flow: no flow "n1-to-n3.pod.tcp-stream" in this scenario (flows: n1-to-n1.pod.tcp-stream, n1-to-n2.pod.tcp-stream, n2-to-n1.pod.tcp-stream, n2-to-n2.pod.tcp-stream)`},
		{"sidecar pod not in the scenario", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: sidecar-crash, at: 1s, pod: server-n7}\n",
			`x.yaml:4:43: fault.pod: no pod "server-n7" in this scenario (pods: client-n1, server-n1, server-n2, client-n2, ctl-client, ctl-server)`},
		{"fault mode outside the scenario's modes", "name: x\ntopology: {nodes: 2}\nmodes: [none, sidecar]\nload: {duration: 5s}\nfault: {kind: node-proxy-crash, at: 1s}\n",
			"x.yaml:3:1: modes: fault node-proxy-crash runs only in ambient (only ambient mode has a proxy per node): the scenario could never run"},
		{"waypoint fault without a waypoint", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: waypoint-outage, at: 1s}\n",
			"x.yaml:4:9: fault.kind: waypoint-outage needs a waypoint: give mesh.waypoint"},
		{"then after the control plane is back", "name: x\ntopology: {nodes: 3}\nload: {duration: 12s}\nfault: {kind: node-proxy-crash-during-cp-outage, at: 3s, then: 6s, recoverAfter: 6s}\n",
			"x.yaml:4:64: fault.then: the node proxy crash (6s) must come before the control plane returns (recoverAfter 6s)"},
		{"partition on one node", "name: x\ntopology: {nodes: 1}\nload: {duration: 5s}\nfault: {kind: node-partition, at: 1s}\n",
			"x.yaml:4:1: fault: impossible topology: a partition needs at least two nodes"},
		{"drain on one node", "name: x\ntopology: {nodes: 1}\nload: {duration: 5s}\nfault: {kind: node-drain, at: 1s}\n",
			"x.yaml:4:1: fault: impossible topology: a drain needs another node to move workloads to"},
		{"trials out of range", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\ntrials: 0\n", "x.yaml:4:9: trials: 0 is out of range 1..100"},
		{"unknown expectation", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nexpect: [no-disruption, all-good]\n",
			`x.yaml:4:25: expect[1]: unknown expectation "all-good" (known: no-disruption, node-radius, ...`},
		{"verdict expectation without a fault", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nexpect: [contained-to-node]\n",
			"x.yaml:4:10: expect[0]: contained-to-node needs a fault: without one there is no verdict"},
		{"radius expectation on an untargeted fault", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: controlplane-crash, at: 1s}\nexpect: [proxy-radius]\n",
			"x.yaml:5:10: expect[0]: proxy-radius needs a fault aimed at a node (one that takes fault.node)"},
		{"handoff expectation on a crash", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nfault: {kind: node-crash, at: 1s}\nexpect: [graceful-handoff]\n",
			"x.yaml:5:10: expect[0]: graceful-handoff needs a node-proxy-restart or node-proxy-rolling-upgrade fault: it checks their handoffs"},
		{"bad expectation argument", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nexpect: [\"max-disruption soon\"]\n",
			`x.yaml:4:10: expect[0]: "max-disruption soon": "soon" is not a duration`},
		{"multi-line value stays on one line", "name: x\ntopology: {nodes: 2}\nload: {duration: 5s}\nexpect:\n  - |\n    no-disruption\n    node-radius\n",
			`x.yaml:5:5: expect[0]: "no-disruption\nnode-radius\n": no-disruption takes no argument`},
		{"alias of the wrong kind", "name: &n x\ntopology: *n\n", `x.yaml:2:11: topology: want a mapping of fields nodes, workloadsPerNode, got "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFile("x.yaml", []byte(tc.in))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			checkFileError(t, "x.yaml", err)
			got := err.Error()
			if prefix, ok := strings.CutSuffix(tc.want, "..."); ok {
				if !strings.HasPrefix(got, prefix) {
					t.Errorf("error\n got %q\nwant %q...", got, prefix)
				}
			} else if got != tc.want {
				t.Errorf("error\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// everyField uses every field of the format; the fuzzer seeds its corpus
// and checks its encoder with it too.
const everyField = `
name: every-field
description: |
  Two lines
  of text.
topology:
  nodes: 3
  workloadsPerNode: 2
modes: [ambient, sidecar]
mesh:
  certTTL: 10s
  drain: 3s
  handoff: none
  waypoint: {service: echo-n3, replicas: 2}
flows:
  custom:
    - {from: 1, to: 3, via: svc, profile: http-keepalive, qps: 200}
    - {from: 2, to: 3, via: pod, profile: tcp-stream}
load:
  duration: 12s
  budget: 450.5
fault:
  kind: node-proxy-crash-during-cp-outage
  node: node-3
  at: 3s
  then: 2s
  recoverAfter: 6s
trials: 3
expect: [node-radius, "max-disruption 2s", verdict contained]
`

// TestParseFileEveryField decodes a file that uses every field.
func TestParseFileEveryField(t *testing.T) {
	in := everyField
	got, err := ParseFile("dir/every.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Scenario{
		Name: "every-field", Description: "Two lines\nof text.", File: "dir/every.yaml",
		Nodes: 3, WorkloadsPerNode: 2,
		Custom: []CustomFlow{
			{ClientNode: 1, ServerNode: 3, Kind: FlowKind{Via: "svc", Profile: ProfileKeepAlive}, QPS: 200},
			{ClientNode: 2, ServerNode: 3, Kind: FlowKind{Via: "pod", Profile: ProfileStream}},
		},
		Duration: 12 * time.Second, Budget: 450.5,
		Fault: Fault{Kind: FaultNodeProxyCrashCPDown, Node: "node-3", At: 3 * time.Second, Then: 2 * time.Second, RecoverAfter: 6 * time.Second},
		Mesh: Mesh{Modes: []string{"ambient", "sidecar"}, CertTTL: 10 * time.Second, Drain: 3 * time.Second, Handoff: HandoffNone,
			Waypoint: &Waypoint{Service: "echo-n3", Replicas: 2}},
		Trials: 3,
		Expect: []Expect{{Name: ExpectNodeRadius}, {Name: ExpectMaxDisruption, Max: 2 * time.Second}, {Name: ExpectVerdict, Verdict: VerdictContained}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}
}

// TestParseFileDefaults: what a minimal file leaves to the defaults.
func TestParseFileDefaults(t *testing.T) {
	got, err := ParseFile("min.yaml", []byte("name: min\ntopology: {nodes: 2}\nload: {duration: 5s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Scenario{Name: "min", File: "min.yaml", Nodes: 2, Profiles: DefaultFlows(), Duration: 5 * time.Second}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// A waypoint's replicas default to one; anchors and aliases work.
	got, err = ParseFile("wp.yaml", []byte("name: wp\ntopology: {nodes: &n 2}\nmesh: {waypoint: {service: echo-n2}}\nload: {duration: 5s}\ntrials: *n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if w := got.Mesh.Waypoint; w == nil || w.Replicas != 1 || got.Trials != 2 {
		t.Errorf("waypoint %+v, trials %d; want 1 replica, 2 trials", w, got.Trials)
	}
}

// TestParseFileBlackholeDrop: drop says what a black hole drops; left out,
// the flow at its server, as before the field existed.
func TestParseFileBlackholeDrop(t *testing.T) {
	const head = "name: x\ntopology: {nodes: 2}\nflows: {matrix: [pod/http-newconn, pod/tcp-stream]}\nload: {duration: 5s}\n"
	for in, want := range map[string]string{
		head + "fault: {kind: blackhole, at: 1s, holes: [1s]}\n":                                                  "",
		head + "fault: {kind: blackhole, at: 1s, holes: [1s], drop: flow}\n":                                      DropFlow,
		head + "fault: {kind: blackhole, at: 1s, holes: [1s], drop: client-pod, flow: n2-to-n1.pod.tcp-stream}\n": DropClientPod,
	} {
		sc, err := ParseFile("x.yaml", []byte(in))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if sc.Fault.Drop != want {
			t.Errorf("%s: drop %q, want %q", in, sc.Fault.Drop, want)
		}
	}
}

// TestScenarioFiles loads every example in scenarios/.
func TestScenarioFiles(t *testing.T) {
	paths, err := filepath.Glob("../../scenarios/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 3 {
		t.Fatalf("found %d scenario files in ../../scenarios, want at least 3", len(paths))
	}
	names := map[string]string{}
	trials := false
	for _, p := range paths {
		sc, err := LoadFile(p)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if sc.File != p {
			t.Errorf("%s: File = %q", p, sc.File)
		}
		if prev, dup := names[sc.Name]; dup {
			t.Errorf("%s: name %s already used by %s", p, sc.Name, prev)
		}
		names[sc.Name] = p
		trials = trials || sc.Trials > 1
	}
	if !trials {
		t.Errorf("no example in ../../scenarios runs several trials")
	}
}

// TestFileMirrorsBuiltin: scenarios/node-proxy-crash.yaml is the built-in
// scenario written as a file, so the format can say everything the
// catalogue says for it.
func TestFileMirrorsBuiltin(t *testing.T) {
	got, err := LoadFile("../../scenarios/node-proxy-crash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := mustLookup(t, "node-proxy-crash")
	// What the file adds or leaves out by design: where it came from, the
	// mode its fault needs (the catalogue leaves that to the fault), and
	// membership in the default matrix.
	want.File, want.Mesh.Modes, want.Matrix = got.File, []string{"ambient"}, false
	if !reflect.DeepEqual(got, want) {
		t.Errorf("file\n%+v\nbuilt-in\n%+v", got, want)
	}
}

// TestFileFaultFieldsAreKnown: the fields a fault kind says it reads are
// fault fields of the file format, so a typo there cannot make a field
// unusable.
func TestFileFaultFieldsAreKnown(t *testing.T) {
	known := []string{"flow", "holes", "gap", "drop", "recoverAfter", "then", "peer", "pod"}
	for _, name := range FaultNames() {
		k, _ := LookupFault(name)
		for _, f := range k.Fields {
			if !slices.Contains(known, f) {
				t.Errorf("fault %s reads %q, which is no fault field", name, f)
			}
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing.yaml")
	_, err := LoadFile(p)
	if err == nil {
		t.Fatal("no error for a missing file")
	}
	checkFileError(t, p, err)

	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, make([]byte, maxFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFile(big)
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("got %v, want a too-large error", err)
	}
	checkFileError(t, big, err)
}

// TestParseListFile: a .yaml argument to --scenario is loaded as a file.
func TestParseListFile(t *testing.T) {
	scs, err := ParseList("baseline,../../scenarios/partition.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(scs) != 2 || scs[1].File != "../../scenarios/partition.yaml" || scs[1].Fault.Kind != FaultPartition {
		t.Errorf("got %+v", scs)
	}
}
