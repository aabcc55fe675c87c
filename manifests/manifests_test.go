package manifests

import (
	"bytes"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	loadagent "blastradius.dev/blastradius/framework/load"
	"blastradius.dev/blastradius/proxy/controlplane"
	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/node"
)

var nodes = []string{"w1", "w2", "w3"}

func params(mode string) Params {
	p := Params{Mode: mode, Image: "blastradius:v9", Nodes: nodes,
		Pods: []Pod{
			{Name: "client-n1", Role: "client", Node: 1}, {Name: "client-n2", Role: "client", Node: 2},
			{Name: "server-n1", Role: "server", Node: 1}, {Name: "server-n3", Role: "server", Node: 3},
			{Name: "server-n3-moved", Role: "spare", Node: 1},
			{Name: "ctl-client", Role: "control-client", Node: 1}, {Name: "ctl-server", Role: "control-server", Node: 2},
		},
		Services: map[string][]string{"echo-n1": {"server-n1"}, "echo-n3": {"server-n3", "server-n3-moved"}},
	}
	if mode == "ambient" {
		p.Waypoint = &Waypoint{Service: "echo-n3", Replicas: 2}
	}
	return p
}

func TestEmbeddedManifestsDecodeStrictly(t *testing.T) {
	dec, err := Decoded()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"namespace.yaml", "server.yaml", "service.yaml", "client.yaml", "controlplane.yaml", "nodeproxy.yaml", "waypoint.yaml", "sidecar.yaml"} {
		if len(dec[f]) == 0 {
			t.Errorf("%s: no objects", f)
		}
	}
	if len(Files()) != len(dec) {
		t.Errorf("files %v, decoded %d", Files(), len(dec))
	}
}

func TestDecodeStrictRejects(t *testing.T) {
	cases := map[string]string{
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 1\n  replicaz: 2\n": "unknown field",
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  type: ClusterIP\n  type: NodePort\n":  "already set",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n":                                               "not one the manifests use",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n  - name: a\n    imag: b\n":  "unknown field",
	}
	for in, want := range cases {
		if _, err := DecodeStrict([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", in, err, want)
		}
	}
}

// Every rendered object decodes strictly back into its API type (so what
// is applied is what the types allow), is labelled as ours, sits in the
// mode's namespace and runs the given image.
func TestRenderEveryObject(t *testing.T) {
	for _, mode := range []string{"none", "sidecar", "ambient"} {
		objs, err := Render(params(mode))
		if err != nil {
			t.Fatal(mode, err)
		}
		for _, o := range objs {
			ref := mode + " " + o.GetKind() + "/" + o.GetName()
			b, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeStrict(b); err != nil {
				t.Errorf("%s: %v", ref, err)
			}
			l := o.GetLabels()
			if l[LabelPartOf] != "blastradius" || l[LabelManagedBy] != "blastradius" || l[LabelMode] != mode {
				t.Errorf("%s: labels %v", ref, l)
			}
			switch o.GetKind() {
			case "Namespace":
				if o.GetNamespace() != "" || o.GetName() != Namespace(mode) {
					t.Errorf("%s: namespace object %s/%s", ref, o.GetNamespace(), o.GetName())
				}
			case "ClusterRole", "ClusterRoleBinding":
				if o.GetNamespace() != "" {
					t.Errorf("%s: cluster-scoped object in namespace %q", ref, o.GetNamespace())
				}
				if o.GetKind() == "ClusterRoleBinding" {
					subj, _, _ := unstructured.NestedSlice(o.Object, "subjects")
					if len(subj) != 1 || subj[0].(map[string]any)["namespace"] != Namespace(mode) {
						t.Errorf("%s: subjects %v, want the trial's service account", ref, subj)
					}
				}
			default:
				if o.GetNamespace() != Namespace(mode) {
					t.Errorf("%s: namespace %q", ref, o.GetNamespace())
				}
			}
			if _, ok, _ := unstructured.NestedFieldNoCopy(o.Object, "metadata", "creationTimestamp"); ok {
				t.Errorf("%s: creationTimestamp in an apply configuration", ref)
			}
			spec := podSpecOf(t, o)
			if spec == nil {
				continue
			}
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				if c.Image != "blastradius:v9" || c.Command[0] != Binary {
					t.Errorf("%s/%s: image %q command %v", ref, c.Name, c.Image, c.Command)
				}
			}
			terms := spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
			for _, v := range terms[0].MatchExpressions[0].Values {
				if !slices.Contains(nodes, v) {
					t.Errorf("%s: pinned to %q, not a cluster node", ref, v)
				}
			}
		}
	}
}

func podSpecOf(t *testing.T, o *unstructured.Unstructured) *corev1.PodSpec {
	var obj runtime.Object
	switch o.GetKind() {
	case "Deployment":
		obj = &appsv1.Deployment{}
	case "DaemonSet":
		obj = &appsv1.DaemonSet{}
	default:
		return nil
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, obj); err != nil {
		t.Fatal(err)
	}
	return podSpec(obj)
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// The reference data plane's namespaces carry the tool's own label, never
// Istio's: Istio installed on the same cluster must not take their pods.
func TestNamespaceLabelsPerMode(t *testing.T) {
	want := map[string]string{"none": "", "sidecar": "sidecar", "ambient": "ambient"}
	for mode, label := range want {
		objs, err := Render(params(mode))
		if err != nil {
			t.Fatal(err)
		}
		if objs[0].GetKind() != "Namespace" {
			t.Fatalf("%s: first object %s, want the namespace", mode, objs[0].GetKind())
		}
		got := objs[0].GetLabels()
		if got[DataplaneModeLabel] != label {
			t.Errorf("%s: label %s=%q, want %q", mode, DataplaneModeLabel, got[DataplaneModeLabel], label)
		}
		for _, k := range []string{"istio.io/dataplane-mode", "istio-injection", "istio.io/rev"} {
			if v, ok := got[k]; ok {
				t.Errorf("%s: Istio's label %s=%q on the reference's namespace", mode, k, v)
			}
		}
	}
}

// The data plane's own pods (control plane, node proxies, waypoints) opt
// out of the enrolment label their namespace carries: the node agent must
// never redirect the traffic of what it hands pods to.
func TestDataPlanePodsOptOutOfTheirOwnMesh(t *testing.T) {
	p := params("ambient")
	p.Waypoint = &Waypoint{Service: "echo-n1", Replicas: 1}
	objs, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, o := range objs {
		labels, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
		switch labels[LabelPod] {
		case "controlplane", "ztunnel", "waypoint":
			seen++
			if labels[DataplaneModeLabel] != "none" {
				t.Errorf("%s/%s: pod label %s=%q, want none", o.GetKind(), o.GetName(), DataplaneModeLabel, labels[DataplaneModeLabel])
			}
		}
	}
	if seen < 3 {
		t.Errorf("found %d data plane workloads, want the control plane, the node proxies and the waypoint", seen)
	}
}

func TestRenderPerMode(t *testing.T) {
	kinds := func(mode string) []string {
		objs, err := Render(params(mode))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, o := range objs {
			out = append(out, o.GetKind()+"/"+o.GetName())
		}
		return out
	}
	none, sidecar, ambient := kinds("none"), kinds("sidecar"), kinds("ambient")
	for _, o := range []string{"Deployment/controlplane", "DaemonSet/ztunnel", "Deployment/waypoint"} {
		if slices.Contains(none, o) {
			t.Errorf("none has %s", o)
		}
	}
	if !slices.Contains(sidecar, "Deployment/controlplane") || slices.Contains(sidecar, "DaemonSet/ztunnel") {
		t.Errorf("sidecar: %v", sidecar)
	}
	for _, o := range []string{"Service/controlplane", "ConfigMap/registry", "Deployment/controlplane", "DaemonSet/ztunnel", "Service/waypoint", "Deployment/waypoint"} {
		if !slices.Contains(ambient, o) {
			t.Errorf("ambient lacks %s", o)
		}
	}
	// The control plane Service comes before every pod that reads its
	// environment variables.
	cp := slices.Index(ambient, "Service/controlplane")
	for i, o := range ambient {
		if (strings.HasPrefix(o, "Deployment/") || strings.HasPrefix(o, "DaemonSet/")) && i < cp {
			t.Errorf("%s before Service/controlplane", o)
		}
	}

	objs, _ := Render(params("sidecar"))
	for _, name := range []string{"server-n1", "ctl-client", "server-n3-moved"} {
		spec := podSpecOf(t, find(objs, "Deployment", name))
		if len(spec.Containers) != 2 || spec.Containers[1].Name != "proxy" || len(spec.InitContainers) != 1 {
			t.Errorf("sidecar %s: containers %d, init %d", name, len(spec.Containers), len(spec.InitContainers))
		}
	}
	if spec := podSpecOf(t, find(objs, "Deployment", "controlplane")); len(spec.Containers) != 1 {
		t.Errorf("the control plane got a sidecar")
	}
}

func TestRenderFollowsThePlan(t *testing.T) {
	objs, err := Render(params("ambient"))
	if err != nil {
		t.Fatal(err)
	}
	pinned := func(kind, name string) []string {
		o := find(objs, kind, name)
		if o == nil {
			t.Fatalf("no %s/%s", kind, name)
		}
		return podSpecOf(t, o).Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values
	}
	for name, want := range map[string]string{"server-n1": "w1", "server-n3": "w3", "server-n3-moved": "w1", "ctl-server": "w2", "controlplane": "w1"} {
		if got := pinned("Deployment", name); len(got) != 1 || got[0] != want {
			t.Errorf("%s pinned to %v, want %s", name, got, want)
		}
	}
	for _, ds := range []string{"client", "ztunnel"} {
		if got := pinned("DaemonSet", ds); !slices.Equal(got, nodes) {
			t.Errorf("%s on %v", ds, got)
		}
	}
	spare := find(objs, "Deployment", "server-n3-moved")
	if r, _, _ := unstructured.NestedInt64(spare.Object, "spec", "replicas"); r != 0 {
		t.Errorf("spare has %d replicas, want 0 until a drain", r)
	}
	wp := find(objs, "Deployment", "waypoint")
	if r, _, _ := unstructured.NestedInt64(wp.Object, "spec", "replicas"); r != 2 {
		t.Errorf("waypoint replicas %d", r)
	}
	// A service selects exactly its member pods.
	svc := find(objs, "Service", "echo-n3")
	sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		l, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
		match := true
		for k, v := range sel {
			match = match && l[k] == v
		}
		if member := o.GetName() == "server-n3" || o.GetName() == "server-n3-moved"; match != member {
			t.Errorf("echo-n3 selects %s: %v", o.GetName(), match)
		}
	}
	// Settings reach the arguments.
	p := params("ambient")
	p.CertTTL, p.Drain = 90e9, 2e9
	objs, _ = Render(p)
	if !strings.Contains(strings.Join(Commands(find(objs, "Deployment", "controlplane")), " "), "--cert-ttl 1m30s") ||
		!strings.Contains(strings.Join(Commands(find(objs, "DaemonSet", "ztunnel")), " "), "--drain-deadline 2s") {
		t.Errorf("cert TTL / drain not applied")
	}
}

func TestRenderBadParams(t *testing.T) {
	for want, p := range map[string]Params{
		`mode "mesh" unknown`:         {Mode: "mesh", Image: "i", Nodes: nodes},
		"image":                       {Mode: "none", Nodes: nodes},
		"no nodes":                    {Mode: "none", Image: "i"},
		"the cluster has nodes 1..3":  {Mode: "none", Image: "i", Nodes: nodes, Pods: []Pod{{Name: "s", Role: "server", Node: 4}}},
		`role "db" unknown`:           {Mode: "none", Image: "i", Nodes: nodes, Pods: []Pod{{Name: "s", Role: "db", Node: 1}}},
		"waypoint needs mode ambient": {Mode: "sidecar", Image: "i", Nodes: nodes, Waypoint: &Waypoint{Service: "x", Replicas: 1}},
	} {
		if _, err := Render(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: got %v, want %q", p, err, want)
		}
	}
}

// The containers run what the embedded provider runs: every subcommand is
// one the binary has (or is listed as not built yet), and every flag is
// one that subcommand defines.
func TestCommandsMatchTheBinary(t *testing.T) {
	help := map[string]func([]string, io.Writer, io.Writer) int{
		"agent": loadagent.AgentMain, "proxy": node.Main, "controlplane": controlplane.Main,
		"node-agent": inpod.NodeAgentMain, "redirect": inpod.RedirectMain,
	}
	flagsOf := map[string][]string{}
	for name, main := range help {
		var out, errb bytes.Buffer
		main([]string{"--help"}, &out, &errb)
		for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z-]+)`).FindAllStringSubmatch(out.String()+errb.String(), -1) {
			flagsOf[name] = append(flagsOf[name], "--"+m[1])
		}
		if len(flagsOf[name]) == 0 {
			t.Fatalf("%s --help lists no flags", name)
		}
	}
	seen := map[string]bool{}
	for _, mode := range []string{"none", "sidecar", "ambient"} {
		objs, err := Render(params(mode))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			spec := podSpecOf(t, o)
			if spec == nil {
				continue
			}
			for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
				sub := c.Args[0]
				seen[sub] = true
				if _, pending := NotBuilt[sub]; pending {
					continue
				}
				known, ok := flagsOf[sub]
				if !ok {
					t.Errorf("%s/%s: subcommand %q is neither built nor listed in NotBuilt", o.GetName(), c.Name, sub)
					continue
				}
				for _, a := range c.Args[1:] {
					if strings.HasPrefix(a, "--") && !slices.Contains(known, a) {
						t.Errorf("%s/%s: %s has no flag %s", o.GetName(), c.Name, sub, a)
					}
				}
			}
		}
	}
	for sub := range NotBuilt {
		if !seen[sub] {
			t.Errorf("NotBuilt lists %s, which no manifest runs", sub)
		}
	}
}
