package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/dataplane"
	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/load"
	"blastradius.dev/blastradius/framework/netnstrial"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/internal/atomicjson"
)

// The bench topology: one client pod on node-1, one server pod on node-2.
const (
	ClientPod = "client-n1"
	ServerPod = "server-n2"
	HTTPPort  = scenario.HTTPPort // the server agent's HTTP echo
	TCPPort   = scenario.TCPPort  // the server agent's TCP echo
	SinkPort  = 9001              // the throughput sink
)

// Run measures every mode of cfg in turn, each on a fresh cluster, and keeps
// bench.json in cfg.Out current. It must run inside the sandbox. The report
// is returned even when a mode failed (its Error says why); the error is for
// a report that could not be written.
func Run(ctx context.Context, cfg *Config, env Environment, command []string, logf func(string, ...any)) (*Report, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create results folder: %w", err)
	}
	r := &Report{SchemaVersion: SchemaVersion, Command: command, Started: time.Now(), Status: StatusRunning,
		Environment: env, Config: *cfg, Modes: []*ModeResult{}, Goals: []Goal{}}
	save := func() error { return atomicjson.Write(filepath.Join(cfg.Out, "bench.json"), r) }
	if err := save(); err != nil {
		return nil, err
	}
	for _, mode := range cfg.Modes {
		if ctx.Err() != nil {
			break
		}
		r.Modes = append(r.Modes, runMode(ctx, cfg, mode, logf))
		if err := save(); err != nil {
			logf("warning: %v", err)
		}
	}
	now := time.Now()
	r.Finished, r.Status = &now, StatusDone
	for _, m := range r.Modes {
		if m.Error != "" {
			r.Status = StatusError
		}
	}
	if ctx.Err() != nil {
		r.Status = StatusInterrupted
	}
	r.Goals = EvaluateGoals(r.Modes)
	return r, save()
}

func runMode(ctx context.Context, cfg *Config, mode string, logf func(string, ...any)) *ModeResult {
	mlogf := func(format string, a ...any) { logf("[%s] "+format, append([]any{mode}, a...)...) }
	const attempts = 3
	for attempt := 1; ; attempt++ {
		m := &ModeResult{Mode: mode, DataPlane: "none", Proxies: []*ProcUsage{}, Others: []*ProcUsage{}}
		if b, err := os.ReadFile("/proc/loadavg"); err == nil {
			f := strings.Fields(string(b))
			m.LoadAverage = strings.Join(f[:min(3, len(f))], " ")
		}
		err := measureMode(ctx, cfg, m, mlogf)
		if errors.Is(err, errStray) && attempt < attempts && ctx.Err() == nil {
			// Keep the spoiled attempt's files as evidence, out of the way.
			dir := filepath.Join(cfg.Out, mode)
			spoiled := fmt.Sprintf("%s.spoiled-%d", dir, attempt)
			if rerr := os.Rename(dir, spoiled); rerr != nil {
				mlogf("warning: %v", rerr)
			}
			mlogf("%v; measuring again on a fresh cluster (attempt %d of %d; the spoiled one is in %s)", err, attempt+1, attempts, spoiled)
			continue
		}
		if err != nil {
			m.Error = err.Error()
			mlogf("error: %v", err)
		}
		return m
	}
}

func measureMode(ctx context.Context, cfg *Config, m *ModeResult, logf func(string, ...any)) error {
	dir, err := filepath.Abs(filepath.Join(cfg.Out, m.Mode))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	if cfg.Cluster == nil {
		return errors.New("no embedded cluster backend to measure on")
	}
	dp, err := cfg.Cluster.DataPlane(m.Mode, dir, logf)
	if err != nil {
		return err
	}
	apps := []netns.PodSpec{{Name: ClientPod, Node: 1}, {Name: ServerPod, Node: 2}}
	if dp != nil {
		defer dp.Close()
		m.DataPlane = dp.Describe()
	}
	t0 := time.Now()
	cl, _, err := netnstrial.Up(ctx, netnstrial.Spec{Nodes: 2, Apps: apps, DataPlane: dp, Binary: cfg.Cluster.Binary,
		LogDir: filepath.Join(dir, "logs"), Logf: logf})
	if err != nil {
		return err
	}
	strays := newStrayWatch(cl)
	defer func() {
		logf("tearing down")
		strays.observe()
		cl.Down()
		// Down stops the processes the cluster tracks; duplicates launched
		// by its supervisor (see strays.go) would live on and take CPU from
		// the next mode.
		if n := strays.afterDown(); n > 0 {
			logf("killed %d stray process(es) the cluster did not track", n)
		}
	}()
	if err := netnstrial.Deploy(ctx, cl, dp, apps, logf); err != nil {
		if serr := strays.check(); serr != nil {
			return fmt.Errorf("%w (%w)", serr, err)
		}
		return err
	}
	// The server pod runs the same echo agent the scenarios use, plus the
	// throughput sink.
	if _, err := cl.Start(ServerPod, netnstrial.ServerSpec()); err != nil {
		return err
	}
	if _, err := cl.Start(ServerPod, netns.ProcSpec{Name: "sink", Args: []string{"bench-agent",
		"--sink-listen", fmt.Sprintf(":%d", SinkPort)}, ProbePort: SinkPort}); err != nil {
		return err
	}
	// A duplicate launch happens within a supervisor tick (100 ms) of
	// Start; one that holds a listening port keeps the tracked copy from
	// ever getting ready, so look before waiting.
	time.Sleep(300 * time.Millisecond)
	if err := strays.check(); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err = cl.WaitReady(rctx)
	cancel()
	if err != nil {
		if serr := strays.check(); serr != nil {
			return fmt.Errorf("servers: %w (%w)", serr, err)
		}
		return fmt.Errorf("servers: %w", err)
	}
	m.BringUpSeconds = round(time.Since(t0).Seconds(), 2)
	logf("cluster, data plane and servers ready in %.1fs", m.BringUpSeconds)
	cp, _ := cl.Pod(ClientPod)
	sp, _ := cl.Pod(ServerPod)
	m.Topology = Topology{Client: cp.Name, ClientNode: cp.Node.Name, ClientIP: cp.IP.String(),
		Server: sp.Name, ServerNode: sp.Node.Name, ServerIP: sp.IP.String()}

	// A failed phase does not stop the other: what was measured is kept.
	acct := newAccounting(cl, dp)
	acct.strays = strays
	var errs []error
	if err := measureLatency(ctx, cfg, cl, dir, m, acct, logf); err != nil {
		errs = append(errs, fmt.Errorf("latency: %w", err))
		if ctx.Err() != nil || errors.Is(err, errStray) {
			return errors.Join(errs...)
		}
	}
	if err := measureThroughput(ctx, cfg, cl, dir, m, acct, logf); err != nil {
		errs = append(errs, fmt.Errorf("throughput: %w", err))
		if ctx.Err() != nil || errors.Is(err, errStray) {
			return errors.Join(errs...)
		}
	}
	acct.final()
	m.Proxies, m.Others = acct.results()
	m.ProxySummary = Summarize(m.Proxies, m.Latency, m.Throughput)
	if dp != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := dp.Collect(cctx, filepath.Join(dir, "dataplane")); err != nil {
			logf("collect data plane metrics: %v", err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

// measureLatency runs the fixed-rate keep-alive load from the client pod and
// reduces its events to percentiles over the window after the warm-up.
func measureLatency(ctx context.Context, cfg *Config, cl *netns.Cluster, dir string, m *ModeResult, acct *accounting, logf func(string, ...any)) error {
	target := fmt.Sprintf("%s:%d", m.Topology.ServerIP, HTTPPort)
	evPath := filepath.Join(dir, "latency.jsonl")
	start := time.Now().Add(time.Second).Truncate(time.Millisecond)
	warmEnd := start.Add(cfg.Warmup)
	end := warmEnd.Add(cfg.Duration)
	flow := fmt.Sprintf("id=latency,target=%s,profile=%s,qps=%g,threads=%d,timeout=%s,events=%s",
		target, load.ProfileHTTPKeepAlive, cfg.QPS, cfg.Connections, cfg.Timeout, evPath)
	// No --duration: the agent runs until stopped at the end of the window.
	// An agent that ends by itself would be restarted by its supervisor.
	pr, err := cl.Start(ClientPod, netns.ProcSpec{Name: "load", Args: []string{"agent",
		"--start-at", strconv.FormatInt(start.UnixNano(), 10), "--flow", flow}})
	if err != nil {
		return err
	}
	defer stopProc(cl, pr, cfg.Timeout+3*time.Second)
	// A duplicate launch happens within a supervisor tick (100 ms) of Start.
	time.Sleep(300 * time.Millisecond)
	if err := acct.strays.check(); err != nil {
		return err
	}
	logf("latency: %g rps over %d keep-alive connections to %s, %s warm-up + %s measured",
		cfg.QPS, cfg.Connections, target, cfg.Warmup, cfg.Duration)

	tail := &events.Tail{Path: evPath}
	var total, ok int
	var before, after map[string]procSample
	var m0, m1 MachineCPU
	var w0, w1 time.Time
	warmT, endT := time.NewTimer(time.Until(warmEnd)), time.NewTimer(time.Until(end))
	defer warmT.Stop()
	defer endT.Stop()
	tk := time.NewTicker(2 * time.Second)
	defer tk.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-warmT.C:
			w0, before, m0 = time.Now(), acct.snapshot(), readMachineCPU()
		case <-endT.C:
			w1, after, m1 = time.Now(), acct.snapshot(), readMachineCPU()
			done = true
		case <-tk.C:
			if pr.Restarts() > 0 {
				return fmt.Errorf("the load agent exited early (see %s)", filepath.Join(dir, "logs", ClientPod+".load.log"))
			}
			evs, _ := tail.Next()
			n, k := 0, 0
			for _, e := range evs {
				if e.Kind == events.KindRequest {
					n++
					if e.OK() {
						k++
					}
				}
			}
			total, ok = total+n, ok+k
			phase := "measure"
			if time.Now().Before(warmEnd) {
				phase = "warm-up"
			}
			logf("latency %-7s t=%4.1fs/%.0fs requests=%d ok=%s (last 2s: %.0f rps)", phase,
				max(0, time.Since(start).Seconds()), end.Sub(start).Seconds(), total, pct(ok, total), float64(n)/2)
		}
	}
	m.LatencyCPU = newPhaseCPU(w1.Sub(w0), m0, m1, acct.record(phaseLatency, before, after), runtime.NumCPU())
	if err := acct.strays.check(); err != nil {
		return err
	}
	// Stopping lets requests in flight finish (within the timeout) and be
	// recorded; the window only counts requests that started before end.
	stopProc(cl, pr, cfg.Timeout+3*time.Second)
	evs, err := events.ReadFile(evPath)
	if err != nil {
		return err
	}
	l := SummarizeLatency(evs, warmEnd, end)
	l.OfferedQPS, l.Connections = cfg.QPS, cfg.Connections
	m.Latency = &l
	if l.OK == 0 {
		return fmt.Errorf("no successful request in the window (%d errors: %v)", l.Errors, l.ErrorClasses)
	}
	logf("latency: p50 %.3f ms, p99 %.3f ms, %.1f rps achieved, %d errors", l.P50Ms, l.P99Ms, l.AchievedRPS, l.Errors)
	return nil
}

// measureThroughput sends on one TCP connection from the client pod to the
// sink in the server pod and reads the sender's result.
func measureThroughput(ctx context.Context, cfg *Config, cl *netns.Cluster, dir string, m *ModeResult, acct *accounting, logf func(string, ...any)) error {
	target := fmt.Sprintf("%s:%d", m.Topology.ServerIP, SinkPort)
	resPath := filepath.Join(dir, "throughput.json")
	logPath := filepath.Join(dir, "logs", ClientPod+".bulk.log")
	_ = os.Remove(resPath)
	started, before, m0 := time.Now(), acct.snapshot(), readMachineCPU()
	pr, err := cl.Start(ClientPod, netns.ProcSpec{Name: "bulk", Args: []string{"bench-agent",
		"--send", target, "--duration", cfg.ThroughputDuration.String(), "--result", resPath,
		"--not-after", strconv.FormatInt(started.Add(5*time.Second).UnixNano(), 10),
		// Stay after writing the result until stopped, so that the CPU
		// reading after the phase still sees the sender (and its
		// supervisor does not restart it meanwhile).
		"--linger", "1m"}})
	if err != nil {
		return err
	}
	defer stopProc(cl, pr, 3*time.Second)
	time.Sleep(300 * time.Millisecond)
	if err := acct.strays.check(); err != nil {
		return err
	}
	logf("throughput: one TCP connection to %s for %s", target, cfg.ThroughputDuration)
	// Dial (5s) + sending + the sink's confirmation (10s) + margin.
	deadline := time.NewTimer(cfg.ThroughputDuration + 25*time.Second)
	defer deadline.Stop()
	tk := time.NewTicker(50 * time.Millisecond)
	defer tk.Stop()
	lastLog := started
	for !exists(resPath) {
		if !pr.Running() || pr.Restarts() > 0 {
			if exists(resPath) {
				break
			}
			return fmt.Errorf("the sender exited without a result (see %s)", logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("no result after %s (see %s)", cfg.ThroughputDuration+25*time.Second, logPath)
		case <-tk.C:
		}
		if time.Since(lastLog) >= 2*time.Second {
			lastLog = time.Now()
			logf("throughput t=%.0fs/%.0fs", time.Since(started).Seconds(), cfg.ThroughputDuration.Seconds())
		}
	}
	ended, after, m1 := time.Now(), acct.snapshot(), readMachineCPU()
	m.ThroughputCPU = newPhaseCPU(ended.Sub(started), m0, m1, acct.record(phaseThroughput, before, after), runtime.NumCPU())
	if err := acct.strays.check(); err != nil {
		return err
	}
	b, err := os.ReadFile(resPath)
	if err != nil {
		return err
	}
	var res load.BulkResult
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("%s: %w", resPath, err)
	}
	m.Throughput = &Throughput{BulkResult: res, MBps: round(res.MBps(), 1)}
	if !res.Acked {
		logf("throughput: the sink did not confirm the byte count (%s): rate from bytes written", res.AckError)
	}
	logf("throughput: %.1f MB/s (%d bytes in %.2fs)", m.Throughput.MBps, res.Bytes, res.Seconds)
	return nil
}

// stopProc stops a process for good. The supervisor may relaunch a process
// that exited by itself in the instant before Stop marked it stopped, so
// check and stop again.
func stopProc(cl *netns.Cluster, pr *netns.Process, grace time.Duration) {
	for range 3 {
		cl.Stop(pr, grace)
		time.Sleep(150 * time.Millisecond)
		if !pr.Running() {
			return
		}
	}
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

func pct(a, b int) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(a)/float64(b))
}

const (
	phaseLatency    = "latency"
	phaseThroughput = "throughput"
)

// accounting follows the CPU and memory of every process in the cluster.
type accounting struct {
	cl      *netns.Cluster
	procs   map[string]*netns.Process // pod/name -> process
	proxies map[string]bool           // pod/name of the data plane's proxies
	usage   map[string]*ProcUsage
	last    map[string]procSample // last good reading
	strays  *strayWatch
}

func newAccounting(cl *netns.Cluster, dp netnstrial.DataPlane) *accounting {
	a := &accounting{cl: cl, procs: map[string]*netns.Process{}, proxies: map[string]bool{},
		usage: map[string]*ProcUsage{}, last: map[string]procSample{}}
	if ref, ok := dp.(*dataplane.Reference); ok {
		for pod, pr := range ref.Proxies {
			if pod == dataplane.ControlPlanePod {
				continue
			}
			a.proxies[pod+"/"+pr.Spec.Name] = true
		}
	}
	return a
}

// snapshot reads every process now in the cluster.
func (a *accounting) snapshot() map[string]procSample {
	out := map[string]procSample{}
	for _, p := range a.cl.Pods() {
		for _, pr := range p.Processes() {
			key := p.Name + "/" + pr.Spec.Name
			a.procs[key] = pr
			s := sampleProc(pr.Pid())
			out[key] = s
			if s.err == nil {
				a.last[key] = s
			}
		}
	}
	return out
}

func (a *accounting) get(key string) *ProcUsage {
	u := a.usage[key]
	if u == nil {
		pod, name, _ := cutLast(key, "/")
		u = &ProcUsage{Pod: pod, Process: name}
		a.usage[key] = u
	}
	return u
}

// record charges each process the CPU it used between two snapshots and
// returns the total.
func (a *accounting) record(phase string, before, after map[string]procSample) (total float64) {
	for key, s1 := range after {
		u := a.get(key)
		if s1.err != nil {
			if a.proxies[key] {
				u.Notes = append(u.Notes, fmt.Sprintf("not readable at the end of the %s phase: %v", phase, s1.err))
			}
			continue
		}
		s0, ok := before[key]
		var ticks uint64
		switch {
		case !ok || s0.err != nil:
			ticks = s1.ticks // started during the phase
		case s0.pid != s1.pid:
			ticks = s1.ticks
			u.Notes = append(u.Notes, fmt.Sprintf("restarted during the %s phase: CPU undercounted", phase))
		default:
			ticks = s1.ticks - s0.ticks
		}
		cpu := round(float64(ticks)/ClockTicks, 2)
		total += float64(ticks) / ClockTicks
		switch phase {
		case phaseLatency:
			u.LatencyCPUSeconds = cpu
		case phaseThroughput:
			u.ThroughputCPUSeconds = cpu
		}
	}
	return total
}

// final takes the last memory readings.
func (a *accounting) final() {
	a.snapshot()
	for key, s := range a.last {
		u := a.get(key)
		u.Pid = s.pid
		u.PeakRSSMB = round(float64(s.hwmKB)*1024/1e6, 1)
		u.RSSMB = round(float64(s.rssKB)*1024/1e6, 1)
	}
	for key, pr := range a.procs {
		a.get(key).Restarts = pr.Restarts()
	}
}

func (a *accounting) results() (proxies, others []*ProcUsage) {
	keys := make([]string, 0, len(a.usage))
	for k := range a.usage {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if a.proxies[k] {
			proxies = append(proxies, a.usage[k])
		} else {
			others = append(others, a.usage[k])
		}
	}
	if proxies == nil {
		proxies = []*ProcUsage{}
	}
	if others == nil {
		others = []*ProcUsage{}
	}
	return proxies, others
}

func cutLast(s, sep string) (before, after string, found bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}
