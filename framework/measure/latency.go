package measure

import (
	"math"
	"slices"

	"blastradius.dev/blastradius/framework/events"
)

// latencyByPhase splits successful requests by when they started relative to
// the fault. Start time, not completion, decides the phase so that a request
// stuck behind the fault is charged to the phase that caused it.
func latencyByPhase(reqs []events.Event, we int64, fault *Fault) LatencyByPhase {
	inject, recover := we, we
	if fault != nil {
		inject = fault.Inject.UnixNano()
		if !fault.Recover.IsZero() {
			recover = fault.Recover.UnixNano()
		}
	}
	var before, during, after []int64
	for _, e := range reqs {
		if !e.OK() {
			continue
		}
		switch {
		case fault == nil || e.Start < inject:
			before = append(before, e.Latency)
		case e.Start < recover:
			during = append(during, e.Latency)
		default:
			after = append(after, e.Latency)
		}
	}
	return LatencyByPhase{
		Before: summarizeLatency(before),
		During: summarizeLatency(during),
		After:  summarizeLatency(after),
	}
}

// summarizeLatency sorts ns (in place) and reports nearest-rank percentiles.
// Nearest rank always reports a latency that was actually observed, which
// keeps small samples honest: no interpolated value nobody saw.
func summarizeLatency(ns []int64) LatencySummary {
	if len(ns) == 0 {
		return LatencySummary{}
	}
	slices.Sort(ns)
	return LatencySummary{
		Count: len(ns),
		P50Ms: ms(nearestRank(ns, 50)),
		P90Ms: ms(nearestRank(ns, 90)),
		P99Ms: ms(nearestRank(ns, 99)),
		MaxMs: ms(ns[len(ns)-1]),
	}
}

// nearestRank returns the p-th percentile of sorted, non-empty values: the
// smallest value with at least p% of values at or below it.
func nearestRank(sorted []int64, p float64) int64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }
