package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"blastradius.dev/blastradius/framework/load"
	"blastradius.dev/blastradius/internal/oneline"
)

// SchemaVersion is bumped on any incompatible change to bench.json.
const SchemaVersion = 1

// Report is bench.json.
type Report struct {
	SchemaVersion int           `json:"schemaVersion"`
	Command       []string      `json:"command"`
	Started       time.Time     `json:"started"`
	Finished      *time.Time    `json:"finished,omitempty"`
	Status        string        `json:"status"` // running, done, error, interrupted
	Environment   Environment   `json:"environment"`
	Config        Config        `json:"config"`
	Modes         []*ModeResult `json:"modes"`
	Goals         []Goal        `json:"goals"`
}

// Report statuses.
const (
	StatusRunning     = "running"
	StatusDone        = "done"
	StatusError       = "error" // at least one mode could not be measured
	StatusInterrupted = "interrupted"
)

// Environment says where the numbers were measured.
type Environment struct {
	Version   string `json:"version"`
	Kernel    string `json:"kernel"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel"`
	GoVersion string `json:"goVersion"`
	Rootless  bool   `json:"rootless"`
}

// ModeResult is everything measured for one data plane mode.
type ModeResult struct {
	Mode           string      `json:"mode"`
	DataPlane      string      `json:"dataPlane"`
	Error          string      `json:"error,omitempty"`
	BringUpSeconds float64     `json:"bringUpSeconds"` // cluster and data plane
	Topology       Topology    `json:"topology"`
	Latency        *Latency    `json:"latency,omitempty"`
	Throughput     *Throughput `json:"throughput,omitempty"`
	// Proxies are the data plane's proxies (node proxies in ambient mode,
	// sidecars in sidecar mode; the control plane is not one of them).
	Proxies      []*ProcUsage  `json:"proxies"`
	ProxySummary *ProxySummary `json:"proxySummary,omitempty"`
	// Others are every other process in the cluster (servers, load agents,
	// control plane), to see where the rest of the CPU went.
	Others []*ProcUsage `json:"others"`
	// The whole machine's CPU during each phase: the load, the proxies and
	// the servers share the cores, with whatever else runs on the machine.
	LatencyCPU    *PhaseCPU `json:"latencyCpu,omitempty"`
	ThroughputCPU *PhaseCPU `json:"throughputCpu,omitempty"`
	// LoadAverage is /proc/loadavg when the mode started.
	LoadAverage string `json:"loadAverage"`
}

// PhaseCPU compares the machine's CPU use during a phase with what the
// cluster's processes used, to tell how much else competed for the cores.
//
// The kernel here accounts CPU by ticks: interrupt and softirq time (most of
// the network stack's receive work) is charged both to the irq/softirq
// counters and to whichever task was interrupted. So OtherAtLeast =
// Machine - Cluster - IRQ is a lower bound of the CPU that went to processes
// that are not the bench's (other work on the machine, kernel threads): when
// it is large, the numbers are noisy.
type PhaseCPU struct {
	Seconds        float64 `json:"seconds"`        // wall time of the phase
	MachineBusy    float64 `json:"machineBusy"`    // busy fraction of all cores
	MachineSeconds float64 `json:"machineSeconds"` // busy CPU seconds, all cores
	IRQSeconds     float64 `json:"irqSeconds"`     // of which irq and softirq
	ClusterSeconds float64 `json:"clusterSeconds"` // CPU seconds of the cluster's processes
	OtherAtLeast   float64 `json:"otherAtLeastSeconds"`
	Noisy          bool    `json:"noisy"` // OtherAtLeast above 10 % of the cores' time
}

func newPhaseCPU(wall time.Duration, m0, m1 MachineCPU, cluster float64, cpus int) *PhaseCPU {
	p := &PhaseCPU{Seconds: round(wall.Seconds(), 2), ClusterSeconds: round(cluster, 2)}
	if m1.Total <= m0.Total || m1.Busy < m0.Busy || m1.IRQ < m0.IRQ {
		return p
	}
	// Scale ticks to seconds by the wall time rather than assuming USER_HZ
	// ticks per core: the ratio is what /proc/stat measures exactly.
	capacity := wall.Seconds() * float64(cpus)
	frac := func(v uint64) float64 { return float64(v) / float64(m1.Total-m0.Total) }
	p.MachineBusy = round(frac(m1.Busy-m0.Busy), 3)
	p.MachineSeconds = round(frac(m1.Busy-m0.Busy)*capacity, 2)
	p.IRQSeconds = round(frac(m1.IRQ-m0.IRQ)*capacity, 2)
	p.OtherAtLeast = round(max(0, p.MachineSeconds-p.ClusterSeconds-p.IRQSeconds), 2)
	p.Noisy = p.OtherAtLeast > 0.1*capacity
	return p
}

// Topology is where the client and server ran.
type Topology struct {
	Client     string `json:"client"`
	ClientNode string `json:"clientNode"`
	ClientIP   string `json:"clientIp"`
	Server     string `json:"server"`
	ServerNode string `json:"serverNode"`
	ServerIP   string `json:"serverIp"`
}

// Throughput is the single-stream result.
type Throughput struct {
	load.BulkResult
	MBps float64 `json:"mbps"` // MB/s, 10^6 bytes
}

// ProcUsage is one process's CPU per phase and memory. CPU is utime+stime
// from /proc/<pid>/stat; memory is VmHWM (peak resident set) and VmRSS at the
// last reading, from /proc/<pid>/status. MB are 10^6 bytes.
type ProcUsage struct {
	Pod                  string   `json:"pod"`
	Process              string   `json:"process"`
	Pid                  int      `json:"pid"`
	Restarts             int      `json:"restarts"`
	LatencyCPUSeconds    float64  `json:"latencyCpuSeconds"`
	ThroughputCPUSeconds float64  `json:"throughputCpuSeconds"`
	PeakRSSMB            float64  `json:"peakRssMB"`
	RSSMB                float64  `json:"rssMB"`
	Notes                []string `json:"notes,omitempty"`
}

// ProxySummary sums and maximises ProcUsage over the proxies.
type ProxySummary struct {
	Count                int     `json:"count"`
	LatencyCPUSum        float64 `json:"latencyCpuSecondsSum"`
	LatencyCPUMax        float64 `json:"latencyCpuSecondsMax"`
	ThroughputCPUSum     float64 `json:"throughputCpuSecondsSum"`
	ThroughputCPUMax     float64 `json:"throughputCpuSecondsMax"`
	PeakRSSMaxMB         float64 `json:"peakRssMaxMB"`
	PeakRSSSumMB         float64 `json:"peakRssSumMB"`
	CPUMsPer1000Requests float64 `json:"cpuMsPer1000Requests"` // latency phase, all proxies
	CPUSecondsPerGB      float64 `json:"cpuSecondsPerGB"`      // throughput phase, all proxies
}

// Summarize computes the proxy summary from the proxies and the phases.
func Summarize(proxies []*ProcUsage, lat *Latency, tp *Throughput) *ProxySummary {
	if len(proxies) == 0 {
		return nil
	}
	s := &ProxySummary{Count: len(proxies)}
	for _, p := range proxies {
		s.LatencyCPUSum += p.LatencyCPUSeconds
		s.LatencyCPUMax = max(s.LatencyCPUMax, p.LatencyCPUSeconds)
		s.ThroughputCPUSum += p.ThroughputCPUSeconds
		s.ThroughputCPUMax = max(s.ThroughputCPUMax, p.ThroughputCPUSeconds)
		s.PeakRSSMaxMB = max(s.PeakRSSMaxMB, p.PeakRSSMB)
		s.PeakRSSSumMB += p.PeakRSSMB
	}
	s.LatencyCPUSum, s.ThroughputCPUSum = round(s.LatencyCPUSum, 2), round(s.ThroughputCPUSum, 2)
	s.PeakRSSSumMB = round(s.PeakRSSSumMB, 1)
	if lat != nil && lat.Requests > 0 {
		s.CPUMsPer1000Requests = round(s.LatencyCPUSum*1000/float64(lat.Requests)*1000, 1)
	}
	if tp != nil {
		b := tp.Bytes
		if tp.Acked {
			b = tp.Delivered
		}
		if b > 0 {
			s.CPUSecondsPerGB = round(s.ThroughputCPUSum/(float64(b)/1e9), 2)
		}
	}
	return s
}

// Goal is one target the issue set, checked against the numbers. Goals are
// notes for the reader, not failures of the run.
type Goal struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	// Pass is nil when the goal could not be evaluated (a mode missing or
	// failed).
	Pass *bool  `json:"pass"`
	Note string `json:"note,omitempty"`
}

// Goal thresholds.
const (
	GoalP50OverheadMs      = 0.3  // ambient p50 minus none p50
	GoalThroughputFraction = 0.40 // ambient throughput over none's
	GoalNodeProxyRSSMB     = 30.0 // peak RSS of each ambient node proxy
)

func find(modes []*ModeResult, name string) *ModeResult {
	for _, m := range modes {
		if m.Mode == name && m.Error == "" {
			return m
		}
	}
	return nil
}

// EvaluateGoals checks the goals against the measured modes.
func EvaluateGoals(modes []*ModeResult) []Goal {
	none, amb := find(modes, "none"), find(modes, "ambient")
	pass := func(b bool) *bool { return &b }
	g1 := Goal{Name: "ambient p50 latency overhead", Target: fmt.Sprintf("≤ %.1f ms over none", GoalP50OverheadMs)}
	switch {
	case none == nil || amb == nil:
		g1.Note = "needs successful none and ambient runs"
	case none.Latency == nil || amb.Latency == nil || none.Latency.OK == 0 || amb.Latency.OK == 0:
		g1.Note = "no successful requests in none or ambient"
	default:
		d := amb.Latency.P50Ms - none.Latency.P50Ms
		g1.Measured = fmt.Sprintf("%+.3f ms (ambient %.3f ms, none %.3f ms)", d, amb.Latency.P50Ms, none.Latency.P50Ms)
		g1.Pass = pass(d <= GoalP50OverheadMs)
	}
	g2 := Goal{Name: "ambient single-stream throughput", Target: fmt.Sprintf("≥ %.0f %% of none", GoalThroughputFraction*100)}
	switch {
	case none == nil || amb == nil:
		g2.Note = "needs successful none and ambient runs"
	case none.Throughput == nil || amb.Throughput == nil || none.Throughput.MBps <= 0:
		g2.Note = "no throughput measured in none or ambient"
	default:
		f := amb.Throughput.MBps / none.Throughput.MBps
		g2.Measured = fmt.Sprintf("%.0f %% (ambient %.1f MB/s, none %.1f MB/s)", f*100, amb.Throughput.MBps, none.Throughput.MBps)
		g2.Pass = pass(f >= GoalThroughputFraction)
	}
	g3 := Goal{Name: "ambient node proxy peak RSS", Target: fmt.Sprintf("≤ %.0f MB per node proxy", GoalNodeProxyRSSMB)}
	switch {
	case amb == nil:
		g3.Note = "needs a successful ambient run"
	case len(amb.Proxies) == 0:
		g3.Note = "no node proxy measured"
	default:
		worst := amb.Proxies[0]
		for _, p := range amb.Proxies {
			if p.PeakRSSMB > worst.PeakRSSMB {
				worst = p
			}
		}
		g3.Measured = fmt.Sprintf("max %.1f MB (%s)", worst.PeakRSSMB, worst.Pod)
		g3.Pass = pass(worst.PeakRSSMB <= GoalNodeProxyRSSMB)
	}
	return []Goal{g1, g2, g3}
}

// PrintTable writes the human summary of a report.
func PrintTable(w io.Writer, r *Report) {
	c := r.Config
	fmt.Fprintf(w, "\nblastradius bench: %d CPUs (%s), kernel %s, %s\n", r.Environment.CPUs, r.Environment.CPUModel, r.Environment.Kernel, r.Environment.Version)
	fmt.Fprintf(w, "latency: %g rps HTTP/1.1 keep-alive over %d connections, client-n1 (node-1) -> server-n2 (node-2) by pod IP, %gs measured after %gs warm-up\n",
		c.QPS, c.Connections, c.DurationS, c.WarmupS)
	fmt.Fprintf(w, "throughput: one TCP connection, client-n1 -> server-n2, %gs of 64 KiB writes; MB = 10^6 bytes\n", c.ThroughputDurationS)
	fmt.Fprintf(w, "proxy CPU: seconds of utime+stime during the %gs latency window and during the throughput test, sum/max over proxies\n\n", c.DurationS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tp50 ms\tp99 ms\tachieved rps\terrors\tthroughput MB/s\tproxies\tCPU s latency sum/max\tCPU s throughput sum/max\tpeak RSS MB max/sum\tmachine busy lat/tput\t")
	for _, m := range r.Modes {
		if m.Error != "" {
			fmt.Fprintf(tw, "%s\tERROR\t-\t-\t-\t-\t-\t-\t-\t-\t-\t\n", m.Mode)
			continue
		}
		p50, p99, rps, errs, tput := "-", "-", "-", "-", "-"
		if l := m.Latency; l != nil {
			p50, p99 = fmt.Sprintf("%.3f", l.P50Ms), fmt.Sprintf("%.3f", l.P99Ms)
			rps, errs = fmt.Sprintf("%.1f", l.AchievedRPS), fmt.Sprint(l.Errors)
		}
		if t := m.Throughput; t != nil {
			tput = fmt.Sprintf("%.1f", t.MBps)
			if !t.Acked {
				tput += "*"
			}
		}
		np, cpuL, cpuT, rss := "0", "-", "-", "-"
		if s := m.ProxySummary; s != nil {
			np = fmt.Sprint(s.Count)
			cpuL = fmt.Sprintf("%.2f/%.2f", s.LatencyCPUSum, s.LatencyCPUMax)
			cpuT = fmt.Sprintf("%.2f/%.2f", s.ThroughputCPUSum, s.ThroughputCPUMax)
			rss = fmt.Sprintf("%.1f/%.1f", s.PeakRSSMaxMB, s.PeakRSSSumMB)
		}
		busy := fmt.Sprintf("%s/%s", busyPct(m.LatencyCPU), busyPct(m.ThroughputCPU))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", m.Mode, p50, p99, rps, errs, tput, np, cpuL, cpuT, rss, busy)
	}
	tw.Flush()
	noisy := false
	for _, m := range r.Modes {
		noisy = noisy || (m.LatencyCPU != nil && m.LatencyCPU.Noisy) || (m.ThroughputCPU != nil && m.ThroughputCPU.Noisy)
		if m.Error != "" {
			fmt.Fprintf(w, "%s: ERROR: %s\n", m.Mode, oneline.Fold(m.Error, 300))
		}
		if t := m.Throughput; t != nil && !t.Acked {
			fmt.Fprintf(w, "* %s: the sink did not confirm the byte count (%s); rate from bytes written\n", m.Mode, t.AckError)
		}
	}
	if noisy {
		fmt.Fprintln(w, "! after machine busy: a noisy phase, where other processes used at least 10 % of the cores' time")
	}
	fmt.Fprintln(w)
	for _, m := range r.Modes {
		for _, p := range m.Proxies {
			fmt.Fprintf(w, "  %-8s %-22s cpu %.2fs latency, %.2fs throughput; peak RSS %.1f MB", m.Mode, p.Pod+"/"+p.Process,
				p.LatencyCPUSeconds, p.ThroughputCPUSeconds, p.PeakRSSMB)
			if p.Restarts > 0 {
				fmt.Fprintf(w, "; %d restarts", p.Restarts)
			}
			for _, n := range p.Notes {
				fmt.Fprintf(w, "; %s", n)
			}
			fmt.Fprintln(w)
		}
		for _, ph := range []struct {
			name string
			p    *PhaseCPU
		}{{"latency", m.LatencyCPU}, {"throughput", m.ThroughputCPU}} {
			if ph.p != nil && ph.p.MachineSeconds > 0 {
				noisy := ""
				if ph.p.Noisy {
					noisy = " NOISY: other work competed for the CPU"
				}
				fmt.Fprintf(w, "  %-8s %s phase: machine %.0f%% busy = %.2f CPU s: bench processes %.2f s, irq+softirq %.2f s, other processes at least %.2f s%s\n",
					m.Mode, ph.name, ph.p.MachineBusy*100, ph.p.MachineSeconds, ph.p.ClusterSeconds, ph.p.IRQSeconds, ph.p.OtherAtLeast, noisy)
			}
		}
		if l := m.Latency; l != nil && (l.Errors > 0 || l.WarmupErrors > 0) {
			fmt.Fprintf(w, "  %-8s errors: %d in the window %v, %d during the warm-up\n", m.Mode, l.Errors, l.ErrorClasses, l.WarmupErrors)
		}
	}
	fmt.Fprintln(w, "\ngoals (notes, not failures):")
	for _, g := range r.Goals {
		verdict := "n/a "
		if g.Pass != nil {
			verdict = map[bool]string{true: "PASS", false: "FAIL"}[*g.Pass]
		}
		detail := g.Measured
		if detail == "" {
			detail = g.Note
		}
		fmt.Fprintf(w, "  %s %s %s: %s\n", verdict, g.Name, g.Target, detail)
	}
}

func busyPct(p *PhaseCPU) string {
	if p == nil {
		return "-"
	}
	if p.Noisy {
		return fmt.Sprintf("%.0f%%!", p.MachineBusy*100)
	}
	return fmt.Sprintf("%.0f%%", p.MachineBusy*100)
}
