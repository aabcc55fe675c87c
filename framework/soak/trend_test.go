package soak

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// series makes samples of one process every 10 s over [from, to) seconds,
// with fds, goroutines and RSS given by f(elapsed).
func series(process string, pid, restarts int, from, to float64, f func(t float64) (int, int, int64)) []Sample {
	var out []Sample
	for t := from; t < to; t += 10 {
		fd, g, rss := f(t)
		out = append(out, Sample{Kind: "process", Elapsed: t, Process: process, Role: RoleNodeProxy, PID: pid,
			Restarts: restarts, FDs: fd, Goroutines: g, RSSBytes: rss})
	}
	return out
}

const mib = 1 << 20

// noisy is a flat process with the jitter a proxy under load shows, and a
// spike every sixth sample (a fault hits one sample in six at the defaults).
func noisy(seed uint64) func(t float64) (int, int, int64) {
	r := rand.New(rand.NewPCG(seed, 1))
	n := 0
	return func(t float64) (int, int, int64) {
		n++
		fd, g, rss := 70+r.IntN(8), 160+r.IntN(15), int64(30*mib+r.IntN(6*mib))
		if n%6 == 0 {
			fd, g, rss = fd*2, g*2, rss+20*mib
		}
		return fd, g, rss
	}
}

var rule30 = DefaultRule(30*time.Minute, 10*time.Second)

func TestDefaultRuleWindows(t *testing.T) {
	r := rule30
	if r.BaseFrom != 2*time.Minute || r.BaseTo != 5*time.Minute || r.EndFrom != 27*time.Minute || r.EndTo != 30*time.Minute {
		t.Fatalf("30m windows: base %s–%s end %s–%s, want 2m–5m and 27m–30m", r.BaseFrom, r.BaseTo, r.EndFrom, r.EndTo)
	}
	short := DefaultRule(40*time.Second, 3*time.Second)
	if short.BaseTo >= short.EndFrom {
		t.Fatalf("40s windows overlap: base %s–%s end %s–%s", short.BaseFrom, short.BaseTo, short.EndFrom, short.EndTo)
	}
}

func TestFlatPasses(t *testing.T) {
	s := series("ztunnel-n1", 10, 0, 0, 1800, noisy(1))
	s = append(s, series("waypoint-0", 11, 0, 0, 1800, noisy(2))...)
	a := Analyze(s, rule30)
	if a.Verdict != VerdictFlat || len(a.Checks) != 2 || len(a.Leaks) != 0 {
		t.Fatalf("verdict %s (%s), %d checks, leaks %v; want flat with 2 checks", a.Verdict, a.Reason, len(a.Checks), a.Leaks)
	}
}

func TestLeaksFail(t *testing.T) {
	for _, tc := range []struct {
		metric string
		f      func(t float64) (int, int, int64)
	}{
		// One descriptor a minute: 25 more between the windows' middles.
		{"fds", func(t float64) (int, int, int64) { return 70 + int(t/60), 160, 30 * mib }},
		// Two goroutines a fault (one a minute).
		{"goroutines", func(t float64) (int, int, int64) { return 70, 160 + 2*int(t/60), 30 * mib }},
		// 1 MiB a minute.
		{"rss_bytes", func(t float64) (int, int, int64) { return 70, 160, 30*mib + int64(t/60)*mib }},
	} {
		t.Run(tc.metric, func(t *testing.T) {
			s := series("ztunnel-n1", 10, 0, 0, 1800, tc.f)
			s = append(s, series("waypoint-0", 11, 0, 0, 1800, noisy(3))...)
			a := Analyze(s, rule30)
			if a.Verdict != VerdictLeak || len(a.Leaks) != 1 {
				t.Fatalf("verdict %s (%s), leaks %v; want one leak", a.Verdict, a.Reason, a.Leaks)
			}
			if l := a.Leaks[0]; !strings.HasPrefix(l, "ztunnel-n1 (pid 10): "+tc.metric+" ") {
				t.Fatalf("leak %q does not name the process and %s", l, tc.metric)
			}
		})
	}
}

// A process restarted by a fault is a new series: its drop at the restart
// and its growth back to the working level are not a trend, and the leak of
// a process that did not live through both windows is not judged.
func TestRestartedProcesses(t *testing.T) {
	high := func(float64) (int, int, int64) { return 120, 300, 60 * mib }
	// Young process: starts low, grows to the working level within a
	// minute, then flat.
	young := func(start float64) func(float64) (int, int, int64) {
		return func(t float64) (int, int, int64) {
			k := min((t-start)/60, 1)
			return 20 + int(50*k), 30 + int(130*k), int64(15*mib + k*15*mib)
		}
	}
	s := series("ztunnel-n1", 10, 0, 0, 1800, noisy(4)) // long-lived, flat
	// ztunnel-n2 restarted three times: none of its series spans both
	// windows, and each restarts from low values.
	s = append(s, series("ztunnel-n2", 20, 0, 0, 400, high)...)
	s = append(s, series("ztunnel-n2", 21, 1, 400, 900, young(400))...)
	s = append(s, series("ztunnel-n2", 22, 2, 900, 1500, young(900))...)
	s = append(s, series("ztunnel-n2", 23, 3, 1500, 1800, young(1500))...)
	// A down sample between two lives is ignored.
	s = append(s, Sample{Kind: "process", Process: "ztunnel-n2", Elapsed: 1505, Error: "no process (pid 0)"})
	a := Analyze(s, rule30)
	if a.Verdict != VerdictFlat {
		t.Fatalf("verdict %s (%s), leaks %v; want flat", a.Verdict, a.Reason, a.Leaks)
	}
	if len(a.Checks) != 1 || a.Checks[0].Process != "ztunnel-n1" {
		t.Fatalf("checks %+v; want only ztunnel-n1 (the only process in both windows)", a.Checks)
	}
	n2 := 0
	for _, sr := range a.Series {
		if sr.Process == "ztunnel-n2" {
			n2++
		}
	}
	if n2 != 4 {
		t.Fatalf("%d ztunnel-n2 series, want 4 (one per PID)", n2)
	}

	// A restarted process that lives through both windows is judged too:
	// its own growth is a leak whatever the restart count.
	s = series("ztunnel-n1", 10, 0, 0, 1800, noisy(5))
	s = append(s, series("ztunnel-n2", 20, 0, 0, 60, high)...)
	s = append(s, series("ztunnel-n2", 21, 1, 60, 1800, func(t float64) (int, int, int64) { return 50 + int(t/30), 100, 30 * mib })...)
	a = Analyze(s, rule30)
	if a.Verdict != VerdictLeak || len(a.Leaks) != 1 || !strings.HasPrefix(a.Leaks[0], "ztunnel-n2 (pid 21): fds") {
		t.Fatalf("verdict %s, leaks %v; want the fds leak of ztunnel-n2 pid 21", a.Verdict, a.Leaks)
	}
}

func TestInconclusive(t *testing.T) {
	// Nothing lives through both windows.
	s := series("ztunnel-n1", 10, 0, 0, 600, noisy(6))
	s = append(s, series("ztunnel-n1", 11, 1, 600, 1800, noisy(7))...)
	if a := Analyze(s, rule30); a.Verdict != VerdictInconclusive {
		t.Fatalf("verdict %s (%s); want inconclusive", a.Verdict, a.Reason)
	}
	// Windows that overlap.
	r := rule30
	r.EndFrom = r.BaseFrom
	if a := Analyze(series("ztunnel-n1", 10, 0, 0, 1800, noisy(8)), r); a.Verdict != VerdictInconclusive {
		t.Fatalf("verdict %s (%s); want inconclusive", a.Verdict, a.Reason)
	}
}

// A process whose /metrics never answered is judged on fds and RSS alone.
func TestMissingGoroutines(t *testing.T) {
	s := series("controlplane", 9, 0, 0, 1800, func(float64) (int, int, int64) { return 16, -1, 20 * mib })
	a := Analyze(s, rule30)
	if a.Verdict != VerdictFlat || len(a.Checks) != 1 {
		t.Fatalf("verdict %s (%s); want flat", a.Verdict, a.Reason)
	}
	for _, m := range a.Checks[0].Metrics {
		if (m.Name == "goroutines") != (m.Skipped != "") {
			t.Fatalf("metric %+v: only goroutines should be skipped", m)
		}
	}
}

func TestParseGoroutines(t *testing.T) {
	for in, want := range map[string]int{
		"# TYPE go_goroutines gauge\ngo_goroutines 42\n":                    42,
		"go_goroutines_total 1\ngo_goroutines{node=\"node-1\"} 7 1700000\n": 7,
		"x 1\ngo_goroutines 1.3e+02\n":                                      130,
	} {
		got, err := ParseGoroutines(strings.NewReader(in))
		if err != nil || got != want {
			t.Errorf("ParseGoroutines(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseGoroutines(strings.NewReader("go_goroutines_total 3\n")); err == nil {
		t.Error("no go_goroutines: want an error")
	}
}
