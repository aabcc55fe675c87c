package measure

import (
	"cmp"
	"math"
	"slices"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// Gap detection thresholds. Five expected intervals tolerate a client that
// stalls briefly (GC, a slow dial on one thread); three buckets keep a gap
// from being shorter than the timeline can show. The edges of the window
// allow a full second because agents start and stop on their own clocks.
const (
	gapIntervals = 5
	gapBuckets   = 3
	edgeGap      = time.Second
)

// classOrder is the tie-break order for the dominant class. Slow and missing
// come last: when the flow both failed and answered late (or went silent)
// equally, the failures are the more informative description.
var classOrder = append(slices.Clone(events.Classes), ClassSlow, ClassMissing)

// Indexes of measurement's own labels in classOrder.
var (
	slowIndex    = slices.Index(classOrder, ClassSlow)
	missingIndex = slices.Index(classOrder, ClassMissing)
)

func classIndex(c events.Class) int {
	for i, k := range classOrder {
		if k == c {
			return i
		}
	}
	// Unknown classes come from hand-built events only (events.Read rejects
	// them); counting them as other keeps the totals right.
	return slices.Index(classOrder, events.ClassOther)
}

// span is an outage under construction, in Unix ns, with per-class counts
// in a fixed array so merging stays allocation-free.
type span struct {
	start, end int64
	counts     [9]int  // indexed like classOrder
	slow       []int64 // latencies of the slow requests, ns
	lastFailed int64   // start of the last failed request, 0 if none
}

// failures counts failed and missing requests: every count but the slow.
func (s *span) failures() int {
	n := 0
	for i, c := range s.counts {
		if i != slowIndex {
			n += c
		}
	}
	return n
}

// gapThreshold is the longest silence between request starts that is still
// just scheduling jitter.
func gapThreshold(qps float64, bucket int64) int64 {
	return max(int64(gapIntervals*float64(time.Second)/qps), gapBuckets*bucket)
}

// outages finds the outage intervals of sorted in-window requests. slow
// says which successful requests were late; nil counts none.
func outages(reqs []events.Event, ws, we int64, qps float64, bucket int64, slow func(events.Event) bool) []OutageInterval {
	spans := failureRuns(reqs, we, qps, slow)
	if qps > 0 {
		spans = append(spans, missingGaps(reqs, ws, we, qps, bucket)...)
	}
	return merge(spans)
}

// failureRuns returns one span per maximal run of failed or late requests.
// A run ends where the first timely success after it starts: that is when
// the flow was next seen working.
func failureRuns(reqs []events.Event, we int64, qps float64, slow func(events.Event) bool) []span {
	bad := func(e events.Event) bool { return !e.OK() || (slow != nil && slow(e)) }
	var spans []span
	for i := 0; i < len(reqs); {
		if !bad(reqs[i]) {
			i++
			continue
		}
		sp := span{start: reqs[i].Start}
		j := i
		for ; j < len(reqs) && bad(reqs[j]); j++ {
			if reqs[j].OK() {
				sp.counts[slowIndex]++
				sp.slow = append(sp.slow, reqs[j].Latency)
				continue
			}
			sp.counts[classIndex(reqs[j].Class)]++
			sp.lastFailed = max(sp.lastFailed, reqs[j].Start)
		}
		if j < len(reqs) {
			sp.end = reqs[j].Start
			if slow != nil {
				sp.end = max(sp.end, min(answeredBack(reqs, i, j, bad), we))
			}
		} else {
			// Nothing followed, so the flow was down at least until the
			// next request would have been sent.
			last := reqs[j-1]
			step := last.Latency
			if qps > 0 {
				step = int64(float64(time.Second) / qps)
			}
			sp.end = min(last.Start+step, we)
		}
		spans = append(spans, sp)
		i = j
	}
	return spans
}

// answeredBack is when the run reqs[i:j] of bad requests ended as seen from
// the answers. A flow whose requests all wait on one stalled connection (a
// node proxy's pooled tunnel) gets every answer at once when the connection
// moves again, so the last requests sent before that look timely by latency
// alone and the outage would end up to one stall threshold early: it lasted
// until the run's last answer. A good request answered well before that
// (in less than half the time that was left until it) went over a
// connection that worked, and shows the flow working when it was sent: then
// the run ends there, at the latest at the first good request, as without
// the answers.
func answeredBack(reqs []events.Event, i, j int, bad func(events.Event) bool) int64 {
	last := int64(0)
	for k := i; k < j; k++ {
		last = max(last, reqs[k].Start+reqs[k].Latency)
	}
	// Only requests sent before the last answer can show the flow working
	// before it.
	for k := j; k < len(reqs) && reqs[k].Start < last; k++ {
		if !bad(reqs[k]) && reqs[k].Start+2*reqs[k].Latency < last {
			return reqs[k].Start
		}
	}
	return last
}

// missingGaps returns a span for each silence in the request starts that is
// too long to be jitter, including silence at either edge of the window.
func missingGaps(reqs []events.Event, ws, we int64, qps float64, bucket int64) []span {
	inner := gapThreshold(qps, bucket)
	edge := max(inner, int64(edgeGap))
	var spans []span
	add := func(from, to int64) {
		sp := span{start: from, end: to}
		sp.counts[missingIndex] = int(math.Round(time.Duration(to-from).Seconds() * qps))
		spans = append(spans, sp)
	}
	prev, limit := ws, edge
	for _, r := range reqs {
		if r.Start-prev > limit {
			add(prev, r.Start)
		}
		prev, limit = r.Start, inner
	}
	if we-prev > edge {
		add(prev, we)
	}
	return spans
}

// merge joins spans that overlap or touch. Touching counts because a failure
// run that ends where silence begins (or the other way round) is a single
// stretch of the flow not working.
func merge(spans []span) []OutageInterval {
	slices.SortFunc(spans, func(a, b span) int {
		return cmp.Or(cmp.Compare(a.start, b.start), cmp.Compare(a.end, b.end))
	})
	var merged []span
	for _, sp := range spans {
		if n := len(merged); n > 0 && sp.start <= merged[n-1].end {
			cur := &merged[n-1]
			cur.end = max(cur.end, sp.end)
			for i, c := range sp.counts {
				cur.counts[i] += c
			}
			cur.slow = append(cur.slow, sp.slow...)
			cur.lastFailed = max(cur.lastFailed, sp.lastFailed)
			continue
		}
		merged = append(merged, sp)
	}
	out := make([]OutageInterval, 0, len(merged))
	for _, sp := range merged {
		o := OutageInterval{
			Start:    ts(sp.start),
			End:      ts(sp.end),
			Seconds:  time.Duration(sp.end - sp.start).Seconds(),
			Failures: sp.failures(),
			Missing:  sp.counts[missingIndex],
			Slow:     sp.counts[slowIndex],
			ByClass:  map[events.Class]int{},
		}
		o.Failed = o.Failures - o.Missing
		if sp.lastFailed != 0 {
			lf := ts(sp.lastFailed)
			o.LastFailed = &lf
		}
		if len(sp.slow) > 0 {
			ls := summarizeLatency(sp.slow)
			o.SlowLatency = &ls
		}
		best := -1
		for i, c := range sp.counts {
			if c == 0 {
				continue
			}
			o.ByClass[classOrder[i]] = c
			if best < 0 || c > sp.counts[best] {
				best = i
			}
		}
		if best >= 0 {
			o.Class = classOrder[best]
		}
		out = append(out, o)
	}
	return out
}
