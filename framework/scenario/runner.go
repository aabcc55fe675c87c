package scenario

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// Options configure a run.
type Options struct {
	Dir           string        // the run folder (created)
	Bucket        time.Duration // timeline bucket
	BudgetRPS     float64       // total request rate split across flows
	NotReadyGrace time.Duration // endpoint controller grace for NotReady nodes
	Timeout       time.Duration // per-request timeout of the load agents
	Binary        string        // executable started in pods ("" = this one)
	Mode          string        // default data plane mode: none, sidecar, ambient
	// Backend runs trials on a provider other than the embedded cluster.
	Backend Backend
	Logf    func(format string, args ...any)
}

// Runner runs trials into one run folder and keeps run.json current.
type Runner struct {
	opt Options
	mu  sync.Mutex
	run *results.Run
}

// NewRunner creates the run folder and its first run.json.
func NewRunner(opt Options, env results.Environment, command []string) (*Runner, error) {
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create results folder: %w", err)
	}
	r := &Runner{opt: opt, run: &results.Run{
		SchemaVersion: results.SchemaVersion,
		ID:            filepath.Base(opt.Dir),
		Command:       command,
		Started:       time.Now(),
		Status:        results.StatusRunning,
		Environment:   env,
	}}
	return r, r.save()
}

func (r *Runner) save() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return results.Save(r.opt.Dir, r.run)
}

// update mutates the run under the lock and saves it.
func (r *Runner) update(f func()) {
	r.mu.Lock()
	f()
	err := results.Save(r.opt.Dir, r.run)
	r.mu.Unlock()
	if err != nil {
		r.opt.Logf("warning: %v", err)
	}
}

// Finish marks the run finished with status and saves it.
func (r *Runner) Finish(status string) error {
	r.mu.Lock()
	now := time.Now()
	r.run.Finished, r.run.Status = &now, status
	r.mu.Unlock()
	return r.save()
}

// Run returns the run record (do not modify while trials run).
func (r *Runner) Run() *results.Run { return r.run }

// Trial runs one scenario in the runner's default mode.
func (r *Runner) Trial(ctx context.Context, sc Scenario) (*results.Trial, error) {
	return r.TrialIn(ctx, sc, modeName(r.opt.Mode), 1)
}

// TrialIn runs one scenario on a fresh cluster in a data plane mode; index
// numbers the trials of one scenario and mode from 1. A non-nil error means
// the trial could not be carried out; expectation failures are in the
// trial's status, a mode the scenario cannot run in is a skipped trial.
func (r *Runner) TrialIn(ctx context.Context, sc Scenario, mode string, index int) (*results.Trial, error) {
	mode = modeName(mode)
	tag := sc.Name + " " + mode
	if index > 1 {
		tag += fmt.Sprintf(" #%d", index)
	}
	logf := func(format string, args ...any) { r.opt.Logf("[%s] "+format, append([]any{tag}, args...)...) }
	tr := &results.Trial{Scenario: sc.Name, Fault: sc.Fault.Kind, Mode: mode, Index: index, Description: sc.Description,
		Status: results.StatusRunning, Started: time.Now()}
	r.update(func() {
		tr.Dir = fmt.Sprintf("%02d-%s-%s", len(r.run.Trials)+1, sc.Name, mode)
		if index > 1 {
			tr.Dir += fmt.Sprintf("-%d", index)
		}
		r.run.Trials = append(r.run.Trials, tr)
	})
	var err error
	if r.opt.Backend != nil {
		err = r.backendTrial(ctx, sc, mode, tr, logf)
	} else {
		err = r.trial(ctx, sc, mode, tr, logf)
	}
	defer r.update(func() { r.run.Matrix = Matrix(r.run.Trials) })
	var skip *SkipError
	if errors.As(err, &skip) {
		logf("skipped: %s", skip.Reason)
		r.update(func() { tr.Status, tr.Error = results.StatusSkipped, skip.Reason })
		return tr, nil
	}
	r.update(func() {
		switch {
		case err != nil && ctx.Err() != nil:
			tr.Status, tr.Error = results.StatusInterrupted, err.Error()
		case err != nil:
			tr.Status, tr.Error = results.StatusError, err.Error()
		default:
			tr.Status = results.StatusDone
			for _, e := range tr.Expectations {
				if !e.Pass {
					tr.Status = results.StatusFailed
				}
			}
		}
	})
	return tr, err
}

func (r *Runner) trial(ctx context.Context, sc Scenario, mode string, tr *results.Trial, logf func(string, ...any)) error {
	if why := skipReason(sc, mode); why != "" {
		return &SkipError{Reason: why}
	}
	dir := filepath.Join(r.opt.Dir, tr.Dir)
	for _, d := range []string{"flows", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	budget := r.opt.BudgetRPS
	if sc.Budget > 0 {
		budget = sc.Budget
	}
	p, err := makePlanIn(sc, mode, budget)
	if err != nil {
		return err
	}
	var apps, pods []netns.PodSpec
	for _, pp := range p.Pods {
		apps = append(apps, netns.PodSpec{Name: pp.Name, Node: pp.Node})
	}
	dp, err := NewDataPlane(mode, dir, logf)
	if err != nil {
		return err
	}
	if w := sc.Mesh.Waypoint; w != nil && mode == "ambient" {
		wc, ok := dp.(waypointConfigurer)
		if !ok {
			return fmt.Errorf("the %s data plane cannot deploy a waypoint", mode)
		}
		wc.ConfigureWaypoint(w.Service, w.Replicas)
	}
	var onEndpoints func(netns.EndpointChange)
	pods = append(pods, apps...)
	if dp != nil {
		if c, ok := dp.(interface {
			Configure(certTTL, drain time.Duration)
		}); ok {
			c.Configure(sc.Mesh.CertTTL, sc.Mesh.Drain)
		}
		if sc.Mesh.Handoff != "" {
			h, ok := dp.(interface{ ConfigureHandoff(string) })
			if !ok {
				return fmt.Errorf("the %s data plane has no handoff strategies (mesh.handoff)", mode)
			}
			h.ConfigureHandoff(sc.Mesh.Handoff)
		}
		defer dp.Close()
		pods = append(pods, dp.InfraPods(sc.Nodes)...)
		onEndpoints = dp.EndpointsChanged
	}
	logf("bringing up %d nodes, %d pods", sc.Nodes, len(pods))
	t0 := time.Now()
	upCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cl, err := netns.Up(upCtx, netns.Config{
		Nodes: sc.Nodes, Pods: pods, NotReadyGrace: r.opt.NotReadyGrace,
		Binary: r.opt.Binary, LogDir: filepath.Join(dir, "logs"), Logf: logf,
		EndpointsChanged: onEndpoints,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("bring up cluster: %w", err)
	}
	defer func() {
		logf("tearing down")
		cl.Down()
	}()
	bringUp := time.Since(t0)
	logf("cluster up in %.2fs", bringUp.Seconds())
	if dp != nil {
		logf("deploying %s", dp.Describe())
		dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := dp.Deploy(dctx, cl, apps)
		cancel()
		if err != nil {
			return fmt.Errorf("deploy %s: %w", dp.Describe(), err)
		}
		logf("data plane ready")
	}

	// Servers first, then their services.
	for _, pp := range p.Pods {
		if pp.Role == "server" || pp.Role == "control-server" {
			if _, err := cl.Start(pp.Name, serverSpec()); err != nil {
				return err
			}
		}
	}
	svcs := map[string]*netns.Service{}
	var svcNames []string
	for name := range p.Services {
		svcNames = append(svcNames, name)
	}
	sort.Strings(svcNames)
	for _, name := range svcNames {
		s, err := cl.AddService(name, ServiceTCP, HTTPPort, p.Services[name])
		if err != nil {
			return err
		}
		svcs[name] = s
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

	// Record the topology and the flows before any load starts.
	var refs []results.FlowRef
	byClient := map[string][]string{}
	for _, f := range p.Flows {
		cp, _ := cl.Pod(f.Client)
		sp, _ := cl.Pod(f.Server)
		target := fmt.Sprintf("%s:%d", sp.IP, HTTPPort)
		switch {
		case f.Kind.Via == "svc":
			target = fmt.Sprintf("%s:%d", svcs[f.Service].VIP, ServiceTCP)
		case f.Kind.Profile == ProfileStream:
			target = fmt.Sprintf("%s:%d", sp.IP, TCPPort)
		}
		ev := filepath.Join(tr.Dir, "flows", f.ID+".jsonl")
		refs = append(refs, results.FlowRef{Events: ev, FlowMeta: measure.FlowMeta{
			ID: f.ID, Client: f.Client, ClientNode: cp.Node.Name, Server: f.Server, ServerNode: sp.Node.Name,
			Target: target, Via: f.Kind.Via, Profile: f.Kind.Profile, QPS: f.QPS, Control: f.Control,
		}})
		byClient[f.Client] = append(byClient[f.Client], fmt.Sprintf("id=%s,target=%s,profile=%s,qps=%g,timeout=%s,events=%s",
			f.ID, target, f.Kind.Profile, f.QPS, r.opt.Timeout, filepath.Join(r.opt.Dir, ev)))
	}
	topo := results.Topology{}
	for _, n := range cl.Nodes {
		topo.Nodes = append(topo.Nodes, n.Name)
	}
	for _, pp := range p.Pods {
		cp, _ := cl.Pod(pp.Name)
		topo.Pods = append(topo.Pods, results.PodInfo{Name: pp.Name, Node: cp.Node.Name, IP: cp.IP.String(), Role: pp.Role})
	}
	for _, name := range svcNames {
		s := svcs[name]
		topo.Services = append(topo.Services, results.SvcInfo{Name: name, VIP: s.VIP.String(), Port: s.Port, Pods: s.Pods})
	}

	if waited, busy := settle(ctx, logf); waited > 2*settleQuiet {
		logf("settled in %.1fs (%.0f%% busy)", waited.Seconds(), busy*100)
	}

	// Clients get an absolute schedule: a client restarted after its node
	// reboots picks up where the schedule says, not from zero.
	start := time.Now().Add(time.Second).Truncate(time.Millisecond)
	win := &results.Window{Start: start, End: start.Add(sc.Duration)}
	r.update(func() {
		tr.BringUpSeconds = bringUp.Seconds()
		tr.SetupSeconds = round3(start.Sub(tr.Started).Seconds())
		tr.Topology, tr.Flows, tr.Window = topo, refs, win
		tr.NoControlFlow = p.NoControl
	})
	if p.NoControl != "" {
		logf("no control flow: %s", p.NoControl)
	}
	var clients []*netns.Process
	clientNames := make([]string, 0, len(byClient))
	for c := range byClient {
		clientNames = append(clientNames, c)
	}
	sort.Strings(clientNames)
	for _, c := range clientNames {
		args := []string{"agent", "--start-at", strconv.FormatInt(start.UnixNano(), 10), "--duration", sc.Duration.String()}
		for _, f := range byClient[c] {
			args = append(args, "--flow", f)
		}
		pr, err := cl.Start(c, netns.ProcSpec{Name: "load", Args: args, RunOnce: true})
		if err != nil {
			return err
		}
		clients = append(clients, pr)
	}
	logf("load: %d flows at %.0f rps total, %s, starting", len(refs), totalQPS(refs), sc.Duration)
	if w := resolutionWarning(refs, r.opt.Bucket); w != "" {
		logf("%s", w)
	}

	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	cpu := &cpuSampler{interval: 500 * time.Millisecond}
	go cpu.run(runCtx)
	// Counters sampled until load stops, to explain outages afterwards.
	stopEvidence := startEvidence(runCtx, dir, cl, dp, p, logf)
	defer stopEvidence()
	phase := &phaseBox{v: "load"}
	if sc.Fault.Kind != "" {
		phase.set("warm-up")
	}
	go progress(runCtx, r.opt.Dir, refs, start, win.End, phase, logf)

	var fdp FaultTarget
	if dp != nil {
		fdp = dp
	}
	fe := &FaultEnv{Ctx: runCtx, Cluster: cl, DataPlane: fdp, Scenario: sc, Fault: sc.Fault, Mode: mode,
		Start: start, Logf: logf, plan: p, r: r, tr: tr, phase: phase}
	if p.Target > 0 {
		fe.Target = nodeName(p.Target)
	}
	var faultErr error
	var kind *FaultKind
	if sc.Fault.Kind != "" {
		if kind, faultErr = LookupFault(sc.Fault.Kind); faultErr == nil {
			faultErr = kind.Inject(fe)
		}
	}
	if faultErr != nil && ctx.Err() == nil {
		logf("fault: %v", faultErr)
	}
	if sc.Fault.Kind != "" {
		phase.set("observe")
	}
	// Let requests in flight at the end time out before stopping the agents.
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(win.End) + r.opt.Timeout + 500*time.Millisecond):
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
		if err := dp.Collect(cctx, filepath.Join(dir, "dataplane")); err != nil {
			logf("collect data plane metrics: %v", err)
		}
		cancel()
	}
	if faultErr != nil {
		return faultErr
	}

	// Measure, with the evidence files complete.
	stopEvidence()
	busy, mean, maxBusy, saturated := cpu.summary()
	var eps []results.EndpointChange
	for _, e := range cl.EndpointLog() {
		if e.At.After(start) {
			eps = append(eps, results.EndpointChange{At: e.At, Service: e.Service, Endpoints: e.Endpoints})
		}
	}
	mfault := measureFault(tr.Faults)
	var sums []measure.FlowSummary
	for _, f := range refs {
		evs, err := events.ReadFile(filepath.Join(r.opt.Dir, f.Events))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("flow %s: %w", f.ID, err)
		}
		sums = append(sums, measure.AnalyzeFlow(f.FlowMeta, evs, measure.Window{Start: win.Start, End: win.End}, mfault,
			r.measureOptions()))
	}
	te := openTrialEvidence(dir)
	attachEvidence(te, sums)
	summary := measure.Summarize(sums)
	var verdict *results.Verdict
	if kind != nil {
		verdict = computeVerdict(r.verdictInput(fe, kind, p, tr, sc, mode, mfault), sums)
	}
	rss := peakRSSMB()
	r.update(func() {
		tr.Verdict, tr.RunnerPeakRSSMB = verdict, rss
		tr.EndpointChanges = eps
		tr.CPU = &results.CPU{IntervalMs: 500, Busy: busy, Mean: mean, Max: maxBusy, Saturated: saturated}
		tr.Summary = &summary
		tr.Noisy, tr.NoisyReasons = summary.Noisy, summary.NoisyReasons
		if saturated {
			tr.Noisy = true
			tr.NoisyReasons = append(tr.NoisyReasons, fmt.Sprintf("CPU saturated (max %.0f%% busy over 500 ms, mean %.0f%%): disruption may be the harness starving", maxBusy*100, mean*100))
		}
		tr.Precision = precision(tr.Faults, sums, r.opt.Bucket)
		explainLateEnds(tr.Precision, tr.Faults, sums, te, r.opt.Bucket)
		tr.Expectations = check(sc, p, tr, sums, r.opt.Bucket)
	})
	return nil
}

// serverSpec is the echo server every server pod runs.
func serverSpec() netns.ProcSpec {
	return netns.ProcSpec{Name: "server", ProbePort: HTTPPort,
		Args: []string{"agent", "--http-listen", fmt.Sprintf(":%d", HTTPPort), "--tcp-listen", fmt.Sprintf(":%d", TCPPort)}}
}

// verdictInput gathers the topology facts a verdict needs: which nodes the
// fault aimed at, and which nodes each flow's traffic can cross.
func (r *Runner) verdictInput(fe *FaultEnv, kind *FaultKind, p plan, tr *results.Trial, sc Scenario, mode string, mf *measure.Fault) verdictInput {
	in := verdictInput{controlPlane: kind.ControlPlane, fault: mf, windowEnd: tr.Window.End, bucket: r.opt.Bucket,
		extraNodes: map[string][]string{}, endpointNodes: map[string][]string{}}
	if kind.Scope != nil {
		in.faultNodes = kind.Scope(fe)
	} else if fe.Target != "" {
		in.faultNodes = []string{fe.Target}
	}
	podNode := map[string]string{}
	for _, pi := range tr.Topology.Pods {
		podNode[pi.Name] = pi.Node
	}
	var wpNodes []string
	if wp, ok := fe.DataPlane.(waypoints); ok && sc.Mesh.Waypoint != nil && mode == "ambient" {
		wpNodes = fe.nodesOf(wp.WaypointPods()...)
	}
	for _, f := range p.Flows {
		for _, pod := range p.Services[f.Service] {
			in.endpointNodes[f.ID] = append(in.endpointNodes[f.ID], podNode[pod])
		}
		if sc.Mesh.Waypoint != nil && f.Service == sc.Mesh.Waypoint.Service {
			in.extraNodes[f.ID] = wpNodes
		}
	}
	return in
}

// peakRSSMB is this process's peak resident memory (VmHWM) in MB.
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return round3(kb / 1000)
		}
	}
	return 0
}

// SkipError says a scenario cannot run here; the trial is skipped, not failed.
type SkipError struct{ Reason string }

func (e *SkipError) Error() string { return "skipped: " + e.Reason }

func modeName(m string) string {
	if m == "" {
		return "none"
	}
	return m
}

func totalQPS(refs []results.FlowRef) float64 {
	t := 0.0
	for _, f := range refs {
		t += f.QPS
	}
	return t
}

// measureFault reduces the recorded faults to the one window measurement
// attributes outages to: from the first injection to the last recovery.
func measureFault(fs []results.FaultRecord) *measure.Fault {
	if len(fs) == 0 {
		return nil
	}
	m := &measure.Fault{Name: fs[0].Kind, Inject: fs[0].Inject}
	last := fs[len(fs)-1]
	if last.Recover != nil {
		m.Recover = *last.Recover
	}
	return m
}

type phaseBox struct {
	mu sync.Mutex
	v  string
}

func (p *phaseBox) set(v string) { p.mu.Lock(); p.v = v; p.mu.Unlock() }
func (p *phaseBox) get() string  { p.mu.Lock(); defer p.mu.Unlock(); return p.v }

// progress prints one line a second: phase, elapsed, live success rate.
func progress(ctx context.Context, root string, refs []results.FlowRef, start, end time.Time, phase *phaseBox, logf func(string, ...any)) {
	tails := make([]*events.Tail, len(refs))
	for i, f := range refs {
		tails[i] = &events.Tail{Path: filepath.Join(root, f.Events)}
	}
	var total, ok int
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if time.Now().Before(start) {
			continue
		}
		n, k := 0, 0
		for _, t := range tails {
			evs, _ := t.Next()
			for _, e := range evs {
				if e.Kind != events.KindRequest {
					continue
				}
				n++
				if e.OK() {
					k++
				}
			}
		}
		total, ok = total+n, ok+k
		logf("%-8s t=%5.1fs/%.0fs  requests=%d  ok=%s  (last 1s: %d req, %s ok)", phase.get(),
			time.Since(start).Seconds(), end.Sub(start).Seconds(), total, pct(ok, total), n, pct(k, n))
	}
}

func pct(a, b int) string {
	if b == 0 {
		return "  -  "
	}
	return fmt.Sprintf("%5.1f%%", 100*float64(a)/float64(b))
}

func fmtList(xs []string, max int) string {
	if len(xs) <= max {
		return strings.Join(xs, ", ")
	}
	return strings.Join(xs[:max], ", ") + fmt.Sprintf(" and %d more", len(xs)-max)
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// measureOptions is how every trial's flows are measured: the run's bucket,
// and the agents' request timeout that caps a flow's stall threshold.
func (r *Runner) measureOptions() measure.Options {
	return measure.Options{Bucket: r.opt.Bucket, Timeout: r.opt.Timeout}
}

// resolutionWarning says which flows send fewer than one request per
// timeline bucket: an outage on them can only be placed to their request
// interval, not to one bucket. "" when every flow is fine enough.
func resolutionWarning(refs []results.FlowRef, bucket time.Duration) string {
	if bucket <= 0 {
		bucket = measure.DefaultBucket
	}
	var coarse []string
	worst := 0.0
	for _, f := range refs {
		if f.QPS <= 0 {
			continue
		}
		if iv := time.Second.Seconds() / f.QPS; iv > bucket.Seconds() {
			coarse = append(coarse, f.ID)
			worst = max(worst, iv)
		}
	}
	if len(coarse) == 0 {
		return ""
	}
	return fmt.Sprintf("resolution: %d flow(s) send a request only every %.0f ms or less often, coarser than the %s bucket: %s (raise --budget or shorten the flow list)",
		len(coarse), worst*1000, bucket, fmtList(coarse, 3))
}

// attachEvidence gives every outage interval what its flow's pods, proxies
// and nodes counted over it, where the trial sampled them (te nil: it did
// not).
func attachEvidence(te *trialEvidence, sums []measure.FlowSummary) {
	if te == nil {
		return
	}
	for i := range sums {
		f := sums[i].Flow
		pods := []string{f.Client, f.Server}
		nodes := []string{f.ClientNode, f.ServerNode}
		for j := range sums[i].Outages {
			o := &sums[i].Outages[j]
			// A nil *Evidence stored in the interface would be written as
			// null: only set it when there is some.
			if ev := te.interval(o.Start, o.End, pods, nodes); ev != nil {
				o.Evidence = ev
			}
		}
	}
}
