package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/dataplane"
	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/load"
	"blastradius.dev/blastradius/framework/netnstrial"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/internal/atomicjson"
)

// Config is one soak.
type Config struct {
	Duration    time.Duration // load runs this long
	FaultEvery  time.Duration // a fault every FaultEvery, the first one FaultEvery after the load starts
	SampleEvery time.Duration // every process is sampled this often
	Nodes       int           // ≥ 2: node-1's proxy is never faulted, the others are
	QPS         float64       // total requests per second over every flow
	Waypoints   int           // waypoint replicas in front of the echo service (0: none); waypoint-0 is never faulted
	CertTTL     time.Duration // workload certificate lifetime: short, so renewals happen during the soak
	Timeout     time.Duration // per-request timeout of the load agents
	Out         string        // results folder (absolute)
	Binary      string        // what pods run ("": this executable, or its -pod build)
	Logf        func(string, ...any)
}

// Defaults of the flags and of zero Config fields.
const (
	DefaultDuration    = 30 * time.Minute
	DefaultFaultEvery  = time.Minute
	DefaultSampleEvery = 10 * time.Second
	DefaultNodes       = 3
	DefaultQPS         = 150
	DefaultWaypoints   = 2
	DefaultCertTTL     = 10 * time.Minute
)

// Validate checks a configuration; its error names the flag.
func (c *Config) Validate() error {
	switch {
	case c.Duration < 20*time.Second || c.Duration > 48*time.Hour:
		return fmt.Errorf("--duration %s out of range 20s..48h", c.Duration)
	case c.FaultEvery < 5*time.Second || c.FaultEvery > c.Duration:
		return fmt.Errorf("--fault-every %s out of range 5s..--duration (%s)", c.FaultEvery, c.Duration)
	case c.SampleEvery < time.Second || c.SampleEvery > c.Duration/4:
		return fmt.Errorf("--sample-every %s out of range 1s..duration/4 (%s)", c.SampleEvery, c.Duration/4)
	case c.Nodes < 2 || c.Nodes > 9:
		return fmt.Errorf("--nodes %d out of range 2..9 (node-1's proxy is kept, the others are faulted)", c.Nodes)
	case c.QPS <= 0 || c.QPS > 5000:
		return fmt.Errorf("--qps %g out of range (0, 5000]", c.QPS)
	case c.Waypoints < 0 || c.Waypoints > 4:
		return fmt.Errorf("--waypoints %d out of range 0..4", c.Waypoints)
	case c.CertTTL < 2*time.Minute:
		return fmt.Errorf("--cert-ttl %s below 2m", c.CertTTL)
	}
	return nil
}

// Process roles.
const (
	RoleNodeProxy    = "node-proxy"
	RoleControlPlane = "controlplane"
	RoleWaypoint     = "waypoint"
)

// FaultRecord is one injected fault: a line of soak.jsonl with kind "fault"
// and an entry of the summary's fault log.
type FaultRecord struct {
	Kind      string     `json:"kind"` // "fault"
	N         int        `json:"n"`
	Fault     string     `json:"fault"`
	Target    string     `json:"target"`
	At        time.Time  `json:"at"`
	Elapsed   float64    `json:"elapsed_s"`
	Recovered *time.Time `json:"recovered,omitempty"` // the target served again
	TookS     float64    `json:"took_s"`
	Detail    string     `json:"detail,omitempty"`
	Error     string     `json:"error,omitempty"`
}

// LoadTotals are request counts since the load started: a line of
// soak.jsonl with kind "load" after every sampling round, and the summary's
// totals.
type LoadTotals struct {
	Kind     string           `json:"kind"` // "load"
	T        time.Time        `json:"t"`
	Elapsed  float64          `json:"elapsed_s"`
	Requests int64            `json:"requests"`
	OK       int64            `json:"ok"`
	Errors   int64            `json:"errors"`
	ByClass  map[string]int64 `json:"by_class"`
	Broken   int64            `json:"streams_broken"`
	RPS      float64          `json:"rps"` // since the previous round
}

// Summary is soak.json.
type Summary struct {
	Schema      int       `json:"schema"`
	Started     time.Time `json:"started"` // the load's start
	Ended       time.Time `json:"ended"`
	ElapsedS    float64   `json:"elapsed_s"`
	Interrupted bool      `json:"interrupted"`
	Error       string    `json:"error,omitempty"`
	Config      struct {
		Duration    string  `json:"duration"`
		FaultEvery  string  `json:"fault_every"`
		SampleEvery string  `json:"sample_every"`
		Nodes       int     `json:"nodes"`
		QPS         float64 `json:"qps"`
		Waypoints   int     `json:"waypoints"`
		CertTTL     string  `json:"cert_ttl"`
	} `json:"config"`
	Processes    []string      `json:"processes"`     // every sampled pod
	NeverFaulted []string      `json:"never_faulted"` // pods no fault of the rotation targets
	Rotation     []string      `json:"rotation"`
	Faults       []FaultRecord `json:"faults"`
	FaultErrors  int           `json:"fault_errors"`
	Load         LoadTotals    `json:"load"`
	Samples      int           `json:"samples"`
	Analysis
}

// tracked is one sampled pod and the process that currently runs in it.
type tracked struct {
	name, role, node, metricsURL string
	pr                           *netns.Process
	// prior counts replacements before pr: a graceful restart starts a new
	// Process whose own restart count begins at 0.
	prior int
}

func (t *tracked) restarts() int { return t.prior + t.pr.Restarts() }

// soak is one running soak.
type soak struct {
	cfg   Config
	logf  func(string, ...any)
	cl    *netns.Cluster
	dp    *dataplane.Reference
	start time.Time
	end   time.Time

	out   *os.File
	outMu sync.Mutex

	mu      sync.Mutex
	procs   []*tracked // sorted by name
	samples []Sample
	faults  []FaultRecord
	load    LoadTotals
	eps     map[string]int // service -> endpoints, as last reported
}

// write appends one JSON line with a single write: a soak killed at any
// point leaves whole lines behind.
func (s *soak) write(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	s.outMu.Lock()
	defer s.outMu.Unlock()
	if _, err := s.out.Write(append(b, '\n')); err != nil {
		s.logf("soak.jsonl: %v", err)
	}
}

// Ports of the echo servers, as in trials.
const (
	httpPort  = scenario.HTTPPort
	tcpPort   = scenario.TCPPort
	svcPort   = scenario.ServiceTCP
	echoSvc   = "echo"
	agentWait = 3 * time.Second
)

// Run brings up the cluster, runs the soak and returns its summary, which it
// has also written to <Out>/soak.json. The summary is returned (and written)
// when ctx ends early too, with Interrupted set; a non-nil error means the
// soak could not start or finish (the summary says how far it got).
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	if cfg.CertTTL == 0 {
		cfg.CertTTL = DefaultCertTTL
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	for _, d := range []string{"flows", "logs", "dataplane"} {
		if err := os.MkdirAll(filepath.Join(cfg.Out, d), 0o755); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(filepath.Join(cfg.Out, "soak.jsonl"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := &soak{cfg: cfg, logf: logf, out: f}
	runErr := s.run(ctx)
	sum := s.summary(ctx.Err() != nil, runErr)
	if err := atomicjson.Write(filepath.Join(cfg.Out, "soak.json"), sum); err != nil {
		return sum, errors.Join(runErr, err)
	}
	return sum, runErr
}

func (s *soak) run(ctx context.Context) error {
	cfg := s.cfg
	n := cfg.Nodes
	var apps []netns.PodSpec
	for i := 1; i <= n; i++ {
		apps = append(apps, netns.PodSpec{Name: serverPod(i), Node: i}, netns.PodSpec{Name: clientPod(i), Node: i})
	}
	dp := &dataplane.Reference{Mode: "ambient", Dir: filepath.Join(cfg.Out, "dataplane"), CertTTL: cfg.CertTTL,
		Drain: 5 * time.Second, Logf: s.logf}
	if cfg.Waypoints > 0 {
		dp.ConfigureWaypoint(echoSvc, cfg.Waypoints)
	}
	defer dp.Close()
	s.dp = dp
	cl, _, err := netnstrial.Up(ctx, netnstrial.Spec{Nodes: n, Apps: apps, DataPlane: dp, NotReadyGrace: 5 * time.Second,
		Binary: cfg.Binary, LogDir: filepath.Join(cfg.Out, "logs"), Logf: s.logf, EndpointsChanged: s.endpointsChanged})
	if err != nil {
		return err
	}
	s.cl = cl
	defer func() {
		s.logf("tearing down")
		cl.Down()
	}()
	if err := netnstrial.Deploy(ctx, cl, dp, apps, s.logf); err != nil {
		return err
	}
	var servers []string
	for i := 1; i <= n; i++ {
		servers = append(servers, serverPod(i))
		if _, err := cl.Start(serverPod(i), netnstrial.ServerSpec()); err != nil {
			return err
		}
	}
	svc, err := cl.AddService(echoSvc, svcPort, httpPort, servers)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := cl.WaitReady(rctx); err != nil {
		return fmt.Errorf("servers: %w", err)
	}
	for s.endpoints(echoSvc) < n {
		select {
		case <-rctx.Done():
			return fmt.Errorf("service %s never got its endpoints: %w", echoSvc, rctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.track()

	// The load: every client node to every server node by pod IP (HTTP,
	// kept-alive and new connections alternating), every client to the
	// service (through the waypoints when there are any), and a long-lived
	// TCP stream per client to the next node: the connection kinds whose
	// state a proxy can leak.
	type flow struct{ id, target, profile string }
	byClient := map[int][]flow{}
	for i := 1; i <= n; i++ {
		for j := 1; j <= n; j++ {
			sp, _ := cl.Pod(serverPod(j))
			prof := load.ProfileHTTPKeepAlive
			if (i+j)%2 == 1 {
				prof = load.ProfileHTTPNewConn
			}
			byClient[i] = append(byClient[i], flow{fmt.Sprintf("n%d-n%d", i, j), fmt.Sprintf("%s:%d", sp.IP, httpPort), prof})
		}
		byClient[i] = append(byClient[i], flow{fmt.Sprintf("n%d-svc", i), fmt.Sprintf("%s:%d", svc.VIP, svcPort), load.ProfileHTTPNewConn})
		sp, _ := cl.Pod(serverPod(i%n + 1))
		byClient[i] = append(byClient[i], flow{fmt.Sprintf("n%d-stream", i), fmt.Sprintf("%s:%d", sp.IP, tcpPort), load.ProfileTCPStream})
	}
	nflows := 0
	for _, fs := range byClient {
		nflows += len(fs)
	}
	qps := cfg.QPS / float64(nflows)
	s.start = time.Now().Add(2 * time.Second).Truncate(time.Millisecond)
	s.end = s.start.Add(cfg.Duration)
	var tails []*events.Tail
	var clients []*netns.Process
	for i := 1; i <= n; i++ {
		// The agents' schedule outlasts the soak: the last samples must
		// see the proxies under load, not winding down. They are stopped
		// after the last sample.
		args := []string{"agent", "--start-at", strconv.FormatInt(s.start.UnixNano(), 10), "--duration", (cfg.Duration + time.Minute).String()}
		for _, fl := range byClient[i] {
			ev := filepath.Join(cfg.Out, "flows", fl.id+".jsonl")
			tails = append(tails, &events.Tail{Path: ev})
			args = append(args, "--flow", fmt.Sprintf("id=%s,target=%s,profile=%s,qps=%g,timeout=%s,events=%s",
				fl.id, fl.target, fl.profile, qps, cfg.Timeout, ev))
		}
		pr, err := cl.Start(clientPod(i), netns.ProcSpec{Name: "load", Args: args, RunOnce: true})
		if err != nil {
			return err
		}
		clients = append(clients, pr)
	}
	defer func() {
		for _, pr := range clients {
			cl.Stop(pr, agentWait)
		}
	}()
	rot := s.rotation()
	s.logf("soak: %s, %d flows at %.0f req/s, a fault every %s (rotation: %s), samples every %s; never faulted: %s",
		cfg.Duration, nflows, cfg.QPS, cfg.FaultEvery, strings.Join(rotNames(rot), ", "), cfg.SampleEvery, strings.Join(s.neverFaulted(), ", "))

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	sampled := make(chan struct{})
	go func() { defer close(sampled); s.sampleLoop(runCtx, tails) }()
	s.faultLoop(runCtx, rot)
	// The sampler ends at the end time on its own (or at an interrupt).
	select {
	case <-sampled:
	case <-time.After(time.Until(s.end) + cfg.SampleEvery + 10*time.Second):
		stop()
		<-sampled
	}
	if ctx.Err() != nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := dp.Collect(cctx, filepath.Join(cfg.Out, "dataplane")); err != nil {
		s.logf("collect data plane metrics: %v", err)
	}
	cancel()
	return nil
}

func serverPod(i int) string { return fmt.Sprintf("srv-n%d", i) }
func clientPod(i int) string { return fmt.Sprintf("cli-n%d", i) }

// endpointsChanged follows the endpoint controller for the data plane and
// for the wait before the load starts. (Service.Endpoints reads the
// controller's slice without a lock; this callback is the race-free view.)
func (s *soak) endpointsChanged(ch netns.EndpointChange) {
	s.mu.Lock()
	if s.eps == nil {
		s.eps = map[string]int{}
	}
	s.eps[ch.Service] = len(ch.Endpoints)
	s.mu.Unlock()
}

func (s *soak) endpoints(svc string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eps[svc]
}

// track records every data plane process of the deployed data plane.
func (s *soak) track() {
	var out []*tracked
	for name, pr := range s.dp.Proxies {
		p, _ := s.cl.Pod(name)
		t := &tracked{name: name, node: p.Node.Name, pr: pr,
			metricsURL: fmt.Sprintf("http://%s:%d/metrics", p.IP, dataplane.ProxyAdminPort)}
		switch {
		case name == dataplane.ControlPlanePod:
			t.role = RoleControlPlane
			t.metricsURL = fmt.Sprintf("http://%s:%d/metrics", p.IP, dataplane.CPAdminPort)
		case strings.HasPrefix(name, "waypoint-"):
			t.role = RoleWaypoint
		default:
			t.role = RoleNodeProxy
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	s.mu.Lock()
	s.procs = out
	s.mu.Unlock()
}

// replaced records a graceful restart: pod name now runs pr.
func (s *soak) replaced(name string, pr *netns.Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.procs {
		if t.name == name {
			t.prior += t.pr.Restarts() + 1
			t.pr = pr
		}
	}
}

func (s *soak) elapsed(t time.Time) float64 {
	return float64(t.Sub(s.start).Milliseconds()) / 1000
}

// sampleLoop samples every process every SampleEvery from the load's start
// to its end, with the load totals, and prints progress.
func (s *soak) sampleLoop(ctx context.Context, tails []*events.Tail) {
	every := s.cfg.SampleEvery
	progressEvery := time.Minute
	if s.cfg.Duration < 8*time.Minute {
		progressEvery = max(every, s.cfg.Duration/8)
	}
	lastProgress := time.Duration(-1)
	var lastReq int64
	lastT := s.start
	s.load = LoadTotals{Kind: "load", ByClass: map[string]int64{}}
	for k := 0; ; k++ {
		at := s.start.Add(time.Duration(k) * every)
		if at.After(s.end) {
			at = s.end
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		round := s.sampleRound(ctx)
		// Load totals: the agents append their events; read what is new.
		s.mu.Lock()
		lt := &s.load
		for _, t := range tails {
			evs, _ := t.Next()
			for _, e := range evs {
				switch e.Kind {
				case events.KindRequest:
					lt.Requests++
					if e.OK() {
						lt.OK++
					} else {
						lt.Errors++
					}
					lt.ByClass[string(e.Class)]++
				case events.KindBroken:
					lt.Broken++
				}
			}
		}
		now := time.Now()
		lt.T, lt.Elapsed = now, s.elapsed(now)
		if d := now.Sub(lastT).Seconds(); d > 0 {
			lt.RPS = float64(int64(float64(lt.Requests-lastReq)/d*10)) / 10
		}
		lastReq, lastT = lt.Requests, now
		snap := *lt
		snap.ByClass = maps.Clone(lt.ByClass)
		nf := len(s.faults)
		s.mu.Unlock()
		s.write(snap)
		el := at.Sub(s.start)
		if mark := el / progressEvery; mark != lastProgress || !at.Before(s.end) {
			lastProgress = mark
			s.logf("%s", progressLine(el, s.cfg.Duration, nf, round, snap))
		}
		if !at.Before(s.end) {
			return
		}
	}
}

// sampleRound samples every tracked process at once (scrapes in parallel:
// a hung /metrics must not delay the others' samples).
func (s *soak) sampleRound(ctx context.Context) []Sample {
	s.mu.Lock()
	procs := make([]tracked, len(s.procs))
	for i, t := range s.procs {
		procs[i] = *t
	}
	s.mu.Unlock()
	out := make([]Sample, len(procs))
	sctx, cancel := context.WithTimeout(ctx, min(s.cfg.SampleEvery, 3*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	for i := range procs {
		t := &procs[i]
		wg.Go(func() {
			pid, restarts := t.pr.Pid(), t.restarts()
			sm := Sample{Kind: "process", Process: t.name, Role: t.role, Node: t.node, PID: pid, Restarts: restarts, Goroutines: -1}
			st, err := ReadProc(pid)
			if err != nil {
				sm.Error = err.Error()
			} else {
				sm.FDs, sm.RSSBytes, sm.Threads = st.FDs, st.RSSBytes, st.Threads
				if g, err := Goroutines(sctx, t.metricsURL); err == nil {
					sm.Goroutines = g
				}
				// The process may have been replaced while it was read:
				// figures of a dying process are not this series'.
				if t.pr.Pid() != pid {
					sm = Sample{Kind: "process", Process: t.name, Role: t.role, Node: t.node, PID: pid, Restarts: restarts,
						Goroutines: -1, Error: "replaced while sampled"}
				}
			}
			sm.T = time.Now()
			sm.Elapsed = s.elapsed(sm.T)
			out[i] = sm
		})
	}
	wg.Wait()
	for _, sm := range out {
		s.write(sm)
	}
	s.mu.Lock()
	s.samples = append(s.samples, out...)
	s.mu.Unlock()
	return out
}

func progressLine(el, d time.Duration, faults int, round []Sample, lt LoadTotals) string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak t=%s/%s faults=%d", el.Round(time.Second), d, faults)
	for _, sm := range round {
		fmt.Fprintf(&b, " | %s ", sm.Process)
		if sm.Error != "" {
			b.WriteString("down")
			continue
		}
		g := "?"
		if sm.Goroutines >= 0 {
			g = strconv.Itoa(sm.Goroutines)
		}
		fmt.Fprintf(&b, "fd=%d g=%s rss=%.1fM", sm.FDs, g, float64(sm.RSSBytes)/(1<<20))
		if sm.Restarts > 0 {
			fmt.Fprintf(&b, " r%d", sm.Restarts)
		}
	}
	pct := 0.0
	if lt.Requests > 0 {
		pct = 100 * float64(lt.Errors) / float64(lt.Requests)
	}
	fmt.Fprintf(&b, " | %.1f req/s, %d req, %d errors (%.2f%%)", lt.RPS, lt.Requests, lt.Errors, pct)
	return b.String()
}

func (s *soak) summary(interrupted bool, runErr error) *Summary {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := &Summary{Schema: 1, Started: s.start, Ended: time.Now(), Interrupted: interrupted,
		Faults: append([]FaultRecord{}, s.faults...), Load: s.load, Samples: len(s.samples)}
	if sum.Load.ByClass == nil {
		sum.Load = LoadTotals{Kind: "load", ByClass: map[string]int64{}}
	}
	if !s.start.IsZero() {
		sum.ElapsedS = s.elapsed(sum.Ended)
	}
	if runErr != nil {
		sum.Error = runErr.Error()
	}
	c := s.cfg
	sum.Config.Duration, sum.Config.FaultEvery, sum.Config.SampleEvery = c.Duration.String(), c.FaultEvery.String(), c.SampleEvery.String()
	sum.Config.Nodes, sum.Config.QPS, sum.Config.Waypoints, sum.Config.CertTTL = c.Nodes, c.QPS, c.Waypoints, c.CertTTL.String()
	sum.Processes = []string{}
	for _, t := range s.procs {
		sum.Processes = append(sum.Processes, t.name)
	}
	sum.NeverFaulted = s.neverFaulted()
	sum.Rotation = rotNames(s.rotation())
	for _, f := range s.faults {
		if f.Error != "" {
			sum.FaultErrors++
		}
	}
	// An interrupted soak is judged on what it measured: its end window is
	// the end of what it ran, so a trend is still visible.
	d := c.Duration
	if interrupted && !s.start.IsZero() {
		d = min(d, time.Duration(sum.ElapsedS*float64(time.Second)))
	}
	sum.Analysis = Analyze(s.samples, DefaultRule(d, c.SampleEvery))
	if interrupted {
		sum.Analysis.Reason = "interrupted after " + time.Duration(sum.ElapsedS*float64(time.Second)).Round(time.Second).String() + "; " + sum.Analysis.Reason
	}
	return sum
}
