package scenario

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/internal/procfs"
)

// Options configure a run.
type Options struct {
	Dir       string        // the run folder (created)
	Bucket    time.Duration // timeline bucket
	BudgetRPS float64       // total request rate split across flows
	Timeout   time.Duration // per-request timeout of the load agents
	Mode      string        // default data plane mode: none, sidecar, ambient
	// Backend runs the trials: the embedded cluster or Kubernetes.
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

// SetImages records the images the run's data planes run (saved at once).
func (r *Runner) SetImages(imgs []results.Image) {
	r.update(func() { r.run.Environment.Images = imgs })
}

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
	err := r.trial(ctx, sc, mode, tr, logf)
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
				if e.Failed() {
					tr.Status = results.StatusFailed
				}
			}
		}
	})
	return tr, err
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
	if wp, ok := fe.DataPlane.(waypoints); ok && sc.Mesh.Waypoint != nil && BaseMode(mode) == "ambient" {
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
	b, err := procfs.ReadStatus("self")
	if err != nil {
		return 0
	}
	kb, err := procfs.StatusKB(b, "VmHWM")
	if err != nil {
		return 0
	}
	return round3(float64(kb) / 1000)
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
