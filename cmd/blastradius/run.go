package main

import (
	"slices"

	"blastradius.dev/blastradius/framework/dataplane"
	"blastradius.dev/blastradius/framework/netnstrial"
	"blastradius.dev/blastradius/internal/k8sversion"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/sandbox"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/reports"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
)

// Defaults of the local-k8s provider: the paths `make k8s-bins` and
// `make local-k8s-up` use, relative to the repository.
const (
	defaultLocalK8sDir    = ".cache/local-k8s"
	defaultLocalK8sBinDir = ".cache/k8s/" + k8sversion.Version
	defaultIstioImages    = ".cache/istio/images"
)

type runFlags struct {
	provider, mode, scenarios, out string
	// image is the image pods run on Kubernetes (--image); faults is how
	// faults are injected there (--faults).
	image, faults          string
	modes                  []string
	bucket, grace, timeout time.Duration
	budget                 float64
	trials                 int
	flows                  bool
	// Kubernetes providers (kind, kubeconfig).
	kubeconfig, kindConfigPath string
	retain, reuse, dryRun      bool
	yaml                       bool
	kindConfig                 *v1alpha4.Cluster // parsed --kind-config
	localDir, k8sBinDir        string            // --provider local-k8s
	// Istio: --mesh, --ztunnel-image, --istio-images; meshes as parsed.
	mesh, ztunnelImage, istioImages, istioProxyImage string
	meshes                                           []string
	// images are the data planes' images a Kubernetes run ran, recorded
	// in the results' environment (set when the cluster is prepared).
	images []results.Image
	// installIstio, set when the cluster is prepared, installs Istio; it is
	// called before the first Istio trial, after every other trial, so
	// that nothing of Istio (its CNI plugin chained on every node) is
	// there while the reference and none trials run.
	installIstio func(ctx context.Context) error
}

// istio reports whether the run installs Istio.
func (f *runFlags) istio() bool { return slices.Contains(f.meshes, scenario.MeshIstio) }

func parseRunFlags(args []string, stderr io.Writer) (*runFlags, []scenario.Scenario, error) {
	fs := flag.NewFlagSet("blastradius run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &runFlags{}
	fs.StringVar(&f.provider, "provider", "netns", "cluster provider: netns (embedded, rootless, the default), kind (a kind cluster from --kind-config; needs docker, podman or nerdctl), local-k8s (a local multi-node Kubernetes from Go-built binaries and containerd, created and removed by the run; root; docs/local-k8s.md) or kubeconfig (an existing cluster); docs/kubernetes.md")
	fs.StringVar(&f.mode, "mode", "none", "comma-separated data plane modes, each scenario runs in each: none (plain networking with kube-proxy-like service VIPs), sidecar (a reference proxy in every pod), ambient (a reference node proxy per node, HBONE between pods)")
	fs.StringVar(&f.scenarios, "scenario", "baseline,node-crash", "comma-separated scenarios: built-in names, scenario files (.yaml), or \"matrix\" for the default fault matrix (list them: blastradius scenarios)")
	fs.IntVar(&f.trials, "trials", 0, "trials per scenario and mode (0: what the scenario says, default 1); several give mean, p95 and a 95% interval")
	fs.BoolVar(&f.flows, "flows", false, "print every flow of every trial (default: one line per trial, then the verdict table)")
	fs.StringVar(&f.out, "out", "", "results folder (default: results/<UTC timestamp>); created, must not already hold a run")
	fs.DurationVar(&f.bucket, "bucket", 100*time.Millisecond, "timeline bucket: the resolution outages are reported at")
	fs.Var((*budgetFlag)(&f.budget), "budget", "total requests per second, split across all flows; auto (the default): 200 per flow, at most 300 per CPU (CPU is sampled and a saturated run flagged noisy)")
	fs.DurationVar(&f.grace, "not-ready-grace", 5*time.Second, "how long a silent node keeps its endpoints before they are removed (Kubernetes: 40s)")
	fs.DurationVar(&f.timeout, "timeout", 500*time.Millisecond, "per-request and dial timeout of the load agents; a request slower than this is a failure")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig: with --provider kubeconfig the cluster to use (default $KUBECONFIG, then ~/.kube/config); with --provider kind where the new cluster's kubeconfig is written (default <results>/kubeconfig)")
	fs.StringVar(&f.kindConfigPath, "kind-config", "kind-config.yaml", "--provider kind: the kind cluster configuration (kind.x-k8s.io/v1alpha4, 1 control plane and at least 2 workers)")
	fs.BoolVar(&f.retain, "retain", false, "--provider kind or local-k8s: keep the cluster when the run ends (default: delete it)")
	fs.BoolVar(&f.reuse, "reuse", false, "--provider kind or local-k8s: use an existing cluster (kind: of the same name; local-k8s: the one in --local-k8s-dir) instead of creating one; a reused cluster is never deleted")
	fs.StringVar(&f.image, "image", "blastradius:"+version, "--provider kind, local-k8s or kubeconfig: the image the pods run (default blastradius:<this binary's version>, what `make images` builds; with kind and local-k8s it must be the archive's tag)")
	fs.StringVar(&f.localDir, "local-k8s-dir", defaultLocalK8sDir, "--provider local-k8s: the cluster's folder (certificates, kubeconfig, etcd data, node state, logs)")
	fs.StringVar(&f.k8sBinDir, "k8s-bin-dir", defaultLocalK8sBinDir, "--provider local-k8s: where `make k8s-bins` put etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy")
	fs.StringVar(&f.mesh, "mesh", scenario.MeshReference, "comma-separated meshes the meshed modes run: reference (the tool's own data plane) and istio (Istio's ambient mesh: istiod, istio-cni and ztunnel installed from the pinned charts for the run and removed after; Kubernetes providers only; docs/istio.md). Each meshed mode runs once per mesh: --mesh reference,istio --mode none,ambient runs none, ambient and istio-ambient side by side")
	fs.StringVar(&f.ztunnelImage, "ztunnel-image", "", "--mesh istio: the ztunnel image (default: local-k8s, where no registry is reachable: the tool's ztunnel-compatible proxy, the --image; kind and kubeconfig: upstream ztunnel as the pinned charts name it)")
	fs.StringVar(&f.istioProxyImage, "istio-proxy-image", "", "--mesh istio: the Envoy image (proxyv2) istiod runs as the sidecar it injects in the istio-sidecar mode and as ambient's waypoints (default: kind and kubeconfig: as the pinned charts name it, pulled by the nodes; local-k8s: none, and istio-sidecar and the waypoint cells are skipped, since no registry is reachable and Envoy cannot be built here)")
	fs.StringVar(&f.istioImages, "istio-images", "", "--mesh istio: the folder `make istio-images` wrote istiod's and istio-cni's images to (images.json), loaded into the nodes and run instead of upstream's (default: local-k8s: "+defaultIstioImages+"; kind and kubeconfig: none, upstream's images are pulled)")
	fs.StringVar(&f.faults, "faults", "api", "--provider kind or kubeconfig: how faults are injected: api (pod deletions and scaling through the API, node crashes and partitions through the provider) or chaos-mesh (Chaos Mesh objects for the faults it can do, their times from its status records; Chaos Mesh must be installed: docs/chaos-mesh.md)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "--provider kind or kubeconfig: print the plan (cluster, every object to apply, faults and their timing per scenario and mode, container commands) and exit without touching any cluster")
	fs.BoolVar(&f.yaml, "yaml", false, "with --dry-run: print every object's YAML as well")
	// flag calls Usage on every parse error too; print the full text only on
	// --help, so a typo gets one line.
	fs.Usage = func() {}
	usage := func() {
		fmt.Fprintln(stderr, "Usage: blastradius run [flags]\n\nRuns each scenario as a trial on a fresh cluster, measures every flow and writes\nrun.json, per-flow event files and logs into the results folder.\n\nFlags:")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return nil, nil, err
		}
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	only := func(provider string, names ...string) error {
		for _, name := range names {
			if set[name] {
				return fmt.Errorf("--%s needs --provider %s", name, provider)
			}
		}
		return nil
	}
	var perr error
	if f.provider == "netns" {
		for _, m := range strings.Split(f.mesh, ",") {
			if strings.TrimSpace(m) == scenario.MeshIstio {
				return nil, nil, errors.New("--mesh istio needs Kubernetes (--provider local-k8s, kind or kubeconfig): the embedded cluster runs only the reference data plane, and Istio's control plane and node agent need a Kubernetes API")
			}
		}
	}
	switch f.provider {
	case "netns":
		if perr = only("kind, kubeconfig or local-k8s", "dry-run", "image"); perr == nil {
			perr = only("kind or kubeconfig", "kubeconfig")
		}
		if perr == nil {
			perr = only("kind or local-k8s", "retain", "reuse")
		}
		if perr == nil {
			perr = only("kind", "kind-config")
		}
		if perr == nil {
			perr = only("local-k8s", "local-k8s-dir", "k8s-bin-dir")
		}
		if perr == nil {
			perr = only("kind or kubeconfig", "faults")
		}
		if perr == nil {
			perr = only("kind, local-k8s or kubeconfig", "ztunnel-image", "istio-images")
		}
	case "kind":
		perr = only("local-k8s", "local-k8s-dir", "k8s-bin-dir")
	case "kubeconfig":
		if perr = only("kind or local-k8s", "retain", "reuse"); perr == nil {
			perr = only("kind", "kind-config")
		}
		if perr == nil {
			perr = only("local-k8s", "local-k8s-dir", "k8s-bin-dir")
		}
	case "local-k8s":
		if perr = only("kind", "kind-config"); perr == nil {
			perr = only("kind or kubeconfig", "kubeconfig", "faults")
		}
	default:
		return nil, nil, fmt.Errorf("--provider %q unknown (netns, kind, local-k8s, kubeconfig)", f.provider)
	}
	if perr != nil {
		return nil, nil, perr
	}
	if f.yaml && !f.dryRun {
		return nil, nil, errors.New("--yaml needs --dry-run")
	}
	if f.faults != "api" && f.faults != "chaos-mesh" {
		return nil, nil, fmt.Errorf("--faults %q unknown (api, chaos-mesh)", f.faults)
	}
	for _, m := range strings.Split(f.mesh, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case scenario.MeshReference, scenario.MeshIstio:
		default:
			return nil, nil, fmt.Errorf("--mesh %q unknown (reference, istio, comma-separated)", m)
		}
		if slices.Contains(f.meshes, m) {
			return nil, nil, fmt.Errorf("--mesh %s given twice", m)
		}
		f.meshes = append(f.meshes, m)
	}
	if !f.istio() && (set["ztunnel-image"] || set["istio-images"] || set["istio-proxy-image"]) {
		return nil, nil, errors.New("--ztunnel-image, --istio-images and --istio-proxy-image need --mesh istio")
	}
	var bases []string
	for _, m := range strings.Split(f.mode, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case "none", "ambient", "sidecar":
		default:
			return nil, nil, fmt.Errorf("--mode %q unknown (none, sidecar, ambient, comma-separated)", m)
		}
		if slices.Contains(bases, m) {
			return nil, nil, fmt.Errorf("--mode %s given twice", m)
		}
		bases = append(bases, m)
	}
	// Each meshed mode once per mesh, the reference's first: side by side.
	for _, m := range bases {
		if m == "none" {
			f.modes = append(f.modes, m)
			continue
		}
		for _, mesh := range f.meshes {
			f.modes = append(f.modes, scenario.ModeOf(mesh, m))
		}
	}
	if f.trials < 0 || f.trials > 100 {
		return nil, nil, fmt.Errorf("--trials %d out of range 0..100", f.trials)
	}
	if f.bucket < time.Millisecond || f.bucket > 10*time.Second {
		return nil, nil, fmt.Errorf("--bucket %s out of range 1ms..10s", f.bucket)
	}
	if f.budget < 0 || f.budget > 100000 {
		return nil, nil, fmt.Errorf("--budget %g out of range (0, 100000] (or auto)", f.budget)
	}
	if f.grace <= 0 {
		return nil, nil, fmt.Errorf("--not-ready-grace must be positive")
	}
	if f.timeout < 10*time.Millisecond || f.timeout > time.Minute {
		return nil, nil, fmt.Errorf("--timeout %s out of range 10ms..1m", f.timeout)
	}
	scs, err := scenario.ParseList(f.scenarios)
	if err != nil {
		return nil, nil, err
	}
	if err := checkKubeFlags(f, scs); err != nil {
		return nil, nil, err
	}
	return f, scs, nil
}

func runCmd(args []string, stdout, stderr io.Writer) int {
	f, scs, err := parseRunFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "blastradius run: %v\n", err)
		return 2
	}
	if !f.dryRun && !sandbox.Inside() {
		if args, err = fixOutDir(&f.out, args, "", "run.json"); err != nil {
			fmt.Fprintf(stderr, "blastradius run: %v\n", err)
			return 2
		}
	}
	if f.provider != "netns" {
		return kubeRun(f, scs, stdout, stderr)
	}
	if !sandbox.Inside() {
		return enterSandbox("run", args, stderr)
	}
	return runInside(f, scs, stdout, stderr)
}

func runInside(f *runFlags, scs []scenario.Scenario, stdout, stderr io.Writer) int {
	out, ok := setupInside("run", f.out, stderr)
	if !ok {
		return 1
	}
	embedded := func(context.Context, func(string, ...any)) (scenario.Backend, func(), error) {
		return embeddedBackend(f.grace), func() {}, nil
	}
	return runTrials(f, scs, out, embedded, stdout, stderr)
}

// embeddedBackend runs trials on the embedded cluster with the reference
// data plane in its meshed modes: the one place the two are put together.
func embeddedBackend(grace time.Duration) *netnstrial.Backend {
	ref := func(mode, dir string, logf func(string, ...any)) (netnstrial.DataPlane, error) {
		return dataplane.New(mode, dir, logf)
	}
	return &netnstrial.Backend{NotReadyGrace: grace,
		DataPlanes: map[string]netnstrial.NewDataPlane{"ambient": ref, "sidecar": ref}}
}

// timedLog prints a progress line with the time of day.
func timedLog(w io.Writer) func(string, ...any) {
	return func(format string, a ...any) {
		fmt.Fprintf(w, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.0")}, a...)...)
	}
}

// runTrials runs every scenario × mode × trial into out and prints the
// tables. prepare sets up the cluster and returns the backend trials run on
// and its clean-up.
func runTrials(f *runFlags, scs []scenario.Scenario, out string,
	prepare func(ctx context.Context, logf func(string, ...any)) (scenario.Backend, func(), error), stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logf := timedLog(stdout)
	defer context.AfterFunc(ctx, func() {
		logf("interrupted: stopping the trial, saving what was measured and writing the report (interrupt again to stop at once)")
	})()
	backend, cleanup, err := prepare(ctx, logf)
	if err != nil {
		fmt.Fprintf(stderr, "blastradius run: %v\n", oneline.Fold(err.Error(), 0))
		return 1
	}
	defer cleanup()
	env := results.Environment{
		Provider: f.provider, Mode: strings.Join(f.modes, ","), DataPlane: dataPlaneName(f.modes), Version: version,
		Kernel: kernel(), CPUs: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(),
		Rootless: os.Getenv("BLASTRADIUS_OUTER_UID") != "0", NotReadyGrace: f.grace.String(),
		BucketMs: float64(f.bucket) / float64(time.Millisecond), BudgetRPS: f.budget, Images: f.images,
	}
	r, err := scenario.NewRunner(scenario.Options{
		Dir: out, Mode: f.modes[0], Bucket: f.bucket, BudgetRPS: f.budget, Timeout: f.timeout, Logf: logf,
		Backend: backend,
	}, env, os.Args[1:])
	if err != nil {
		fmt.Fprintf(stderr, "blastradius run: %v\n", err)
		return 1
	}
	logf("results: %s", out)
	status := results.StatusDone
	type cell struct {
		sc    scenario.Scenario
		mode  string
		trial int
	}
	// Istio's trials last (see runFlags.installIstio), each group in
	// scenario order.
	var cells, istioCells []cell
	for _, sc := range scs {
		for _, mode := range f.modes {
			for i := 1; i <= trialsOf(f, sc); i++ {
				if scenario.MeshOf(mode) == scenario.MeshIstio {
					istioCells = append(istioCells, cell{sc, mode, i})
				} else {
					cells = append(cells, cell{sc, mode, i})
				}
			}
		}
	}
	firstIstio := len(cells)
	cells = append(cells, istioCells...)
	total := len(cells)
	n := 0
	t0 := time.Now()
run:
	for ci, c := range cells {
		sc, mode, i := c.sc, c.mode, c.trial
		if ci == firstIstio && f.installIstio != nil {
			if err := f.installIstio(ctx); err != nil {
				fmt.Fprintf(stderr, "blastradius run: %s\n", oneline.Fold(err.Error(), 0))
				status = results.StatusError
				if ctx.Err() != nil {
					status = results.StatusInterrupted
				}
				break run
			}
			r.SetImages(f.images)
		}
		n++
		logf("trial %d/%d: %s in %s (%s elapsed)", n, total, sc.Name, mode, time.Since(t0).Round(time.Second))
		tr, err := r.TrialIn(ctx, sc, mode, i)
		if err != nil {
			fmt.Fprintf(stderr, "blastradius run: %s (%s): %v\n", sc.Name, mode, err)
			status = results.StatusError
			if ctx.Err() != nil {
				status = results.StatusInterrupted
				break run
			}
			continue
		}
		logf("%s", reports.TrialLine(tr))
		if tr.Status == results.StatusFailed && status == results.StatusDone {
			status = results.StatusFailed
		}
	}
	if err := r.Finish(status); err != nil {
		fmt.Fprintf(stderr, "blastradius run: %v\n", err)
	}
	if f.flows || total == 1 {
		reports.Summary(stdout, r.Run())
	} else {
		reports.Failures(stdout, r.Run())
	}
	reports.Verdicts(stdout, r.Run())
	reports.AnswerText(stdout, r.Run())
	if err := reports.JUnitFile(out, r.Run()); err != nil {
		fmt.Fprintf(stderr, "blastradius run: %v\n", err)
	}
	// The report is rendered whatever the outcome: an interrupted run's
	// report shows what was measured and marks what is missing.
	report := filepath.Join(out, "report.html")
	if _, err := writeReport(report, out, r.Run()); err != nil {
		fmt.Fprintf(stderr, "blastradius run: report: %s\n", oneline.Fold(err.Error(), 0))
		report = "(not written)"
	}
	fmt.Fprintf(stdout, "\nrun %s: %s\nresults: %s\nreport: %s\n", r.Run().ID, status, out, report)
	if status != results.StatusDone {
		return 1
	}
	return 0
}

// trialsOf is how many trials a scenario gets in each mode.
func trialsOf(f *runFlags, sc scenario.Scenario) int {
	switch {
	case f.trials > 0:
		return f.trials
	case sc.Trials > 0:
		return sc.Trials
	}
	return 1
}

func kernel() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "unknown"
	}
	b := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func scenariosCmd(stdout io.Writer) int {
	fmt.Fprintln(stdout, "Scenarios (blastradius run --scenario <name>[,<name>...] or a .yaml file; \"matrix\" = every * below):")
	for _, n := range scenario.Names() {
		s, _ := scenario.Lookup(n)
		mark := " "
		if s.Matrix {
			mark = "*"
		}
		fmt.Fprintf(stdout, "%s %-34s %s\n", mark, n, s.Description)
	}
	fmt.Fprintln(stdout, "\nFaults (the fault.kind of a scenario file):")
	for _, n := range scenario.FaultNames() {
		k, _ := scenario.LookupFault(n)
		modes := "all modes"
		if k.Modes != nil {
			modes = strings.Join(k.Modes, ", ")
		}
		fmt.Fprintf(stdout, "  %-34s %s [%s]\n", n, k.Doc, modes)
	}
	return 0
}

func dataPlaneName(modes []string) string {
	var out []string
	for _, mode := range modes {
		switch scenario.MeshOf(mode) {
		case "":
			out = append(out, "none")
		case scenario.MeshIstio:
			out = append(out, "Istio "+scenario.BaseMode(mode)+" (istiod and istio-cni of the pinned istio.io/istio; ztunnel: see images)")
		default:
			out = append(out, "reference "+mode+" (blastradius proxy "+version+")")
		}
	}
	return strings.Join(out, "; ")
}

// budgetFlag is --budget: a rate in requests per second, or auto (stored as
// 0: the planner sizes each trial's budget to its flows and the machine).
type budgetFlag float64

func (b *budgetFlag) String() string {
	if b == nil || *b == 0 {
		return "auto"
	}
	return strconv.FormatFloat(float64(*b), 'g', -1, 64)
}

func (b *budgetFlag) Set(s string) error {
	if s == "auto" {
		*b = 0
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !(v > 0) {
		return fmt.Errorf("want a positive rate or auto")
	}
	*b = budgetFlag(v)
	return nil
}
