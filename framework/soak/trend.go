package soak

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"
)

// Sample is one measurement of one data plane process: a line of
// soak.jsonl with kind "process".
type Sample struct {
	Kind    string    `json:"kind"` // "process"
	T       time.Time `json:"t"`
	Elapsed float64   `json:"elapsed_s"` // seconds since the load started
	Process string    `json:"process"`   // its pod: ztunnel-n1, controlplane, waypoint-0
	Role    string    `json:"role"`      // node-proxy, controlplane, waypoint
	Node    string    `json:"node"`
	PID     int       `json:"pid"` // 0: not running at that instant
	// Restarts counts how often this pod's process was replaced since the
	// soak began: supervisor restarts after a crash plus graceful
	// hand-overs. A new value starts a new series.
	Restarts   int    `json:"restarts"`
	FDs        int    `json:"fds"`
	Goroutines int    `json:"goroutines"` // -1: /metrics did not answer
	RSSBytes   int64  `json:"rss_bytes"`
	Threads    int    `json:"threads"`
	Error      string `json:"error,omitempty"` // the process could not be read; the sample has no values
}

func (s Sample) valid() bool { return s.Error == "" && s.PID > 0 }

// Rule is the flat-trend rule. For every process (pod and PID) with samples
// in both windows, the median of each metric in the end window may exceed
// its median in the base window by at most max(Abs, Frac × base median).
// Medians make the rule blind to the spikes a fault causes while it
// happens (a fault lands in one sample in six at the defaults); a leak grows
// with time or with faults survived, and shows in the difference.
type Rule struct {
	// Windows, as elapsed time since the load started.
	BaseFrom time.Duration `json:"-"`
	BaseTo   time.Duration `json:"-"`
	EndFrom  time.Duration `json:"-"`
	EndTo    time.Duration `json:"-"`

	FDsAbs         float64 `json:"fds_abs"`
	FDsFrac        float64 `json:"fds_frac"`
	GoroutinesAbs  float64 `json:"goroutines_abs"`
	GoroutinesFrac float64 `json:"goroutines_frac"`
	RSSAbs         float64 `json:"rss_abs_bytes"`
	RSSFrac        float64 `json:"rss_frac"`
}

// MarshalJSON writes the windows in seconds, as elapsed_s in samples.
func (r Rule) MarshalJSON() ([]byte, error) {
	type plain Rule
	return json.Marshal(struct {
		BaseWindow [2]float64 `json:"base_window_s"`
		EndWindow  [2]float64 `json:"end_window_s"`
		plain
	}{[2]float64{r.BaseFrom.Seconds(), r.BaseTo.Seconds()}, [2]float64{r.EndFrom.Seconds(), r.EndTo.Seconds()}, plain(r)})
}

// DefaultRule places the windows for a soak of duration d sampled every
// sample: the base window starts after a warm-up of min(2 min, d/10) (caches,
// pools and the heap reach their working size; the first certificate
// renewal of a short TTL is not in it), both windows last d/10, at least
// two samples and at most 3 minutes, and the end window is the end of the
// soak. For 30 minutes: minutes 2–5 against minutes 27–30.
func DefaultRule(d, sample time.Duration) Rule {
	warm := min(2*time.Minute, d/10)
	win := min(max(d/10, 2*sample), 3*time.Minute)
	return Rule{
		BaseFrom: warm, BaseTo: warm + win, EndFrom: d - win, EndTo: d,
		FDsAbs: 16, FDsFrac: 0.25,
		GoroutinesAbs: 20, GoroutinesFrac: 0.25,
		RSSAbs: 16 << 20, RSSFrac: 0.30,
	}
}

// Metric is one metric of one checked process.
type Metric struct {
	Name   string  `json:"metric"` // fds, goroutines, rss_bytes
	Start  float64 `json:"start"`  // median in the base window
	End    float64 `json:"end"`    // median in the end window
	Growth float64 `json:"growth"`
	Limit  float64 `json:"limit"`
	// SlopePerHour is the least-squares slope over the process's samples
	// from the base window on, per hour. Informational: the verdict uses
	// the medians.
	SlopePerHour float64 `json:"slope_per_hour"`
	Leak         bool    `json:"leak"`
	Skipped      string  `json:"skipped,omitempty"` // why it was not judged
}

// Check is the rule applied to one process that lived through both windows.
type Check struct {
	Process     string   `json:"process"`
	Role        string   `json:"role"`
	PID         int      `json:"pid"`
	Restarts    int      `json:"restarts"`
	BaseSamples int      `json:"base_samples"`
	EndSamples  int      `json:"end_samples"`
	Metrics     []Metric `json:"metrics"`
	Leak        bool     `json:"leak"`
}

// Values are one sample's figures.
type Values struct {
	FDs        int   `json:"fds"`
	Goroutines int   `json:"goroutines"`
	RSSBytes   int64 `json:"rss_bytes"`
}

// Series is one process's life as sampled: its first and last sample.
type Series struct {
	Process  string  `json:"process"`
	Role     string  `json:"role"`
	PID      int     `json:"pid"`
	Restarts int     `json:"restarts"`
	From     float64 `json:"from_s"`
	To       float64 `json:"to_s"`
	Samples  int     `json:"samples"`
	First    Values  `json:"first"`
	Last     Values  `json:"last"`
}

// Verdicts.
const (
	VerdictFlat         = "flat"
	VerdictLeak         = "leak"
	VerdictInconclusive = "inconclusive"
)

// Analysis is the rule applied to a soak's samples.
type Analysis struct {
	Rule    Rule     `json:"rule"`
	Verdict string   `json:"verdict"`
	Reason  string   `json:"reason"`
	Leaks   []string `json:"leaks,omitempty"` // one line per leaking process and metric
	Checks  []Check  `json:"checks"`
	Series  []Series `json:"series"`
}

type seriesKey struct {
	process string
	pid     int
}

// Analyze applies rule to samples. Samples with an error or no PID are
// ignored; a restarted process (new PID) is a new series, so the drop in
// descriptors and memory at a restart is never mistaken for a trend, nor the
// growth of a young process for a leak of the old one.
func Analyze(samples []Sample, rule Rule) Analysis {
	a := Analysis{Rule: rule, Checks: []Check{}, Series: []Series{}}
	groups := map[seriesKey][]Sample{}
	var keys []seriesKey
	for _, s := range samples {
		if !s.valid() {
			continue
		}
		k := seriesKey{s.Process, s.PID}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], s)
	}
	sort.SliceStable(keys, func(i, j int) bool {
		if keys[i].process != keys[j].process {
			return keys[i].process < keys[j].process
		}
		return groups[keys[i]][0].Elapsed < groups[keys[j]][0].Elapsed
	})
	in := func(s Sample, from, to time.Duration) bool {
		return s.Elapsed >= from.Seconds() && s.Elapsed <= to.Seconds()
	}
	for _, k := range keys {
		ss := groups[k]
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].Elapsed < ss[j].Elapsed })
		first, last := ss[0], ss[len(ss)-1]
		a.Series = append(a.Series, Series{Process: k.process, Role: first.Role, PID: k.pid, Restarts: last.Restarts,
			From: first.Elapsed, To: last.Elapsed, Samples: len(ss), First: values(first), Last: values(last)})
		if rule.BaseTo >= rule.EndFrom {
			continue
		}
		var base, end, after []Sample
		for _, s := range ss {
			if in(s, rule.BaseFrom, rule.BaseTo) {
				base = append(base, s)
			}
			if in(s, rule.EndFrom, rule.EndTo) {
				end = append(end, s)
			}
			if s.Elapsed >= rule.BaseFrom.Seconds() {
				after = append(after, s)
			}
		}
		if len(base) == 0 || len(end) == 0 {
			continue
		}
		c := Check{Process: k.process, Role: first.Role, PID: k.pid, Restarts: last.Restarts,
			BaseSamples: len(base), EndSamples: len(end)}
		for _, m := range []struct {
			name      string
			get       func(Sample) (float64, bool)
			abs, frac float64
		}{
			{"fds", func(s Sample) (float64, bool) { return float64(s.FDs), true }, rule.FDsAbs, rule.FDsFrac},
			{"goroutines", func(s Sample) (float64, bool) { return float64(s.Goroutines), s.Goroutines >= 0 }, rule.GoroutinesAbs, rule.GoroutinesFrac},
			{"rss_bytes", func(s Sample) (float64, bool) { return float64(s.RSSBytes), true }, rule.RSSAbs, rule.RSSFrac},
		} {
			b, e := pick(base, m.get), pick(end, m.get)
			met := Metric{Name: m.name}
			if len(b) == 0 || len(e) == 0 {
				met.Skipped = "no values in one of the windows"
				c.Metrics = append(c.Metrics, met)
				continue
			}
			met.Start, met.End = median(b), median(e)
			met.Growth = met.End - met.Start
			met.Limit = math.Max(m.abs, m.frac*met.Start)
			met.SlopePerHour = slopePerHour(after, m.get)
			met.Leak = met.Growth > met.Limit
			if met.Leak {
				c.Leak = true
				a.Leaks = append(a.Leaks, fmt.Sprintf("%s (pid %d): %s %s -> %s (+%s, limit +%s)", k.process, k.pid, m.name,
					fmtMetric(m.name, met.Start), fmtMetric(m.name, met.End), fmtMetric(m.name, met.Growth), fmtMetric(m.name, met.Limit)))
			}
			c.Metrics = append(c.Metrics, met)
		}
		a.Checks = append(a.Checks, c)
	}
	switch {
	case rule.BaseTo >= rule.EndFrom:
		a.Verdict = VerdictInconclusive
		a.Reason = fmt.Sprintf("too short: the base window (%s–%s) reaches the end window (%s–%s)", rule.BaseFrom, rule.BaseTo, rule.EndFrom, rule.EndTo)
	case len(a.Checks) == 0:
		a.Verdict = VerdictInconclusive
		a.Reason = "no process has samples in both the base and the end window"
	case len(a.Leaks) > 0:
		a.Verdict = VerdictLeak
		a.Reason = fmt.Sprintf("%d of %d long-lived processes grew beyond the limit", countLeaks(a.Checks), len(a.Checks))
	default:
		a.Verdict = VerdictFlat
		a.Reason = fmt.Sprintf("%d long-lived processes, every metric within its limit", len(a.Checks))
	}
	return a
}

func countLeaks(cs []Check) int {
	n := 0
	for _, c := range cs {
		if c.Leak {
			n++
		}
	}
	return n
}

func values(s Sample) Values {
	return Values{FDs: s.FDs, Goroutines: s.Goroutines, RSSBytes: s.RSSBytes}
}

func pick(ss []Sample, get func(Sample) (float64, bool)) []float64 {
	var out []float64
	for _, s := range ss {
		if v, ok := get(s); ok {
			out = append(out, v)
		}
	}
	return out
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// slopePerHour is the least-squares slope of the metric against elapsed
// time, per hour (0 with fewer than two distinct instants).
func slopePerHour(ss []Sample, get func(Sample) (float64, bool)) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, s := range ss {
		v, ok := get(s)
		if !ok {
			continue
		}
		x := s.Elapsed / 3600
		n++
		sx += x
		sy += v
		sxx += x * x
		sxy += x * v
	}
	den := n*sxx - sx*sx
	if n < 2 || den == 0 {
		return 0
	}
	return math.Round((n*sxy-sx*sy)/den*100) / 100
}

func fmtMetric(name string, v float64) string {
	if name == "rss_bytes" {
		return fmt.Sprintf("%.1fMiB", v/(1<<20))
	}
	return fmt.Sprintf("%.0f", v)
}
