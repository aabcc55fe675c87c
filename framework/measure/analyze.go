package measure

import (
	"cmp"
	"math"
	"slices"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// affectedSlack is how long after recovery an outage still counts as the
// fault's: connections torn down by the fault take a moment to be redialled,
// and the flow is only healthy again once they are.
const affectedSlack = 2 * time.Second

// AnalyzeFlow measures one flow. evs may be in any order and may include
// events outside win; evs itself is not modified.
func AnalyzeFlow(meta FlowMeta, evs []events.Event, win Window, fault *Fault, opt Options) FlowSummary {
	bucket := int64(opt.bucket())
	ws, we := win.Start.UnixNano(), win.End.UnixNano()
	reqs, transitions := split(evs, ws, we)

	s := FlowSummary{Flow: meta, ByClass: map[events.Class]int{}}
	for _, e := range reqs {
		s.Requests++
		if e.Class == events.ClassOK {
			s.OK++
		} else {
			s.Failed++
			s.ByClass[e.Class]++
		}
	}
	threshold := stallThreshold(reqs, ws, we, fault, opt)
	s.StallThresholdMs = ms(threshold)
	slowFrom := ws + int64(edgeGap)
	slow := func(e events.Event) bool { return e.OK() && e.Latency >= threshold && e.Start >= slowFrom }
	for _, e := range reqs {
		if slow(e) {
			s.Slow++
		}
	}
	s.Outages = outages(reqs, ws, we, meta.QPS, bucket, slow)
	for _, o := range s.Outages {
		s.DisruptionSeconds += o.Seconds
	}
	for _, o := range outages(reqs, ws, we, meta.QPS, bucket, nil) {
		s.FailedDisruptionSeconds += o.Seconds
	}
	s.Latency = latencyByPhase(reqs, we, fault)
	s.Streams = streams(transitions, ws, we)
	if meta.Profile == "tcp-stream" {
		stalls(&s.Streams, reqs, slow)
	}
	s.Timeline = timeline(reqs, ws, we, bucket, slow)
	s.Affected = affected(s.Outages, we, fault, bucket)
	if meta.QPS > 0 {
		interval := float64(time.Second) / meta.QPS
		s.RequestIntervalMs = math.Round(interval/1e3) / 1e3
		s.CoarserThanBucket = interval > float64(bucket)
		if meta.Profile == "tcp-stream" && opt.Timeout > 0 {
			s.ProbeIntervalMs = math.Round(float64(streamThreads(meta.QPS, opt.Timeout))*interval/1e3) / 1e3
		}
	}
	return s
}

// streamThreads is how many connections a stream flow holds: one per agent
// thread, sized as framework/load sizes them (ceil(qps × timeout) + 2), so
// each connection is probed every threads/qps.
func streamThreads(qps float64, timeout time.Duration) int {
	return int(math.Ceil(qps*timeout.Seconds())) + 2
}

// stallThreshold is the latency above which a successful request is late:
// three times the flow's own p99 before the fault (the whole window without a
// fault), never below the floor and never above 80 % of the request
// timeout. Requests in the window's first second are left out: that is
// where every thread dials its first connection at the same instant.
// docs/verdict.md "Late answers" says why these numbers.
func stallThreshold(reqs []events.Event, ws, we int64, fault *Fault, opt Options) int64 {
	end := we
	if fault != nil {
		end = min(end, fault.Inject.UnixNano()-int64(opt.bucket()))
	}
	var lat []int64
	for _, e := range reqs {
		if e.OK() && e.Start >= ws+int64(edgeGap) && e.Start < end {
			lat = append(lat, e.Latency)
		}
	}
	t := int64(opt.stallFloor())
	if len(lat) > 0 {
		slices.Sort(lat)
		t = max(t, stallP99Factor*nearestRank(lat, 99))
	}
	if opt.Timeout > 0 {
		t = min(t, int64(float64(opt.Timeout)*stallTimeoutShare))
	}
	return t
}

// The stall threshold's rule: three times the p99, capped at 80 % of the
// timeout.
const (
	stallP99Factor    = 3
	stallTimeoutShare = 0.8
)

// split copies the in-window requests and all stream transitions out of evs,
// each sorted by start; sorting copies leaves the caller's slice alone.
// Transitions are not clipped to the window here because a reconnect after
// the window still ends a break inside it.
func split(evs []events.Event, ws, we int64) (reqs, transitions []events.Event) {
	in := make([]events.Event, 0, len(evs))
	for _, e := range evs {
		switch {
		case e.Kind != events.KindRequest:
			transitions = append(transitions, e)
		case e.Start >= ws && e.Start < we:
			in = append(in, e)
		}
	}
	sortEvents(in)
	sortEvents(transitions)
	return in, transitions
}

// sortEvents orders evs in place by start, with tie-breakers that make the
// result (and so every measurement) independent of the order lines were
// written in. Agents write an event when its request completes, from many
// threads, so an event sits about latency × rate places from where it
// belongs: a few places for nearly all of them, and insertion sort puts each
// there in one short move. A move budget linear in len(evs) keeps the
// worst case (a file that really is shuffled) at O(n log n): once spent, the
// rest is left to a general sort.
func sortEvents(evs []events.Event) {
	budget := insertionBudget * len(evs)
	for i := 1; i < len(evs); i++ {
		if compareEvents(evs[i-1], evs[i]) <= 0 {
			continue
		}
		e, j := evs[i], i
		for ; j > 0 && compareEvents(evs[j-1], e) > 0; j-- {
			evs[j] = evs[j-1]
		}
		evs[j] = e
		if budget -= i - j; budget < 0 {
			sortByKey(evs)
			return
		}
	}
}

// sortByKey is the general sort. It sorts small keys and permutes once
// because an event is wide and holds strings: moving it costs far more than
// comparing two starts.
func sortByKey(evs []events.Event) {
	type key struct {
		start int64
		i     int
	}
	keys := make([]key, len(evs))
	for i, e := range evs {
		keys[i] = key{e.Start, i}
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.start != b.start {
			return cmp.Compare(a.start, b.start)
		}
		return compareEvents(evs[a.i], evs[b.i])
	})
	sorted := make([]events.Event, len(evs))
	for i, k := range keys {
		sorted[i] = evs[k.i]
	}
	copy(evs, sorted)
}

// insertionBudget is how many places, on average, an event may be moved by
// insertion before sortEvents gives up on the input being nearly sorted.
const insertionBudget = 8

func compareEvents(a, b events.Event) int {
	if a.Start != b.Start {
		return cmp.Compare(a.Start, b.Start)
	}
	return cmp.Or(
		cmp.Compare(a.Thread, b.Thread),
		cmp.Compare(a.Kind, b.Kind),
		cmp.Compare(a.Class, b.Class),
		cmp.Compare(a.Latency, b.Latency),
		cmp.Compare(a.Status, b.Status),
	)
}

// affected reports whether an outage overlaps the period the fault could be
// blamed for. The period opens one bucket before injection because the
// injection time is taken by the orchestrator, which may be a little late
// relative to when the fault bit.
func affected(outs []OutageInterval, we int64, fault *Fault, bucket int64) bool {
	if fault == nil {
		return len(outs) > 0
	}
	lo := fault.Inject.UnixNano() - bucket
	hi := we
	if !fault.Recover.IsZero() {
		hi = fault.Recover.UnixNano() + int64(affectedSlack)
	}
	for _, o := range outs {
		if o.Start.UnixNano() <= hi && o.End.UnixNano() >= lo {
			return true
		}
	}
	return false
}

// ts converts Unix ns to a time in UTC so reports from hosts in different
// zones print alike.
func ts(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// FaultOutages returns the outages that overlap the period a fault can be
// blamed for (the same period Affected uses).
func FaultOutages(outs []OutageInterval, windowEnd time.Time, fault *Fault, bucket time.Duration) []OutageInterval {
	var in []OutageInterval
	for _, o := range outs {
		if affected([]OutageInterval{o}, windowEnd.UnixNano(), fault, int64(bucket)) {
			in = append(in, o)
		}
	}
	return in
}
