//go:build !nokube

package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"

	"blastradius.dev/blastradius/framework/cluster"
	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/cluster/localk8s"
	"blastradius.dev/blastradius/framework/istio/istioinstall"
	"blastradius.dev/blastradius/framework/kubetrial"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/manifests"
)

// workloadsReadyTimeout bounds the wait for a trial's workloads after
// apply: image pulls are local (kind loads the image), so minutes mean
// something is wrong.
const workloadsReadyTimeout = 2 * time.Minute

// checkKubeFlags checks what the Kubernetes providers read before anything
// runs: the kind config (strictly, as kind decodes it) and whether the
// cluster has the nodes the scenarios need; an explicit kubeconfig must
// load. Errors are bad input: one line, exit 2.
func checkKubeFlags(f *runFlags, scs []scenario.Scenario) error {
	switch f.provider {
	case "kind":
		cfg, err := cluster.LoadKindConfig(f.kindConfigPath)
		if err != nil {
			return err
		}
		f.kindConfig = cfg
		_, workers := kube.KindNodeNames(cfg)
		for _, sc := range scs {
			if sc.Nodes > len(workers) {
				return fmt.Errorf("scenario %s needs %d nodes, %s has %d workers", sc.Name, sc.Nodes, f.kindConfigPath, len(workers))
			}
		}
	case "local-k8s":
		for _, sc := range scs {
			if sc.Nodes > localk8s.MaxNodes {
				return fmt.Errorf("scenario %s needs %d nodes, a local cluster has at most %d", sc.Name, sc.Nodes, localk8s.MaxNodes)
			}
		}
	case "kubeconfig":
		if f.kubeconfig != "" {
			if _, err := kube.LoadKubeconfig(f.kubeconfig); err != nil {
				return err
			}
		}
	}
	return nil
}

// kubeRun is `run` on the kind and kubeconfig providers: the dry run, or
// the trials on the cluster through the Kubernetes backend.
func kubeRun(f *runFlags, scs []scenario.Scenario, stdout, stderr io.Writer) int {
	if f.dryRun {
		if err := dryRun(stdout, f, scs); err != nil {
			fmt.Fprintf(stderr, "blastradius run: %v\n", oneline.Fold(err.Error(), 0))
			return 2
		}
		return 0
	}
	out, err := filepath.Abs(f.out)
	if err == nil {
		err = os.MkdirAll(out, 0o755)
	}
	if err != nil {
		fmt.Fprintf(stderr, "blastradius run: results folder: %v\n", oneline.Fold(err.Error(), 0))
		return 1
	}
	maxNodes := 0
	for _, sc := range scs {
		maxNodes = max(maxNodes, sc.Nodes)
	}
	prepare := func(ctx context.Context, logf func(string, ...any)) (scenario.Backend, func(), error) {
		var cfg *rest.Config
		var workers []string
		var crasher kubetrial.NodeCrasher
		var partitioner func(b *kubetrial.Backend) kubetrial.NodePartitioner
		var dropper kubetrial.PodDropper
		// load loads an image archive into every node (nil: the
		// provider cannot; its nodes pull).
		var load func(ctx context.Context, archive string) error
		cleanup := func() {}
		switch f.provider {
		case "kind":
			kc := f.kubeconfig
			if kc == "" {
				kc = filepath.Join(out, "kubeconfig")
			}
			k, err := kube.CreateKind(ctx, kube.KindOptions{Config: f.kindConfig, Kubeconfig: kc, Retain: f.retain, Reuse: f.reuse, Logf: logf})
			if err != nil {
				return nil, nil, err
			}
			cleanup = func() {
				if err := k.Close(); err != nil {
					logf("kind: %v", err)
				}
			}
			archive, err := imageArchive(f.image)
			if err == nil {
				logf("loading %s (%s) into the kind nodes", f.image, archive)
				err = k.LoadImage(ctx, archive)
			}
			if err != nil {
				cleanup()
				return nil, nil, err
			}
			loaded, err := kube.LoadKubeconfig(k.Kubeconfig)
			if err != nil {
				cleanup()
				return nil, nil, err
			}
			cfg, workers = loaded.Config, k.Workers
			load = k.LoadImage
			_, rt, _ := kube.KindProvider(logf)
			crasher = &kubetrial.ContainerCrasher{Runtime: rt}
			partitioner = func(b *kubetrial.Backend) kubetrial.NodePartitioner {
				return &kubetrial.ContainerPartitioner{Runtime: rt, Client: b.Client}
			}
		case "kubeconfig":
			loaded, err := kube.LoadKubeconfig(f.kubeconfig)
			if err != nil {
				return nil, nil, err
			}
			logf("cluster: %s (context %q, %s)", loaded.Server, loaded.Context, loaded.Source)
			cfg = loaded.Config
			crasher = nodeCrasherFor(f.kubeconfig, logf)
			if l, ok := crasher.(localNodes); ok {
				partitioner = func(*kubetrial.Backend) kubetrial.NodePartitioner { return l }
				dropper = l
			}
		case "local-k8s":
			c, done, err := localCluster(ctx, f, maxNodes, logf)
			if err != nil {
				return nil, nil, err
			}
			cleanup = done
			loaded, err := kube.LoadKubeconfig(c.Kubeconfig)
			if err != nil {
				cleanup()
				return nil, nil, err
			}
			cfg, workers = loaded.Config, c.Nodes[:maxNodes]
			load = c.LoadImage
			crasher = localNodes{c}
			partitioner = func(*kubetrial.Backend) kubetrial.NodePartitioner { return localNodes{c} }
			dropper = localNodes{c}
		}
		b, err := kubeBackend(ctx, cfg, workers, maxNodes, f.image, logf)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		b.Crasher = crasher
		if partitioner != nil {
			b.Partitioner = partitioner(b)
		}
		b.Dropper = dropper
		if f.faults == "chaos-mesh" {
			if b.Chaos, err = chaosClient(cfg, b.Mapper); err != nil {
				cleanup()
				return nil, nil, err
			}
			logf("faults: through Chaos Mesh where it can inject them")
		}
		logf("nodes: %s", nodeMap(b.Nodes))
		if f.istio() {
			// Checked now (images built, options valid), installed before
			// the first Istio trial.
			if _, _, _, err := istioOptions(f); err != nil {
				cleanup()
				return nil, nil, err
			}
			var uninstall func()
			f.installIstio = func(ctx context.Context) error {
				var err error
				uninstall, err = installIstio(ctx, f, b, load, logf)
				return err
			}
			down := cleanup
			cleanup = func() {
				if uninstall != nil {
					uninstall()
				}
				down()
			}
		}
		return b, cleanup, nil
	}
	return runTrials(f, scs, out, prepare, stdout, stderr)
}

// chaosClient connects to Chaos Mesh in the cluster, or says it is not
// installed (its CRDs are missing).
func chaosClient(cfg *rest.Config, mapper meta.RESTMapper) (*kube.ChaosClient, error) {
	for _, k := range []string{"PodChaos", "NetworkChaos"} {
		if _, err := mapper.RESTMapping(schema.GroupKind{Group: "chaos-mesh.org", Kind: k}); err != nil {
			return nil, fmt.Errorf("--faults chaos-mesh: Chaos Mesh is not installed in the cluster (no chaos-mesh.org %s API: %s); install it (docs/chaos-mesh.md) or use --faults api", k, oneline.Fold(err.Error(), 0))
		}
	}
	return kube.NewChaosClient(cfg)
}

// imageArchive is the image `make images` wrote next to this binary
// (bin/blastradius-image.tar), or $BLASTRADIUS_IMAGE_ARCHIVE.
func imageArchive(image string) (string, error) {
	p := os.Getenv("BLASTRADIUS_IMAGE_ARCHIVE")
	if p == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		p = filepath.Join(filepath.Dir(exe), "blastradius-image.tar")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no image archive at %s: run `make images` (or set BLASTRADIUS_IMAGE_ARCHIVE)", p)
	}
	tags, err := archiveTags(p)
	if err != nil {
		return "", fmt.Errorf("image archive %s: %v", p, err)
	}
	if !slices.Contains(tags, image) {
		return "", fmt.Errorf("image archive %s holds %s, this binary's pods run %s: run `make build images` so both come from the same source", p, strings.Join(tags, ", "), image)
	}
	return p, nil
}

// archiveTags reads the tags of a docker-archive (its manifest.json).
func archiveTags(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("no manifest.json: %v", err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&m); err != nil {
			return nil, fmt.Errorf("manifest.json: %v", err)
		}
		var tags []string
		for _, e := range m {
			for _, t := range e.RepoTags {
				tags = append(tags, strings.TrimPrefix(strings.TrimPrefix(t, "docker.io/"), "library/"))
			}
		}
		return tags, nil
	}
}

// kubeBackend connects to the cluster and picks its nodes: the given
// workers (kind), or the first Ready, schedulable nodes by name that are
// not control-plane nodes.
func kubeBackend(ctx context.Context, cfg *rest.Config, workers []string, need int, image string, logf func(string, ...any)) (*kubetrial.Backend, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, mapper, err := kube.Clients(cfg)
	if err != nil {
		return nil, err
	}
	if workers == nil {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		list, err := cs.CoreV1().Nodes().List(lctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		for _, n := range list.Items {
			if _, cp := n.Labels["node-role.kubernetes.io/control-plane"]; cp || n.Spec.Unschedulable || !kube.NodeReady(&n) {
				continue
			}
			workers = append(workers, n.Name)
		}
		sort.Strings(workers)
	}
	if len(workers) < need {
		return nil, fmt.Errorf("the scenarios need %d Ready, schedulable worker nodes; the cluster has %d (%s)", need, len(workers), strings.Join(workers, ", "))
	}
	return &kubetrial.Backend{Client: cs, Dynamic: dyn, Mapper: mapper, Exec: &kubetrial.PodExec{Config: cfg, Client: cs},
		Admin: kubetrial.PodAdmin(cs), Nodes: workers, Image: image, ReadyTimeout: workloadsReadyTimeout, Logf: logf,
		KeepNamespace: os.Getenv("BLASTRADIUS_KEEP_NAMESPACE") == "1"}, nil
}

// dryRunBackend is the backend a run would use, for what it can inject.
func dryRunBackend(f *runFlags) *kubetrial.Backend {
	b := &kubetrial.Backend{}
	switch f.provider {
	case "kind":
		b.Crasher = &kubetrial.ContainerCrasher{}
		b.Partitioner = &kubetrial.ContainerPartitioner{}
	case "local-k8s":
		b.Crasher, b.Partitioner, b.Dropper = localNodes{}, localNodes{}, localNodes{}
	default:
		b.Crasher = nodeCrasherFor(f.kubeconfig, nil)
		if l, ok := b.Crasher.(localNodes); ok {
			b.Partitioner, b.Dropper = l, l
		}
	}
	if f.faults == "chaos-mesh" {
		// Only what it offers is read: the dry run injects nothing.
		b.Chaos = kube.NewChaosClientFor(nil)
	}
	if f.istio() {
		b.Istio = &kubetrial.Istio{Namespace: istioinstall.Namespace, NoEnvoy: noEnvoy(f)}
	}
	return b
}

// localCluster brings the local cluster up (or, with --reuse, opens the
// running one), loads the image into its nodes, and returns the clean-up
// that takes it down again unless --retain or --reuse.
func localCluster(ctx context.Context, f *runFlags, nodes int, logf func(string, ...any)) (*localk8s.Cluster, func(), error) {
	archive, err := imageArchive(f.image)
	if err != nil {
		return nil, nil, err
	}
	var c *localk8s.Cluster
	if f.reuse {
		c, err = localk8s.Open(f.localDir, logf)
	} else {
		c, err = localk8s.Up(ctx, localk8s.Config{Dir: f.localDir, Nodes: nodes, BinDir: f.k8sBinDir, Logf: logf})
	}
	if err != nil {
		return nil, nil, err
	}
	done := func() {
		if f.retain || f.reuse {
			logf("local-k8s: kept in %s (kubeconfig %s); remove it with: blastradius cluster down --provider local-k8s --dir %s", f.localDir, c.Kubeconfig, f.localDir)
			return
		}
		logf("local-k8s: taking the cluster down")
		if err := c.Down(); err != nil {
			logf("local-k8s: %v", err)
		}
	}
	if len(c.Nodes) < nodes {
		done()
		return nil, nil, fmt.Errorf("the local cluster in %s has %d nodes, the scenarios need %d", f.localDir, len(c.Nodes), nodes)
	}
	logf("loading %s (%s) into the local nodes", f.image, archive)
	if err := c.LoadImage(ctx, archive); err != nil {
		done()
		return nil, nil, err
	}
	return c, done, nil
}

// localNodes crashes a local cluster's node (SIGKILL of every process of
// the node: kubelet, containerd, shims, containers; and a restart) and cuts
// nodes apart (nftables in the nodes' network namespaces).
type localNodes struct{ c *localk8s.Cluster }

func (l localNodes) How() string {
	return "SIGKILL of every process of the node (kubelet, containerd, shims, containers); with recoverAfter they start again: a reboot"
}

func (l localNodes) CrashNode(node string) (time.Time, error) {
	at := time.Now()
	return at, l.c.Crash(node)
}

func (l localNodes) PartitionHow() string {
	return "nftables in each node's network namespace (prerouting, raw priority) drops every packet from the other nodes' IP and pod CIDR; the API server stays reachable"
}

func (l localNodes) DropFlow(node, server, client string, ports ...int) (time.Time, func() (time.Time, time.Duration, error), error) {
	return l.c.DropFlow(node, server, client, ports...)
}

func (l localNodes) DropPod(node, pod string) (time.Time, func() (time.Time, time.Duration, error), error) {
	return l.c.DropPod(node, pod)
}

func (l localNodes) PartitionNodes(names ...string) (time.Time, func() (time.Time, error), error) {
	return l.c.PartitionNodes(names...)
}

func (l localNodes) RecoverNode(node string) (time.Time, error) {
	if err := l.c.Restart(node); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// nodeCrasherFor finds how to crash nodes of an existing cluster: a local
// cluster (make local-k8s-up) is recognised by the state file next to its
// kubeconfig; any other cluster has none, and node-crash is then skipped
// with the reason.
func nodeCrasherFor(kubeconfig string, logf func(string, ...any)) kubetrial.NodeCrasher {
	src := strings.TrimPrefix(kube.KubeconfigSource(kubeconfig), "$KUBECONFIG=")
	if src == "" || strings.Contains(src, string(os.PathListSeparator)) {
		return nil
	}
	dir := filepath.Dir(src)
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		return nil
	}
	if logf == nil { // the dry run: say what a run would do, open nothing
		return localNodes{}
	}
	c, err := localk8s.Open(dir, logf)
	if err != nil {
		logf("local-k8s state in %s, but: %v (node-crash will be skipped)", dir, err)
		return nil
	}
	logf("local-k8s cluster in %s: node crashes kill the node's processes", dir)
	return localNodes{c}
}

// dryRun prints the plan: the cluster, then per scenario and mode the
// fault's timing, the load and every object to apply with its containers'
// commands. It reads files only; no cluster is created or contacted.
func dryRun(w io.Writer, f *runFlags, scs []scenario.Scenario) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("blastradius run --dry-run: the plan. Nothing is created, applied, contacted or started.")
	p("")
	p("cluster")
	var nodes []string
	maxNodes := 0
	for _, sc := range scs {
		maxNodes = max(maxNodes, sc.Nodes)
	}
	switch f.provider {
	case "kind":
		cfg := f.kindConfig
		cps, workers := kube.KindNodeNames(cfg)
		nodes = workers
		p("  provider     kind, with the kind Go library (needs docker, podman or nerdctl)")
		p("  config       %s: cluster %q, %d control-plane + %d workers, node image %s", f.kindConfigPath, kube.KindName(cfg), len(cps), len(workers), nodeImage(cfg))
		p("  nodes        %s (control plane %s, no workloads)", nodeMap(workers), strings.Join(cps, ", "))
		p("  create       at most %s, then wait at most %s for %d nodes Ready (a timeout fails the run)", kube.DefaultKindCreateTimeout, kube.DefaultKindReadyTimeout, len(cfg.Nodes))
		kc := f.kubeconfig
		if kc == "" {
			kc = "<results>/kubeconfig"
		}
		p("  kubeconfig   written to %s", kc)
		if f.reuse {
			p("  existing     a cluster named %q is reused, and then never deleted", kube.KindName(cfg))
		} else {
			p("  existing     a cluster named %q already there stops the run (--reuse takes it)", kube.KindName(cfg))
		}
		if f.retain {
			p("  on exit      the cluster is kept (--retain); delete it with: kind delete cluster --name %s", kube.KindName(cfg))
		} else {
			p("  on exit      the cluster is deleted (--retain keeps it)")
		}
	case "local-k8s":
		for i := 1; i <= maxNodes; i++ {
			nodes = append(nodes, localk8s.NodeName(i))
		}
		p("  provider     local-k8s: etcd, kube-apiserver, controller-manager and scheduler on this host, %d nodes (kubelet, containerd, kube-proxy each in network namespaces of their own); root", maxNodes)
		p("  binaries     %s (make k8s-bins)", f.k8sBinDir)
		p("  folder       %s (certificates, kubeconfig, etcd data, node state, logs)", f.localDir)
		p("  nodes        %s", nodeMap(nodes))
		switch {
		case f.reuse:
			p("  existing     the running cluster in %s is used, and then kept", f.localDir)
		case f.retain:
			p("  on exit      the cluster is kept (--retain); remove it with: blastradius cluster down --provider local-k8s --dir %s", f.localDir)
		default:
			p("  on exit      the cluster is taken down: no process, mount, interface or namespace left")
		}
	case "kubeconfig":
		p("  provider     kubeconfig: an existing cluster; nothing is created or deleted")
		if k, err := kube.LoadKubeconfig(f.kubeconfig); err != nil {
			p("  kubeconfig   %v (a run would stop here)", err)
		} else {
			p("  kubeconfig   %s, context %q, server %s", k.Source, k.Context, k.Server)
		}
		for i := 1; i <= maxNodes; i++ {
			nodes = append(nodes, fmt.Sprintf("node-%d", i))
		}
		p("  nodes        node-1..node-%d = the first %d Ready, schedulable nodes by name, read when the run starts (names below are placeholders)", maxNodes, maxNodes)
	}
	p("  image        %s, command %s (built by `make images`; kind and local-k8s: loaded into every node; other clusters: the nodes must have it)", f.image, manifests.Binary)
	p("  apply        server-side apply, field manager %s, force, strict field validation, at most %s per object; then at most %s for workloads to be ready", kube.FieldManager, kube.DefaultPerObject, workloadsReadyTimeout)
	p("  per trial    a fresh namespace (a leftover one is deleted first, and this one after the trial); the control plane's registry ConfigMap gets the pods' IPs once they run")
	p("  load         each client agent's flows start through pods/exec; its events are pulled back with `%s events %s` after the window", manifests.Binary, kubetrial.EventsDir)
	p("")
	p("faults on this provider (any other is a skipped trial, with the reason)")
	b := dryRunBackend(f)
	for _, mode := range f.modes {
		p("  in %s:", mode)
		faults := scenario.FaultsOffered(b, mode)
		var names []string
		for n := range faults {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			p("    %-20s %s", n, faults[n])
		}
	}
	if f.istio() {
		if err := dryRunIstio(w, f); err != nil {
			return err
		}
	}
	p("")
	p("not built yet")
	p("  - waypoints on Kubernetes; Istio's sidecar mode and waypoints (Envoy)")
	seen := map[string]string{}
	for _, sc := range scs {
		for _, mode := range f.modes {
			pl, err := scenario.PlanFor(sc, mode, f.budget)
			if err != nil {
				return err
			}
			p("")
			trials := trialsOf(f, sc)
			head := fmt.Sprintf("scenario %s in %s", sc.Name, mode)
			if trials > 1 {
				head += fmt.Sprintf(" (%d trials, a fresh namespace each)", trials)
			}
			p("%s", head)
			if pl.Skip != "" {
				p("  skipped      %s", pl.Skip)
				continue
			}
			if why := scenario.FaultSkip(b, sc, mode); why != "" {
				p("  skipped      %s", why)
				continue
			}
			if why := kubetrial.IstioSkip(pl, b.Istio); why != "" {
				p("  skipped      %s", why)
				continue
			}
			if t := pl.FaultTiming(); t != "" {
				p("  fault        %s", t)
			} else {
				p("  fault        none")
			}
			total := 0.0
			for _, fl := range pl.Flows {
				total += fl.QPS
			}
			p("  load         %d flows, %.0f rps in total, %s; each client agent runs: %s agent --flow <spec>... --start-at <unix-ns> --duration %s", len(pl.Flows), total, pl.Duration, manifests.Binary, pl.Duration)
			if pl.NoControl != "" {
				p("  control      none: %s", pl.NoControl)
			}
			objs, err := renderPlan(pl, nodes, f.image)
			if err != nil {
				return fmt.Errorf("scenario %s in %s: %w", sc.Name, mode, err)
			}
			key := objectsKey(objs)
			if first, ok := seen[key]; ok {
				p("  objects      %d, the same as for %s", len(objs), first)
				continue
			}
			seen[key] = sc.Name + " in " + mode
			p("  objects      %d, in apply order:", len(objs))
			for _, o := range objs {
				line := "    " + kube.Ref(o)
				if pin := pinnedTo(o); pin != "" {
					line += "  on " + pin
				}
				p("%s", line)
				for _, c := range manifests.Commands(o) {
					p("      %s", c)
				}
			}
			if f.yaml {
				for _, o := range objs {
					b, err := yaml.Marshal(o.Object)
					if err != nil {
						return err
					}
					fmt.Fprintf(w, "---\n%s", b)
				}
			}
		}
	}
	return nil
}

// renderPlan renders a trial plan's objects on the given nodes.
func renderPlan(pl scenario.Plan, nodes []string, image string) ([]*unstructured.Unstructured, error) {
	return kubetrial.Render(pl, nodes, image)
}

func objectsKey(objs []*unstructured.Unstructured) string {
	var b strings.Builder
	for _, o := range objs {
		y, _ := yaml.Marshal(o.Object)
		b.Write(y)
	}
	return b.String()
}

// pinnedTo lists the nodes a workload's required node affinity allows.
func pinnedTo(o *unstructured.Unstructured) string {
	terms, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "affinity", "nodeAffinity",
		"requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")
	var out []string
	for _, t := range terms {
		exprs, _, _ := unstructured.NestedSlice(t.(map[string]any), "matchExpressions")
		for _, e := range exprs {
			vals, _, _ := unstructured.NestedStringSlice(e.(map[string]any), "values")
			out = append(out, vals...)
		}
	}
	return strings.Join(out, ", ")
}

func nodeMap(workers []string) string {
	var parts []string
	for i, w := range workers {
		parts = append(parts, fmt.Sprintf("node-%d=%s", i+1, w))
	}
	return strings.Join(parts, " ")
}

func nodeImage(cfg *v1alpha4.Cluster) string {
	if len(cfg.Nodes) == 0 {
		return "none"
	}
	return cfg.Nodes[0].Image
}
