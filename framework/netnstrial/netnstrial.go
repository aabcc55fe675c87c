// Package netnstrial runs blastradius trials on the embedded cluster
// (framework/cluster/netns): the scenario.Backend for the default
// provider. Per trial it brings a fresh cluster up with the mode's data
// plane, starts the servers and services of the plan, hands the load,
// fault and measurement to the runner's shared steps (scenario.TrialRun)
// and takes everything down again. Its bring-up (Up, Deploy) is also what
// the benchmark and the soak build their clusters with.
package netnstrial

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/evidence"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
)

// DataPlane is a mesh installed on the embedded cluster. Mode "none" has
// none: plain networking and kube-proxy-like VIPs.
type DataPlane interface {
	// InfraPods are the data plane's own pods (control plane, node proxies,
	// waypoints), added to the cluster at bring-up.
	InfraPods(nodes int) []netns.PodSpec
	// Deploy starts the data plane and meshes the application pods; it runs
	// before any application process starts and returns when it is ready.
	Deploy(ctx context.Context, cl *netns.Cluster, apps []netns.PodSpec) error
	// EndpointsChanged follows the endpoint controller.
	EndpointsChanged(netns.EndpointChange)
	// Collect saves the data plane's own evidence (metrics, config dumps)
	// into dir at the end of a trial.
	Collect(ctx context.Context, dir string) error
	// Describe names the implementation and version for run.json.
	Describe() string
	// Close releases what Deploy created outside the cluster.
	Close()
}

// NewDataPlane builds a meshed mode's data plane; dir is where it keeps
// its files.
type NewDataPlane func(mode, dir string, logf func(string, ...any)) (DataPlane, error)

// Backend is the scenario.Backend of the embedded cluster.
type Backend struct {
	// DataPlanes builds each meshed mode's data plane. A mode other than
	// "none" without one is an error, never a run without a mesh.
	DataPlanes map[string]NewDataPlane
	// Binary is the executable started in pods ("" = this one).
	Binary string
	// NotReadyGrace is the endpoint controller's grace for NotReady nodes.
	NotReadyGrace time.Duration
}

// DataPlane builds the mode's data plane, nil in mode none; an error for a
// meshed mode that has none.
func (b *Backend) DataPlane(mode, dir string, logf func(string, ...any)) (DataPlane, error) {
	if mode == "none" || mode == "" {
		return nil, nil
	}
	nf, ok := b.DataPlanes[mode]
	if !ok {
		var have []string
		for m := range b.DataPlanes {
			have = append(have, m)
		}
		sort.Strings(have)
		return nil, fmt.Errorf("mode %s has no data plane on the embedded cluster (it has: none %s)", mode, strings.Join(have, " "))
	}
	return nf(mode, dir, logf)
}

// CheckMode implements scenario.Backend.
func (b *Backend) CheckMode(mode string) error {
	_, err := b.DataPlane(mode, "", func(string, ...any) {})
	return err
}

// Capabilities implements scenario.Backend: the embedded cluster can do
// every cluster fault; the data plane of the mode says what it can do.
func (b *Backend) Capabilities(mode string) scenario.Capabilities {
	caps := scenario.InfraCapabilities(&infra{}, nil)
	dp, err := b.DataPlane(mode, "", func(string, ...any) {})
	if err != nil || dp == nil {
		return caps
	}
	return caps.Merge(scenario.DataPlaneCapabilities(dp))
}

// Spec is an embedded cluster to bring up.
type Spec struct {
	Nodes int
	// Apps are the application pods; the data plane's own pods are added.
	Apps      []netns.PodSpec
	DataPlane DataPlane // nil: no mesh
	// Binary is the executable started in pods ("" = this one).
	Binary        string
	NotReadyGrace time.Duration
	LogDir        string
	Logf          func(string, ...any)
	// EndpointsChanged, when set, is told about every endpoint change after
	// the data plane is.
	EndpointsChanged func(netns.EndpointChange)
}

// Up brings the cluster up with the data plane's pods (at most 30 s); the
// data plane is deployed by Deploy. The caller takes it down.
func Up(ctx context.Context, s Spec) (*netns.Cluster, time.Duration, error) {
	logf := s.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	pods := append([]netns.PodSpec(nil), s.Apps...)
	var observers []func(netns.EndpointChange)
	if s.DataPlane != nil {
		pods = append(pods, s.DataPlane.InfraPods(s.Nodes)...)
		observers = append(observers, s.DataPlane.EndpointsChanged)
	}
	if s.EndpointsChanged != nil {
		observers = append(observers, s.EndpointsChanged)
	}
	var onEndpoints func(netns.EndpointChange)
	if len(observers) > 0 {
		onEndpoints = func(c netns.EndpointChange) {
			for _, o := range observers {
				o(c)
			}
		}
	}
	logf("bringing up %d nodes, %d pods", s.Nodes, len(pods))
	t0 := time.Now()
	upCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, err := netns.Up(upCtx, netns.Config{Nodes: s.Nodes, Pods: pods, NotReadyGrace: s.NotReadyGrace,
		Binary: s.Binary, LogDir: s.LogDir, Logf: logf, EndpointsChanged: onEndpoints})
	if err != nil {
		return nil, 0, fmt.Errorf("bring up cluster: %w", err)
	}
	took := time.Since(t0)
	logf("cluster up in %.2fs", took.Seconds())
	return cl, took, nil
}

// Deploy deploys the data plane on a cluster Up made, meshing apps (at
// most 60 s). Nothing to do without a data plane.
func Deploy(ctx context.Context, cl *netns.Cluster, dp DataPlane, apps []netns.PodSpec, logf func(string, ...any)) error {
	if dp == nil {
		return nil
	}
	logf("deploying %s", dp.Describe())
	dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := dp.Deploy(dctx, cl, apps); err != nil {
		return fmt.Errorf("deploy %s: %w", dp.Describe(), err)
	}
	logf("data plane ready")
	return nil
}

// ServerSpec is the echo server every server pod runs.
func ServerSpec() netns.ProcSpec {
	return netns.ProcSpec{Name: "server", ProbePort: scenario.HTTPPort,
		Args: []string{"agent", "--http-listen", fmt.Sprintf(":%d", scenario.HTTPPort), "--tcp-listen", fmt.Sprintf(":%d", scenario.TCPPort)}}
}

// waypointConfigurer is how a scenario's waypoint reaches the data plane
// before it deploys.
type waypointConfigurer interface {
	ConfigureWaypoint(service string, replicas int)
}

// configure hands the scenario's mesh settings to the data plane.
func configure(dp DataPlane, t *scenario.TrialRun) error {
	sc := t.Scenario
	if w := sc.Mesh.Waypoint; w != nil && t.Mode == "ambient" {
		wc, ok := dp.(waypointConfigurer)
		if !ok {
			return fmt.Errorf("the %s data plane cannot deploy a waypoint", t.Mode)
		}
		wc.ConfigureWaypoint(w.Service, w.Replicas)
	}
	if c, ok := dp.(interface {
		Configure(certTTL, drain time.Duration)
	}); ok {
		c.Configure(sc.Mesh.CertTTL, sc.Mesh.Drain)
	}
	if sc.Mesh.Handoff != "" {
		h, ok := dp.(interface{ ConfigureHandoff(string) })
		if !ok {
			return fmt.Errorf("the %s data plane has no handoff strategies (mesh.handoff)", t.Mode)
		}
		h.ConfigureHandoff(sc.Mesh.Handoff)
	}
	return nil
}

// Trial implements scenario.Backend.
func (b *Backend) Trial(ctx context.Context, t *scenario.TrialRun) error {
	p := t.Plan
	var apps []netns.PodSpec
	for _, pp := range p.Pods {
		apps = append(apps, netns.PodSpec{Name: pp.Name, Node: pp.Node})
	}
	dp, err := b.DataPlane(t.Mode, t.Dir, t.Logf)
	if err != nil {
		return err
	}
	if dp != nil {
		defer dp.Close()
		if err := configure(dp, t); err != nil {
			return err
		}
	}
	cl, bringUp, err := Up(ctx, Spec{Nodes: p.Nodes, Apps: apps, DataPlane: dp, Binary: b.Binary, NotReadyGrace: b.NotReadyGrace,
		LogDir: filepath.Join(t.Dir, "logs"), Logf: t.Logf})
	if err != nil {
		return err
	}
	defer func() {
		t.Logf("tearing down")
		cl.Down()
	}()
	if err := Deploy(ctx, cl, dp, apps, t.Logf); err != nil {
		return err
	}

	// Servers first, then their services.
	for _, pp := range p.Pods {
		if pp.Role == "server" || pp.Role == "control-server" {
			if _, err := cl.Start(pp.Name, ServerSpec()); err != nil {
				return err
			}
		}
	}
	var svcNames []string
	for name := range p.Services {
		svcNames = append(svcNames, name)
	}
	sort.Strings(svcNames)
	var svcs []*netns.Service
	for _, name := range svcNames {
		s, err := cl.AddService(name, scenario.ServiceTCP, scenario.HTTPPort, p.Services[name])
		if err != nil {
			return err
		}
		svcs = append(svcs, s)
	}
	readyCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := cl.WaitReady(readyCtx); err != nil {
		return fmt.Errorf("servers: %w", err)
	}
	for _, s := range svcs {
		for len(s.Endpoints()) == 0 {
			select {
			case <-readyCtx.Done():
				return fmt.Errorf("service %s never got endpoints: %w", s.Name, readyCtx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}

	topo := results.Topology{}
	for _, n := range cl.Nodes {
		topo.Nodes = append(topo.Nodes, n.Name)
	}
	for _, pp := range p.Pods {
		cp, _ := cl.Pod(pp.Name)
		topo.Pods = append(topo.Pods, results.PodInfo{Name: pp.Name, Node: cp.Node.Name, IP: cp.IP.String(), Role: pp.Role})
	}
	for _, s := range svcs {
		topo.Services = append(topo.Services, results.SvcInfo{Name: s.Name, VIP: s.VIP.String(), Port: s.Port, Pods: s.Pods})
	}
	t.LiveEvents = true
	start, byClient, err := t.Begin(ctx, topo, bringUp, time.Second, func(id string) string {
		return filepath.Join(t.Dir, "flows", id+".jsonl")
	})
	if err != nil {
		return err
	}
	clientNames := make([]string, 0, len(byClient))
	for c := range byClient {
		clientNames = append(clientNames, c)
	}
	sort.Strings(clientNames)
	var clients []*netns.Process
	for _, c := range clientNames {
		pr, err := cl.Start(c, netns.ProcSpec{Name: "load", Args: t.AgentArgs(start, byClient[c]), RunOnce: true})
		if err != nil {
			return err
		}
		clients = append(clients, pr)
	}

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	// Counters sampled until load stops, to explain outages afterwards.
	stopEvidence := startEvidence(runCtx, t.Dir, cl, dp, p, t.Logf)
	defer stopEvidence()

	var target scenario.FaultTarget
	if dp != nil {
		target = dp
	}
	kind, fe, faultErr := t.RunFault(runCtx, target, &infra{cl: cl, plan: p})
	// Let requests in flight at the end time out before stopping the agents.
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t.Window().End) + t.Timeout + 500*time.Millisecond):
	}
	stopRun()
	for _, pr := range clients {
		cl.Stop(pr, 3*time.Second)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if dp != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := dp.Collect(cctx, filepath.Join(t.Dir, "dataplane")); err != nil {
			t.Logf("collect data plane metrics: %v", err)
		}
		cancel()
	}
	if faultErr != nil {
		return faultErr
	}
	// Measure, with the evidence files complete.
	stopEvidence()
	var eps []results.EndpointChange
	for _, e := range cl.EndpointLog() {
		if e.At.After(start) {
			eps = append(eps, results.EndpointChange{At: e.At, Service: e.Service, Endpoints: e.Endpoints})
		}
	}
	return t.Measure(kind, fe, eps)
}

// waitEndpoints waits until every pod is an endpoint of s.
func waitEndpoints(ctx context.Context, s *netns.Service, pods ...string) error {
	for _, pod := range pods {
		for !slices.Contains(s.Endpoints(), pod) {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s never became an endpoint of %s: %w", pod, s.Name, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return nil
}

// infra is the embedded cluster as faults see it: it can do every cluster
// fault (scenario's NodeCrasher, Partitioner, SegmentPartitioner,
// FlowDropper, PodDropper, PodTapper, NodeDrainer).
type infra struct {
	cl   *netns.Cluster
	plan scenario.Plan
}

func (in *infra) PodNode(pod string) (string, bool) {
	p, ok := in.cl.Pod(pod)
	if !ok {
		return "", false
	}
	return p.Node.Name, true
}

func (in *infra) CrashNode(node string) (time.Time, error)   { return in.cl.CrashNode(node) }
func (in *infra) RecoverNode(node string) (time.Time, error) { return in.cl.RecoverNode(node) }

func (in *infra) Partition(a, b string) (time.Time, func() (time.Time, error), error) {
	return in.cl.Partition(a, b)
}

func (in *infra) PartitionAll() (time.Time, func() (time.Time, error), error) {
	return in.cl.PartitionAll()
}

func (in *infra) DropFlow(server, client string, ports ...int) (time.Time, func() (time.Time, time.Duration, error), error) {
	cp, ok := in.cl.Pod(client)
	if !ok {
		return time.Time{}, nil, fmt.Errorf("drop flow: no pod %s", client)
	}
	return in.cl.DropFlow(server, cp.IP, ports...)
}

func (in *infra) DropPod(pod string) (time.Time, func() (time.Time, time.Duration, error), error) {
	return in.cl.DropPod(pod)
}

func (in *infra) TapPod(name string) (*evidence.Tap, map[netip.Addr]string, error) {
	pod, ok := in.cl.Pod(name)
	if !ok {
		return nil, nil, fmt.Errorf("no pod %s", name)
	}
	t, err := evidence.OpenTap(pod.NetNSFD())
	if err != nil {
		return nil, nil, err
	}
	names := map[netip.Addr]string{}
	for _, p := range in.cl.Pods() {
		if a, ok := netip.AddrFromSlice(p.IP.To4()); ok {
			names[a] = p.Name
		}
	}
	return t, names, nil
}

// DrainNode starts the replacements and waits for them to serve and be in
// their services, so a service never loses its last endpoint to the drain;
// then it stops every process of every workload on the node at once, as
// the kubelet does, each with the drain deadline.
func (in *infra) DrainNode(ctx context.Context, node string, replacements []string, grace time.Duration) (time.Time, time.Time, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for _, spare := range replacements {
		pr, err := in.cl.Start(spare, ServerSpec())
		if err != nil {
			return time.Time{}, time.Time{}, "", err
		}
		if err := in.cl.WaitProcessReady(ctx, pr); err != nil {
			return time.Time{}, time.Time{}, "", fmt.Errorf("replacement %s: %w", spare, err)
		}
	}
	for _, s := range in.cl.Services() {
		var mine []string
		for _, spare := range replacements {
			if slices.Contains(s.Pods, spare) {
				mine = append(mine, spare)
			}
		}
		if err := waitEndpoints(ctx, s, mine...); err != nil {
			return time.Time{}, time.Time{}, "", err
		}
	}
	replaced := time.Now()
	var wg sync.WaitGroup
	for _, p := range in.plan.Pods {
		if fmt.Sprintf("node-%d", p.Node) != node || (p.Role != "server" && p.Role != "client") {
			continue
		}
		pod, _ := in.cl.Pod(p.Name)
		for _, pr := range pod.Processes() {
			wg.Add(1)
			go func() { defer wg.Done(); in.cl.Stop(pr, grace+time.Second) }()
		}
	}
	wg.Wait()
	return replaced, time.Now(), "", nil
}
