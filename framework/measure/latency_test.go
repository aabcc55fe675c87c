package measure

import (
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestNearestRank(t *testing.T) {
	for _, tc := range []struct {
		name string
		ms   []int64
		want LatencySummary
	}{
		{"empty", nil, LatencySummary{}},
		{"one", []int64{7}, LatencySummary{Count: 1, P50Ms: 7, P90Ms: 7, P99Ms: 7, MaxMs: 7}},
		// ranks: p50 ceil(2)=2, p90 ceil(3.6)=4, p99 ceil(3.96)=4.
		{"four unsorted", []int64{4, 1, 3, 2}, LatencySummary{Count: 4, P50Ms: 2, P90Ms: 4, P99Ms: 4, MaxMs: 4}},
		// ranks: p50 ceil(2.5)=3, p90 ceil(4.5)=5.
		{"five", []int64{10, 20, 30, 40, 50}, LatencySummary{Count: 5, P50Ms: 30, P90Ms: 50, P99Ms: 50, MaxMs: 50}},
		{"hundred", seqMs(1, 100), LatencySummary{Count: 100, P50Ms: 50, P90Ms: 90, P99Ms: 99, MaxMs: 100}},
		// ranks: p50 ceil(100.5)=101, p90 ceil(180.9)=181, p99 ceil(198.99)=199.
		{"two hundred one", seqMs(1, 201), LatencySummary{Count: 201, P50Ms: 101, P90Ms: 181, P99Ms: 199, MaxMs: 201}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := make([]int64, len(tc.ms))
			for i, m := range tc.ms {
				vals[i] = m * int64(time.Millisecond)
			}
			if got := summarizeLatency(vals); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func seqMs(from, to int64) []int64 {
	var out []int64
	for i := to; i >= from; i-- { // descending, so the sort matters
		out = append(out, i)
	}
	return out
}

func TestLatencyPhases(t *testing.T) {
	sec := time.Second
	// 100 qps for 10s. Before 4s latency cycles 1..100ms; during [4s, 6s)
	// successes take 20ms and every other request times out (1s, which must
	// not show up); from 6s on successes take 3ms.
	var evs []events.Event
	for i := range 1000 {
		off := time.Duration(i) * 10 * time.Millisecond
		e := events.Event{Start: ns(off), Class: events.ClassOK}
		switch {
		case off < 4*sec:
			e.Latency = int64(time.Duration(i%100+1) * time.Millisecond)
		case off < 6*sec:
			e.Latency = int64(20 * time.Millisecond)
			if i%2 == 1 {
				e.Class, e.Latency = events.ClassTimeout, int64(time.Second)
			}
		default:
			e.Latency = int64(3 * time.Millisecond)
		}
		evs = append(evs, e)
	}
	for _, tc := range []struct {
		name  string
		fault *Fault
		want  LatencyByPhase
	}{
		{
			name:  "inject and recover",
			fault: &Fault{Inject: at(4 * sec), Recover: at(6 * sec)},
			want: LatencyByPhase{
				Before: LatencySummary{Count: 400, P50Ms: 50, P90Ms: 90, P99Ms: 99, MaxMs: 100},
				During: LatencySummary{Count: 100, P50Ms: 20, P90Ms: 20, P99Ms: 20, MaxMs: 20},
				After:  LatencySummary{Count: 400, P50Ms: 3, P90Ms: 3, P99Ms: 3, MaxMs: 3},
			},
		},
		{
			// No recovery: during runs to the end of the window. 100 at
			// 20ms and 400 at 3ms: p50 is 3, p90 (rank 450) is 20.
			name:  "no recovery",
			fault: &Fault{Inject: at(4 * sec)},
			want: LatencyByPhase{
				Before: LatencySummary{Count: 400, P50Ms: 50, P90Ms: 90, P99Ms: 99, MaxMs: 100},
				During: LatencySummary{Count: 500, P50Ms: 3, P90Ms: 20, P99Ms: 20, MaxMs: 20},
			},
		},
		{
			// 900 values: 1..100 four times each, 100 of 20, 400 of 3.
			// Values <= v number 400+4v below 20 and 500+4v from 20 up, so
			// p50 (rank 450) is 13, p90 (rank 810) is 78, p99 (rank 891) is 98.
			name: "no fault",
			want: LatencyByPhase{
				Before: LatencySummary{Count: 900, P50Ms: 13, P90Ms: 78, P99Ms: 98, MaxMs: 100},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := AnalyzeFlow(FlowMeta{QPS: 100}, evs, window(10*sec), tc.fault, Options{})
			if s.Latency != tc.want {
				t.Errorf("got  %+v\nwant %+v", s.Latency, tc.want)
			}
		})
	}
}
