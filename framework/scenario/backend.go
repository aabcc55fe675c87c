package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// Backend carries out the provider-specific part of a trial: bring the
// trial's cluster objects and data plane up, start the load the TrialRun
// describes, inject the fault through RunFault, collect the events, then
// call Measure. Every trial runs through one (Runner.TrialIn): the
// embedded cluster (framework/netnstrial) and Kubernetes
// (framework/kubetrial) alike.
type Backend interface {
	// CheckMode says why the backend cannot run trials in a data plane
	// mode (nil when it can): a meshed mode without a data plane is an
	// error, never a trial run without the mesh.
	CheckMode(mode string) error
	// Capabilities lists what the backend, with its data plane in mode,
	// can do for faults, each with how. A fault that needs anything else
	// is a skipped trial with the reason, decided before anything is made.
	Capabilities(mode string) Capabilities
	Trial(ctx context.Context, t *TrialRun) error
}

// TrialRun is one trial as a Backend sees it: the plan, where its files
// go, and the runner's shared steps (flows, window, faults, measurement).
type TrialRun struct {
	Scenario Scenario
	Mode     string
	Plan     Plan
	// Dir is the trial's folder (absolute); flows/<id>.jsonl under it are
	// the flows' event files the backend fills.
	Dir  string
	Logf func(string, ...any)
	// Timeout is the load agents' per-request timeout.
	Timeout time.Duration
	// LiveEvents says the flows' event files under Dir fill during load
	// (the embedded cluster), so progress lines can count them; elsewhere
	// they are pulled back after the window.
	LiveEvents bool

	r     *Runner
	tr    *results.Trial
	p     plan
	refs  []results.FlowRef
	win   *results.Window
	cpu   *cpuSampler
	phase *phaseBox
	stop  context.CancelFunc
}

// Flow is one flow's load as a client agent runs it.
type Flow struct {
	ID, Client string
	// Args is the agent's --flow value; EventsFile is where the agent
	// writes its events inside the client pod (the backend's choice).
	Args       string
	EventsFile string
}

// flows are the plan's flows on the placed topology: what the measurement
// reads (refs) and each client's agent flags; qps, when positive, replaces
// every flow's rate.
func (t *TrialRun) flows(topo results.Topology, eventsFile func(flowID string) string, qps float64) ([]results.FlowRef, map[string][]Flow, error) {
	pods := map[string]results.PodInfo{}
	for _, p := range topo.Pods {
		pods[p.Name] = p
	}
	vips := map[string]string{}
	for _, s := range topo.Services {
		vips[s.Name] = s.VIP
	}
	byClient := map[string][]Flow{}
	var refs []results.FlowRef
	rel, _ := filepath.Rel(t.r.opt.Dir, t.Dir)
	for _, f := range t.p.Flows {
		cp, ok1 := pods[f.Client]
		sp, ok2 := pods[f.Server]
		if !ok1 || !ok2 {
			return nil, nil, fmt.Errorf("flow %s: pod %s or %s missing from the topology", f.ID, f.Client, f.Server)
		}
		target := fmt.Sprintf("%s:%d", sp.IP, HTTPPort)
		switch {
		case f.Kind.Via == "svc":
			vip, ok := vips[f.Service]
			if !ok {
				return nil, nil, fmt.Errorf("flow %s: service %s missing from the topology", f.ID, f.Service)
			}
			target = fmt.Sprintf("%s:%d", vip, ServiceTCP)
		case f.Kind.Profile == ProfileStream:
			target = fmt.Sprintf("%s:%d", sp.IP, TCPPort)
		}
		rate := f.QPS
		if qps > 0 {
			rate = qps
		}
		refs = append(refs, results.FlowRef{Events: filepath.Join(rel, "flows", f.ID+".jsonl"), FlowMeta: measure.FlowMeta{
			ID: f.ID, Client: f.Client, ClientNode: cp.Node, Server: f.Server, ServerNode: sp.Node,
			Target: target, Via: f.Kind.Via, Profile: f.Kind.Profile, QPS: rate, Control: f.Control,
		}})
		ev := eventsFile(f.ID)
		byClient[f.Client] = append(byClient[f.Client], Flow{ID: f.ID, Client: f.Client, EventsFile: ev,
			Args: fmt.Sprintf("id=%s,target=%s,profile=%s,qps=%g,timeout=%s,events=%s", f.ID, target, f.Kind.Profile, rate, t.Timeout, ev)})
	}
	return refs, byClient, nil
}

// ProbeFlows are every flow of the plan at a low rate, for a probe before
// the trial (a mesh's paths checked end to end): each client's agent
// flags, events written where eventsFile says (never where the trial's
// go). The probe's load is not measured.
func (t *TrialRun) ProbeFlows(topo results.Topology, eventsFile func(flowID string) string) (map[string][]Flow, error) {
	_, byClient, err := t.flows(topo, eventsFile, 5)
	return byClient, err
}

// ProbeArgs is a client agent's command line for probe flows: start now,
// run for d.
func ProbeArgs(d time.Duration, flows []Flow) []string {
	args := []string{"agent", "--start-at", strconv.FormatInt(time.Now().Add(500*time.Millisecond).UnixNano(), 10), "--duration", d.String()}
	for _, f := range flows {
		args = append(args, "--flow", f.Args)
	}
	return args
}

// SetMesh records what showed the trial's traffic crossed the mesh (saved
// at once).
func (t *TrialRun) SetMesh(m results.MeshEvidence) {
	t.r.update(func() { t.tr.Mesh = &m })
}

// Begin records the topology (pods and services as placed, node names
// node-1..node-N as planned) and the flows, waits for the machine to settle
// and returns when load starts (lead from now) and each client's flows.
// eventsFile says where a client pod writes a flow's events.
func (t *TrialRun) Begin(ctx context.Context, topo results.Topology, bringUp, lead time.Duration, eventsFile func(flowID string) string) (time.Time, map[string][]Flow, error) {
	refs, byClient, err := t.flows(topo, eventsFile, 0)
	if err != nil {
		return time.Time{}, nil, err
	}
	if waited, busy := settle(ctx, t.Logf); waited > 2*settleQuiet {
		t.Logf("settled in %.1fs (%.0f%% busy)", waited.Seconds(), busy*100)
	}
	// Clients get an absolute schedule: a client restarted after its node
	// reboots picks up where the schedule says, not from zero.
	start := time.Now().Add(lead).Truncate(time.Millisecond)
	t.win = &results.Window{Start: start, End: start.Add(t.Scenario.Duration)}
	t.refs = refs
	t.r.update(func() {
		t.tr.BringUpSeconds = bringUp.Seconds()
		t.tr.SetupSeconds = round3(start.Sub(t.tr.Started).Seconds())
		t.tr.Topology, t.tr.Flows, t.tr.Window = topo, refs, t.win
		t.tr.NoControlFlow = t.p.NoControl
	})
	if t.p.NoControl != "" {
		t.Logf("no control flow: %s", t.p.NoControl)
	}
	if w := resolutionWarning(refs, t.r.opt.Bucket); w != "" {
		t.Logf("%s", w)
	}
	runCtx, stop := context.WithCancel(ctx)
	t.stop = stop
	t.cpu = &cpuSampler{interval: 500 * time.Millisecond}
	go t.cpu.run(runCtx)
	t.phase = &phaseBox{v: "load"}
	if t.Scenario.Fault.Kind != "" {
		t.phase.set("warm-up")
	}
	t.Logf("load: %d flows at %.0f rps total, %s, starting", len(refs), totalQPS(refs), t.Scenario.Duration)
	if t.LiveEvents {
		go progress(runCtx, t.r.opt.Dir, refs, start, t.win.End, t.phase, t.Logf)
	}
	return start, byClient, nil
}

// AgentArgs is the client agent's command line (after the binary) for its
// flows, on the absolute schedule Begin returned.
func (t *TrialRun) AgentArgs(start time.Time, flows []Flow) []string {
	args := []string{"agent", "--start-at", strconv.FormatInt(start.UnixNano(), 10), "--duration", t.Scenario.Duration.String()}
	for _, f := range flows {
		args = append(args, "--flow", f.Args)
	}
	return args
}

// Window is the load window Begin set.
func (t *TrialRun) Window() results.Window { return *t.win }

// RunFault injects the scenario's fault on schedule (it returns once the
// fault and any recovery are done, or at once without a fault). infra and
// dataPlane (nil in mode none) offer the capabilities faults ask for.
func (t *TrialRun) RunFault(ctx context.Context, dataPlane FaultTarget, infra Infra) (*FaultKind, *FaultEnv, error) {
	if t.Scenario.Fault.Kind == "" {
		return nil, nil, nil
	}
	fe := &FaultEnv{Ctx: ctx, DataPlane: dataPlane, Infra: infra, Scenario: t.Scenario, Fault: t.Scenario.Fault, Mode: t.Mode,
		Start: t.win.Start, Logf: t.Logf, plan: t.p, r: t.r, tr: t.tr, phase: t.phase}
	if t.p.Target > 0 {
		fe.Target = nodeName(t.p.Target)
	}
	kind, err := LookupFault(t.Scenario.Fault.Kind)
	if err == nil {
		err = kind.Inject(fe)
	}
	if err != nil && ctx.Err() == nil {
		t.Logf("fault: %v", err)
	}
	t.phase.set("observe")
	return kind, fe, err
}

// Measure reads the flows' event files under Dir and records the trial's
// summary, verdict and expectations; eps are the services' endpoint
// changes the backend saw during load.
func (t *TrialRun) Measure(kind *FaultKind, fe *FaultEnv, eps []results.EndpointChange) error {
	if t.stop != nil {
		t.stop()
	}
	busy, mean, maxBusy, saturated := t.cpu.summary()
	mfault := measureFault(t.tr.Faults)
	var sums []measure.FlowSummary
	for _, f := range t.refs {
		evs, err := events.ReadFile(filepath.Join(t.r.opt.Dir, f.Events))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("flow %s: %w", f.ID, err)
		}
		sums = append(sums, measure.AnalyzeFlow(f.FlowMeta, evs, measure.Window{Start: t.win.Start, End: t.win.End}, mfault,
			t.r.measureOptions()))
	}
	te := openTrialEvidence(t.Dir)
	attachEvidence(te, sums)
	summary := measure.Summarize(sums)
	var verdict *results.Verdict
	if kind != nil && fe != nil {
		verdict = computeVerdict(t.r.verdictInput(fe, kind, t.p, t.tr, t.Scenario, t.Mode, mfault), sums)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].At.Before(eps[j].At) })
	rss := peakRSSMB()
	t.r.update(func() {
		tr := t.tr
		tr.Verdict, tr.RunnerPeakRSSMB = verdict, rss
		tr.EndpointChanges = eps
		tr.CPU = &results.CPU{IntervalMs: 500, Busy: busy, Mean: mean, Max: maxBusy, Saturated: saturated}
		tr.Summary = &summary
		tr.Noisy, tr.NoisyReasons = summary.Noisy, summary.NoisyReasons
		if saturated {
			tr.Noisy = true
			tr.NoisyReasons = append(tr.NoisyReasons, fmt.Sprintf("CPU saturated (max %.0f%% busy over 500 ms, mean %.0f%%): disruption may be the harness starving", maxBusy*100, mean*100))
		}
		tr.Precision = precision(tr.Faults, sums, t.r.opt.Bucket)
		explainLateEnds(tr.Precision, tr.Faults, sums, te, t.r.opt.Bucket)
		tr.Expectations = check(t.Scenario, t.p, tr, sums, t.r.opt.Bucket)
		if MeshOf(t.Mode) == MeshIstio {
			for i := range tr.Expectations {
				tr.Expectations[i].Informational = true
			}
		}
	})
	return nil
}

// trial runs one trial through the backend: every provider's trials take
// this path.
func (r *Runner) trial(ctx context.Context, sc Scenario, mode string, tr *results.Trial, logf func(string, ...any)) error {
	if r.opt.Backend == nil {
		return errors.New("no backend to run trials on")
	}
	if err := r.opt.Backend.CheckMode(mode); err != nil {
		return err
	}
	if why := skipReason(sc, mode); why != "" {
		return &SkipError{Reason: why}
	}
	if why := FaultSkip(r.opt.Backend, sc, mode); why != "" {
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
	pl, err := PlanFor(sc, mode, budget)
	if err != nil {
		return err
	}
	p, err := makePlanIn(sc, mode, budget)
	if err != nil {
		return err
	}
	return r.opt.Backend.Trial(ctx, &TrialRun{Scenario: sc, Mode: mode, Plan: pl, Dir: dir, Logf: logf, Timeout: r.opt.Timeout, r: r, tr: tr, p: p})
}
