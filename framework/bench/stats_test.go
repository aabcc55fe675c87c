package bench

import (
	"os"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestPercentileNearestRank(t *testing.T) {
	vals := []int64{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	cases := []struct {
		p    float64
		want int64
	}{{0, 10}, {1, 10}, {10, 10}, {11, 20}, {50, 50}, {51, 60}, {90, 90}, {99, 100}, {99.9, 100}, {100, 100}}
	for _, c := range cases {
		if got := Percentile(vals, c.p); got != c.want {
			t.Errorf("p%g = %d, want %d", c.p, got, c.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %d, want 0", got)
	}
	if got := Percentile([]int64{7}, 99); got != 7 {
		t.Errorf("p99 of one value = %d, want 7", got)
	}
	// 1000 values 1..1000: p99 is the 990th, p99.9 the 999th.
	var many []int64
	for i := int64(1); i <= 1000; i++ {
		many = append(many, i)
	}
	if Percentile(many, 99) != 990 || Percentile(many, 99.9) != 999 || Percentile(many, 50) != 500 {
		t.Errorf("p50/p99/p99.9 of 1..1000 = %d/%d/%d, want 500/990/999",
			Percentile(many, 50), Percentile(many, 99), Percentile(many, 99.9))
	}
}

func TestSummarizeLatencyWindow(t *testing.T) {
	start := time.Unix(1000, 0)
	end := start.Add(2 * time.Second)
	at := func(d time.Duration) int64 { return start.Add(d).UnixNano() }
	evs := []events.Event{
		{Start: at(-time.Second), Latency: 9e6, Class: events.ClassOK},           // warm-up: left out
		{Start: at(-time.Millisecond), Class: events.ClassTimeout},               // warm-up error
		{Start: at(0), Latency: 1e6, Class: events.ClassOK},                      // first in the window
		{Start: at(500 * time.Millisecond), Latency: 3e6, Class: events.ClassOK}, //
		{Start: at(time.Second), Latency: 2e6, Class: events.ClassOK},            //
		{Start: at(1500 * time.Millisecond), Class: events.ClassReset},           // error
		{Start: at(1600 * time.Millisecond), Class: events.ClassHTTP, Status: 503},
		{Start: at(time.Second), Kind: events.KindBroken, Class: events.ClassReset}, // not a request
		{Start: at(2 * time.Second), Latency: 50e6, Class: events.ClassOK},          // at end: left out
	}
	l := SummarizeLatency(evs, start, end)
	if l.Requests != 5 || l.OK != 3 || l.Errors != 2 || l.WarmupErrors != 1 {
		t.Errorf("requests/ok/errors/warm-up errors = %d/%d/%d/%d, want 5/3/2/1", l.Requests, l.OK, l.Errors, l.WarmupErrors)
	}
	if l.ErrorClasses[events.ClassReset] != 1 || l.ErrorClasses[events.ClassHTTP] != 1 {
		t.Errorf("error classes %v", l.ErrorClasses)
	}
	if l.AchievedRPS != 2.5 {
		t.Errorf("achieved %v rps, want 2.5", l.AchievedRPS)
	}
	if l.P50Ms != 2 || l.P99Ms != 3 || l.MaxMs != 3 || l.MeanMs != 2 {
		t.Errorf("p50/p99/max/mean = %v/%v/%v/%v ms, want 2/3/3/2", l.P50Ms, l.P99Ms, l.MaxMs, l.MeanMs)
	}
	empty := SummarizeLatency(nil, start, end)
	if empty.Requests != 0 || empty.P50Ms != 0 || empty.AchievedRPS != 0 {
		t.Errorf("empty: %+v", empty)
	}
}

// The real /proc of this process parses.
func TestSampleSelf(t *testing.T) {
	s := sampleProc(pidSelf())
	if s.err != nil {
		t.Skipf("no /proc: %v", s.err)
	}
	if s.hwmKB <= 0 || s.rssKB <= 0 {
		t.Errorf("self: hwm %d kB, rss %d kB", s.hwmKB, s.rssKB)
	}
}

func pidSelf() int { return os.Getpid() }
