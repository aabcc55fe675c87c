//go:build !nokube

package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"blastradius.dev/blastradius/framework/istio/istioinstall"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const kindConfig = "../../kind-config.yaml"

// Bad input for the Kubernetes providers: one line, exit 2, before any
// cluster is looked at.
func TestKubeBadInputExitsTwoWithOneLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badKind := write("kind.yaml", "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodez: []\n")
	twoWorkers := write("two.yaml", "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n- role: worker\n- role: worker\n")
	garbage := write("kubeconfig", "\t: [")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--dry-run"}, "--dry-run needs --provider kind, kubeconfig or local-k8s"},
		{[]string{"run", "--retain"}, "--retain needs --provider kind or local-k8s"},
		{[]string{"run", "--kubeconfig", "x"}, "--kubeconfig needs --provider kind or kubeconfig"},
		{[]string{"run", "--kind-config", kindConfig}, "--kind-config needs --provider kind"},
		{[]string{"run", "--local-k8s-dir", "x"}, "--local-k8s-dir needs --provider local-k8s"},
		{[]string{"run", "--image", "r/b:1"}, "--image needs --provider kind, kubeconfig or local-k8s"},
		{[]string{"run", "--provider", "kind", "--k8s-bin-dir", "x"}, "--k8s-bin-dir needs --provider local-k8s"},
		{[]string{"run", "--provider", "local-k8s", "--kubeconfig", "x"}, "--kubeconfig needs --provider kind or kubeconfig"},
		{[]string{"run", "--provider", "local-k8s", "--kind-config", kindConfig}, "--kind-config needs --provider kind"},
		{[]string{"run", "--provider", "kubeconfig", "--retain", "--dry-run"}, "--retain needs --provider kind or local-k8s"},
		{[]string{"run", "--provider", "kubeconfig", "--reuse"}, "--reuse needs --provider kind"},
		{[]string{"run", "--provider", "kubeconfig", "--kind-config", kindConfig}, "--kind-config needs --provider kind"},
		{[]string{"run", "--provider", "kind", "--kind-config", kindConfig, "--yaml"}, "--yaml needs --dry-run"},
		{[]string{"run", "--provider", "kind", "--kind-config", filepath.Join(dir, "missing.yaml"), "--dry-run"}, "missing.yaml"},
		{[]string{"run", "--provider", "kind", "--kind-config", badKind, "--dry-run"}, badKind + ": invalid"},
		{[]string{"run", "--provider", "kind", "--kind-config", kindConfig, "--scenario", "scale", "--dry-run"}, "scenario scale needs 10 nodes, ../../kind-config.yaml has 3 workers"},
		{[]string{"run", "--provider", "kind", "--kind-config", twoWorkers, "--scenario", "node-crash", "--dry-run"}, "needs 3 nodes"},
		{[]string{"run", "--provider", "kubeconfig", "--kubeconfig", filepath.Join(dir, "none"), "--dry-run"}, "kubeconfig " + filepath.Join(dir, "none")},
		{[]string{"run", "--provider", "kubeconfig", "--kubeconfig", garbage, "--dry-run"}, "kubeconfig " + garbage},
		{[]string{"run", "--provider", "kind", "--kind-config", kindConfig, "--scenario", "bogus", "--dry-run"}, `unknown scenario "bogus"`},
		{[]string{"run", "--provider", "kind", "--kind-config", kindConfig, "--mode", "mesh", "--dry-run"}, `--mode "mesh" unknown`},
		{[]string{"run", "--provider", "k3d"}, `--provider "k3d" unknown (netns, kind, local-k8s, kubeconfig)`},
		{[]string{"run", "--faults", "chaos-mesh"}, "--faults needs --provider kind or kubeconfig"},
		{[]string{"run", "--provider", "local-k8s", "--faults", "chaos-mesh"}, "--faults needs --provider kind or kubeconfig"},
		{[]string{"run", "--provider", "kind", "--kind-config", kindConfig, "--faults", "litmus", "--dry-run"}, `--faults "litmus" unknown (api, chaos-mesh)`},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := dispatch(c.args, &out, &errb)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", c.args, code)
		}
		msg := errb.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: stderr %q, want one line containing %q", c.args, msg, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%v: printed a plan on bad input", c.args)
		}
	}
}

// Without a cluster to reach, kind and kubeconfig stop with one line
// naming what is missing, before any trial starts.
func TestKubeRunWithoutClusterSaysWhatIsMissing(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("PATH", t.TempDir()) // no docker, podman or nerdctl
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--provider", "kind", "--kind-config", kindConfig}, "kind needs docker, podman or nerdctl"},
		{[]string{"run", "--provider", "kubeconfig"}, "no kubeconfig"},
	} {
		out := filepath.Join(t.TempDir(), "run")
		var stdout, errb bytes.Buffer
		code := dispatch(append(c.args, "--out", out), &stdout, &errb)
		msg := errb.String()
		if code != 1 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, stderr %q, want one line with %q", c.args, code, msg, c.want)
		}
		if _, err := os.Stat(filepath.Join(out, "run.json")); err == nil {
			t.Errorf("%v: a run.json was written for a run that never started", c.args)
		}
	}
}

func TestHelpExplainsKubeFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"run", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, f := range []string{"-kubeconfig", "-kind-config", "-retain", "-reuse", "-dry-run", "-yaml", "kind (a kind cluster"} {
		if !strings.Contains(errb.String(), f) {
			t.Errorf("--help does not explain %s", f)
		}
	}
}

func dryRunOutput(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(append([]string{"run", "--dry-run"}, args...), &out, &errb)
	if code != 0 || errb.Len() != 0 {
		t.Fatalf("%v: exit %d, stderr %q", args, code, errb.String())
	}
	return out.String()
}

// The dry run of the default matrix on kind, in every mode, against a
// golden file (go test ./cmd/blastradius -run DryRunKindMatrix -update
// rewrites it), plus the structure a reader relies on.
func TestDryRunKindMatrixGolden(t *testing.T) {
	got := dryRunOutput(t, "--provider", "kind", "--kind-config", kindConfig, "--mode", "none,sidecar,ambient", "--scenario", "matrix")
	checkGolden(t, "dryrun-kind-matrix.golden", got)

	// Structure: the cluster, then every matrix scenario in every mode,
	// each either skipped with a reason or with fault, load and objects.
	for _, s := range []string{"\ncluster\n", "  provider     kind", `cluster "blastradius", 1 control-plane + 3 workers`,
		"node-1=blastradius-worker node-2=blastradius-worker2 node-3=blastradius-worker3", "  on exit      the cluster is deleted",
		"field manager blastradius", "\nnot built yet"} {
		if !strings.Contains(got, s) {
			t.Errorf("plan lacks %q", s)
		}
	}
	sections := regexp.MustCompile(`(?m)^scenario (\S+) in (none|sidecar|ambient)\n((?:  .*\n?)*)`).FindAllStringSubmatch(got, -1)
	if len(sections) != 45 {
		t.Fatalf("%d scenario sections, want 15 faults x 3 modes", len(sections))
	}
	skipped, unavailable := 0, 0
	var planned []string
	for _, s := range sections {
		body := s[3]
		if strings.HasPrefix(body, "  skipped ") {
			if strings.Contains(body, "which this provider does not offer") {
				unavailable++
			} else {
				skipped++
			}
			continue
		}
		planned = append(planned, s[1]+"/"+s[2])
		for _, want := range []string{"  fault        ", "inject at +", "  load ", "  objects "} {
			if !strings.Contains(body, want) {
				t.Errorf("%s in %s: no %q", s[1], s[2], want)
			}
		}
		if strings.Contains(body, "in apply order") && !strings.Contains(body, "    Namespace/blastradius-"+s[2]+"\n") {
			t.Errorf("%s in %s: objects do not start with the namespace", s[1], s[2])
		}
	}
	if skipped != 20 {
		t.Errorf("%d skipped cells, want 20 (as make e2e reports n/a)", skipped)
	}
	// What kind can inject: its node containers (crash, nftables
	// partitions), and pod deletions through the API; the rest of the
	// matrix is skipped with the reason.
	wantCells := "node-crash/none node-crash/sidecar node-crash/ambient node-drain/none node-drain/sidecar node-drain/ambient " +
		"node-partition/none node-partition/sidecar node-partition/ambient segment-partition/none segment-partition/sidecar segment-partition/ambient " +
		"node-proxy-crash/ambient node-proxy-rolling-upgrade/ambient controlplane-crash/sidecar controlplane-crash/ambient " +
		"cert-expiry/sidecar cert-expiry/ambient node-proxy-crash-during-cp-outage/ambient"
	if strings.Join(planned, " ") != wantCells || unavailable != 45-20-19 {
		t.Errorf("planned cells %q (%d unavailable on kind), want %q (%d)", planned, unavailable, wantCells, 45-20-19)
	}
	if strings.Contains(got, "---\n") {
		t.Errorf("YAML printed without --yaml")
	}
}

func TestDryRunYAMLAndOptions(t *testing.T) {
	got := dryRunOutput(t, "--provider", "kind", "--kind-config", kindConfig, "--mode", "ambient", "--scenario", "node-proxy-crash", "--yaml", "--retain", "--reuse", "--kubeconfig", "/tmp/kc")
	for _, s := range []string{"kind: Namespace\n", "blastradius.dev/dataplane-mode: ambient", "image: blastradius:dev", "kind: DaemonSet", "name: ztunnel",
		"the cluster is kept (--retain)", "is reused, and then never deleted", "written to /tmp/kc"} {
		if !strings.Contains(got, s) {
			t.Errorf("plan lacks %q", s)
		}
	}
	objects := len(regexp.MustCompile(`(?m)^    [A-Z][A-Za-z]+/`).FindAllString(got, -1))
	if n := strings.Count(got, "---\n"); n != objects || n == 0 {
		t.Errorf("%d YAML documents for %d objects", n, objects)
	}
}

// With --faults chaos-mesh the dry run lists the faults Chaos Mesh injects
// in each mode, and the cells they make runnable.
func TestDryRunChaosMeshFaults(t *testing.T) {
	got := dryRunOutput(t, "--provider", "kind", "--kind-config", kindConfig, "--mode", "sidecar,ambient", "--faults", "chaos-mesh",
		"--scenario", "sidecar-crash,controlplane-down,node-proxy-crash")
	for _, s := range []string{
		"  in sidecar:\n", "    sidecar-crash        Chaos Mesh PodChaos container-kill of the pod's sidecar proxy container",
		"    controlplane-down    Chaos Mesh PodChaos pod-failure of the control plane pod, paused to recover it",
		"    node-proxy-crash     Chaos Mesh PodChaos pod-kill of the node's proxy pod",
		"scenario sidecar-crash in sidecar\n  fault        sidecar-crash",
		"scenario controlplane-down in ambient\n  fault        controlplane-down",
	} {
		if !strings.Contains(got, s) {
			t.Errorf("plan lacks %q:\n%s", s, got)
		}
	}
	// Without it, the API path: neither fault is offered.
	got = dryRunOutput(t, "--provider", "kind", "--kind-config", kindConfig, "--mode", "sidecar", "--scenario", "sidecar-crash")
	if !strings.Contains(got, "scenario sidecar-crash in sidecar\n  skipped      fault sidecar-crash needs crash-sidecar") {
		t.Errorf("sidecar-crash not skipped without Chaos Mesh:\n%s", got)
	}
}

// The kubeconfig provider's dry run needs no cluster and no kubeconfig: it
// says what a run would do and that it would stop without one.
func TestDryRunKubeconfigWithoutCluster(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	got := dryRunOutput(t, "--provider", "kubeconfig", "--mode", "none,ambient", "--scenario", "node-crash,node-proxy-crash")
	for _, s := range []string{"provider     kubeconfig: an existing cluster", "no kubeconfig: give --kubeconfig", "a run would stop here",
		"node-1..node-3 = the first 3 Ready", "scenario node-crash in none\n  skipped      fault node-crash needs crash-node, which this provider does not offer in mode none",
		"scenario node-proxy-crash in ambient", "Deployment/blastradius-ambient/server-n3  on node-3"} {
		if !strings.Contains(got, s) {
			t.Errorf("plan lacks %q:\n%s", s, got)
		}
	}
	kc := filepath.Join(t.TempDir(), "config")
	writeErr := os.WriteFile(kc, []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://10.0.0.1:6443\"}\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: prod\n  context: {cluster: c, user: u}\ncurrent-context: prod\n"), 0o600)
	if writeErr != nil {
		t.Fatal(writeErr)
	}
	got = dryRunOutput(t, "--provider", "kubeconfig", "--kubeconfig", kc, "--scenario", "baseline")
	if !strings.Contains(got, `context "prod", server https://10.0.0.1:6443`) {
		t.Errorf("kubeconfig line missing:\n%s", got)
	}
}

// The dry run of Istio on kind: upstream's images as the pinned charts
// name them, the values the tool sets on each chart, and every cell of the
// matrix in Istio's modes, run or skipped with its reason (Envoy for the
// sidecar mode and waypoints).
func TestDryRunKindIstioMatrixGolden(t *testing.T) {
	got := dryRunOutput(t, "--provider", "kind", "--kind-config", kindConfig, "--mesh", "istio", "--scenario", "matrix", "--mode", "none,sidecar,ambient")
	checkGolden(t, "dryrun-kind-istio-matrix.golden", got)
	d, err := istioinstall.Defaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"    istiod     " + d.Hub + "/pilot:" + d.Tag + "  pulled by the nodes",
		"    istio-cni  " + d.Hub + "/install-cni:" + d.Tag,
		"    ztunnel    " + d.Hub + "/ztunnel:" + d.Tag,
		"profile: ambient", "dnsCapture: false", "ipv6: false", "autoscaleEnabled: false",
		"labelled istio.io/dataplane-mode=ambient",
		"1. gateway-api gateway-api " + istioinstall.GatewayAPIVersion, "    Gateway/blastradius-istio-ambient/waypoint\n",
	} {
		if !strings.Contains(got, s) {
			t.Errorf("plan lacks %q", s)
		}
	}
	sections := regexp.MustCompile(`(?m)^scenario (\S+) in (none|istio-sidecar|istio-ambient)\n((?:  .*\n?)*)`).FindAllStringSubmatch(got, -1)
	if len(sections) != 45 {
		t.Fatalf("%d scenario sections, want 15 faults x 3 modes", len(sections))
	}
	var planned []string
	skipped := map[string]string{}
	for _, s := range sections {
		body := s[3]
		if strings.HasPrefix(body, "  skipped ") {
			skipped[s[1]+"/"+s[2]] = body
			continue
		}
		planned = append(planned, s[1]+"/"+s[2])
		if s[2] == "istio-ambient" && strings.Contains(body, "in apply order") && !strings.Contains(body, "    Namespace/blastradius-istio-ambient\n") {
			t.Errorf("%s in istio-ambient: not in its own namespace", s[1])
		}
	}
	// Istio's own failures run in istio-ambient, and in istio-sidecar with
	// upstream's sidecar (kind pulls it): istiod's faults and the sidecar
	// upgrade; the waypoint's, with upstream's Envoy as the waypoint. The
	// sidecar kill (without Chaos Mesh) is skipped with its reason.
	for _, want := range []string{"waypoint-replica-kill/istio-ambient", "waypoint-all-killed/istio-ambient", "node-proxy-crash/istio-ambient", "node-proxy-restart/istio-ambient", "node-proxy-rolling-upgrade/istio-ambient",
		"node-agent-crash/istio-ambient", "controlplane-crash/istio-ambient", "cert-expiry/istio-ambient", "node-proxy-crash-during-cp-outage/istio-ambient",
		"node-crash/istio-sidecar", "controlplane-crash/istio-sidecar", "sidecar-rolling-restart/istio-sidecar"} {
		if !slices.Contains(planned, want) {
			t.Errorf("cell %s not planned (planned: %v)", want, planned)
		}
	}
	for cell, why := range map[string]string{
		"sidecar-crash/istio-sidecar": "Chaos Mesh", "node-proxy-crash/istio-sidecar": "proxy per node",
		"cert-expiry/istio-sidecar": "SECRET_TTL",
	} {
		if !strings.Contains(skipped[cell], why) {
			t.Errorf("cell %s: %q, want skipped for a reason naming %q", cell, skipped[cell], why)
		}
	}
}

// Where no registry is reachable (local-k8s) sidecars and waypoints have
// no Envoy unless an image the nodes have is named.
func TestNoEnvoyWithoutARegistry(t *testing.T) {
	for _, tc := range []struct {
		provider, image string
		runs            bool
	}{
		{"local-k8s", "", false},
		{"local-k8s", "localhost/proxyv2:mine", true},
		{"kind", "", true},
		{"kubeconfig", "", true},
	} {
		why := noEnvoy(&runFlags{provider: tc.provider, istioProxyImage: tc.image})
		if (why == "") != tc.runs {
			t.Errorf("%s with --istio-proxy-image %q: %q", tc.provider, tc.image, why)
		}
	}
}

// checkGolden compares got with testdata/name (-update rewrites it) and
// fails at the first line that differs.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("dry run differs from %s at line %d:\n got  %q\n want %q\n(rerun with -update if the change is intended)", golden, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("dry run differs from %s: %d lines, want %d", golden, len(gl), len(wl))
	}
}
