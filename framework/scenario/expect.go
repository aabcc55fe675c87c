package scenario

import (
	"fmt"
	"math"
	"strings"
	"time"

	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// check evaluates the scenario's expectations over the measured flows.
func check(sc Scenario, p plan, tr *results.Trial, sums []measure.FlowSummary, bucket time.Duration) []results.ExpectationResult {
	var out []results.ExpectationResult
	control := results.ExpectationResult{Name: "control flow undisturbed", Pass: true}
	for _, s := range sums {
		if s.Flow.Control && len(s.Outages) > 0 && failuresOf(s) >= minAffectingFailures {
			control.Pass = false
			control.Detail = fmt.Sprintf("%s: %d outage(s), %.3fs", s.Flow.ID, len(s.Outages), s.DisruptionSeconds)
		}
	}
	wantControl := false
	for _, e := range sc.Expect {
		switch e.Name {
		case ExpectNoOutage:
			var bad []string
			for _, s := range sums {
				if len(s.Outages) > 0 {
					bad = append(bad, fmt.Sprintf("%s (%d outages, %.3fs)", s.Flow.ID, len(s.Outages), s.DisruptionSeconds))
				}
			}
			out = append(out, results.ExpectationResult{Name: "no outage on any flow", Pass: len(bad) == 0, Detail: fmtList(bad, 5)})
		case ExpectNodeRadius:
			target := nodeName(p.Target)
			wantControl = true
			out = append(out, radius(sums, target, "every flow to or from "+target+" disrupted",
				func(measure.FlowSummary) bool { return true })...)
		case ExpectPrecision:
			var bad []string
			backlogs, longest := 0, 0.0
			for _, pc := range tr.Precision {
				if !pc.Within {
					bad = append(bad, describePrecision(pc))
				} else if pc.BacklogSeconds != nil {
					backlogs++
					longest = max(longest, *pc.BacklogSeconds)
				}
			}
			// One check per hole and flow in it.
			n, want := len(tr.Precision), len(sc.Fault.Holes)*holeFlowCount(sc, p)
			wantControl = true
			detail := fmt.Sprintf("%d/%d hole checks within; off: %s", n-len(bad), want, fmtList(bad, 5))
			if backlogs > 0 {
				detail += fmt.Sprintf("; %d out past the wire's return with no request sent after it failing (the data plane's backlog, up to %.3fs)", backlogs, longest)
			}
			out = append(out, results.ExpectationResult{
				Name:   fmt.Sprintf("every black hole measured within one bucket (%s)", bucket),
				Pass:   n == want && len(bad) == 0,
				Detail: detail,
			})
			// What a connection backing off after a hole does to its flow
			// (late ends, late answers flushed once it moves again) is the
			// hole's, within the back-off window precision found evidence
			// for.
			type flowHole struct {
				flow string
				hole int64
			}
			backoff := map[flowHole]time.Time{}
			for _, pc := range tr.Precision {
				if pc.BackoffUntil != nil {
					backoff[flowHole{pc.Flow, pc.HoleStart.UnixNano()}] = *pc.BackoffUntil
				}
			}
			lateButExplained := func(o measure.OutageInterval, flow measure.FlowMeta) bool {
				for _, f := range tr.Faults {
					until, ok := backoff[flowHole{flow.ID, f.Inject.UnixNano()}]
					if ok && !o.Start.Before(f.Inject.Add(-bucket)) && !o.End.After(until) {
						return true
					}
				}
				return false
			}
			var stray []string
			for _, s := range sums {
				for _, o := range s.Outages {
					if lateButExplained(o, s.Flow) {
						continue
					}
					if !coveredByHole(o, tr.Faults, s.Flow, bucket) {
						stray = append(stray, fmt.Sprintf("%s at %s (%.3fs %s)", s.Flow.ID, o.Start.Format("15:04:05.000"), o.Seconds, o.Class))
					}
				}
			}
			out = append(out, results.ExpectationResult{Name: "no outage outside the holes", Pass: len(stray) == 0, Detail: fmtList(stray, 5)})
		case ExpectProxyRadius:
			target := nodeName(p.Target)
			wantControl = true
			// A new connection per request only fails if one is attempted
			// while the proxy is down; kept-alive and stream connections
			// through it always break.
			out = append(out, radius(sums, target, "kept-alive and stream flows through "+target+"'s proxy disrupted",
				func(s measure.FlowSummary) bool { return s.Flow.Profile != ProfileNewConn })...)
		case ExpectGracefulHandoff:
			wantControl = true
			out = append(out, handoff(sc, tr, sums)...)
		case ExpectFailAtExpiry:
			wantControl = true
			out = append(out, expiry(tr, sums)...)
		case ExpectContained:
			r := results.ExpectationResult{Name: "contained to the faulted node(s)"}
			switch v := tr.Verdict; {
			case v == nil:
				r.Detail = "no verdict (no fault)"
			default:
				r.Pass = v.Value != VerdictClusterWide
				r.Detail = fmt.Sprintf("verdict %s, %d/%d flows affected", v.Value, v.Affected, v.Total)
				if len(v.Beyond) > 0 {
					r.Detail += "; beyond " + strings.Join(v.FaultNodes, ",") + ": " + fmtList(v.Beyond, 5)
				}
			}
			out = append(out, r)
		case ExpectVerdict:
			r := results.ExpectationResult{Name: "verdict " + e.Verdict}
			if v := tr.Verdict; v != nil {
				r.Pass = v.Value == e.Verdict
				r.Detail = fmt.Sprintf("verdict %s, %d/%d flows affected", v.Value, v.Affected, v.Total)
			} else {
				r.Detail = "no verdict (no fault)"
			}
			out = append(out, r)
		case ExpectMaxDisruption:
			var bad []string
			for _, s := range sums {
				if s.DisruptionSeconds > e.Max.Seconds() {
					bad = append(bad, fmt.Sprintf("%s (%.3fs)", s.Flow.ID, s.DisruptionSeconds))
				}
			}
			out = append(out, results.ExpectationResult{Name: fmt.Sprintf("no flow disrupted for more than %s", e.Max), Pass: len(bad) == 0, Detail: fmtList(bad, 5)})
		}
	}
	if wantControl {
		out = append(out, control)
	}
	return out
}

// handoff checks a graceful restart: request flows see no failure at all;
// stream flows through the node break only at the drain deadline.
func handoff(sc Scenario, tr *results.Trial, sums []measure.FlowSummary) []results.ExpectationResult {
	// Every restart of the trial: one, or one per node in a rolling
	// upgrade.
	var recs []results.FaultRecord
	for _, f := range tr.Faults {
		if f.Kind == FaultNodeProxyRestart {
			recs = append(recs, f)
		}
	}
	if len(recs) == 0 || recs[len(recs)-1].Recover == nil {
		return []results.ExpectationResult{{Name: "graceful restart happened", Pass: false, Detail: "no completed restart recorded"}}
	}
	// Streams may break at the first drain deadline, not before it.
	sigterm := recs[0].Inject
	deadline := sigterm.Add(sc.Mesh.Drain)
	// The handoff: from just before the first new proxy started (it is
	// ready ~100 ms after starting, and SIGTERM follows) until the last old
	// one exited.
	from, to := sigterm.Add(-1500*time.Millisecond), recs[len(recs)-1].Recover.Add(time.Second)
	var failed, outside, early, none []string
	requests := 0
	for _, s := range sums {
		if s.Flow.Control {
			continue
		}
		if s.Flow.Profile != ProfileStream {
			requests += s.Requests
			in, out := 0, 0
			for _, o := range s.Outages {
				if o.End.After(from) && o.Start.Before(to) {
					in += o.Failures
				} else {
					out += o.Failures
				}
			}
			if in > 0 {
				failed = append(failed, fmt.Sprintf("%s (%d failed)", s.Flow.ID, in))
			}
			if out > 0 {
				outside = append(outside, fmt.Sprintf("%s (%d failed)", s.Flow.ID, out))
			}
			continue
		}
		if s.Streams.Broken == 0 {
			none = append(none, s.Flow.ID)
		}
		for _, o := range s.Outages {
			if o.Start.Before(deadline.Add(-500 * time.Millisecond)) {
				early = append(early, fmt.Sprintf("%s broke %.2fs after SIGTERM", s.Flow.ID, o.Start.Sub(sigterm).Seconds()))
			}
		}
	}
	detail := fmtList(failed, 5)
	if len(outside) > 0 {
		// Not the handoff's doing, but never hidden.
		detail = strings.TrimPrefix(detail+"; failures outside the handoff: "+fmtList(outside, 5), "; ")
	}
	return []results.ExpectationResult{
		{Name: fmt.Sprintf("no failed request across the handoff (%d requests)", requests), Pass: len(failed) == 0, Detail: detail},
		{Name: fmt.Sprintf("streams survive until the drain deadline (%s)", sc.Mesh.Drain), Pass: len(early) == 0, Detail: fmtList(early, 5)},
		{Name: "streams are closed at the drain deadline", Pass: len(none) == 0, Detail: fmtList(none, 5)},
	}
}

// expiry checks that certificate expiry, not the control plane outage
// itself, is when traffic stops.
func expiry(tr *results.Trial, sums []measure.FlowSummary) []results.ExpectationResult {
	if len(tr.CertExpiries) == 0 {
		return []results.ExpectationResult{{Name: "certificate expiries known", Pass: false, Detail: "no proxy reported its certificates"}}
	}
	expOf := func(pod string) (time.Time, bool) {
		for id, t := range tr.CertExpiries {
			if strings.HasSuffix(id, "/sa/"+pod) {
				return t, true
			}
		}
		return time.Time{}, false
	}
	var early, late []string
	for _, s := range sums {
		if s.Flow.Control {
			continue
		}
		ce, ok1 := expOf(s.Flow.Client)
		se, ok2 := expOf(s.Flow.Server)
		if !ok1 || !ok2 {
			late = append(late, s.Flow.ID+": certificate expiry unknown")
			continue
		}
		exp := ce
		if se.Before(exp) {
			exp = se
		}
		// The first real outage: a lone failed request is not the expiry
		// (the same rule as the verdict's, minAffectingFailures).
		var first time.Time
		for _, o := range s.Outages {
			if o.Failures >= minAffectingFailures {
				first = o.Start
				break
			}
		}
		if first.IsZero() {
			late = append(late, s.Flow.ID+": never failed")
			continue
		}
		// Nothing may fail before the first of the two certificates
		// expires. The latest a new connection may still succeed is the
		// client side's expiry: the client proxy keeps its pooled mTLS
		// connection to the server's proxy, whose certificate was checked
		// at the handshake only (as ztunnel and Envoy do), so a server
		// certificate expiring first need not stop new streams on it.
		if first.Before(exp.Add(-300 * time.Millisecond)) {
			early = append(early, fmt.Sprintf("%s failed %.2fs before expiry", s.Flow.ID, exp.Sub(first).Seconds()))
		} else if s.Flow.Profile == ProfileNewConn && first.After(ce.Add(1500*time.Millisecond)) {
			late = append(late, fmt.Sprintf("%s first failed %.2fs after its client's certificate expired", s.Flow.ID, first.Sub(ce).Seconds()))
		}
	}
	return []results.ExpectationResult{
		{Name: "nothing fails before the certificates expire", Pass: len(early) == 0, Detail: fmtList(early, 5)},
		{Name: "new connections fail from expiry on", Pass: len(late) == 0, Detail: fmtList(late, 5)},
	}
}

// radius checks a fault's blast radius around target: every flow with an end
// there that must break (mustBreak) is affected, and no flow between other
// nodes is disrupted. A lone failed request on another flow is reported but
// does not fail the check, by the same rule as the verdict
// (minAffectingFailures).
func radius(sums []measure.FlowSummary, target, name string, mustBreak func(measure.FlowSummary) bool) []results.ExpectationResult {
	var missed, extra, isolated []string
	for _, s := range sums {
		touches := s.Flow.ClientNode == target || s.Flow.ServerNode == target
		switch {
		case touches && mustBreak(s) && !s.Affected:
			missed = append(missed, s.Flow.ID)
		case !touches && len(s.Outages) > 0:
			if failuresOf(s) < minAffectingFailures {
				isolated = append(isolated, s.Flow.ID)
				continue
			}
			extra = append(extra, fmt.Sprintf("%s (%.3fs)", s.Flow.ID, s.DisruptionSeconds))
		}
	}
	detail := fmtList(extra, 5)
	if len(isolated) > 0 {
		detail = strings.TrimPrefix(detail+"; one isolated failure (tolerated): "+fmtList(isolated, 5), "; ")
	}
	return []results.ExpectationResult{
		{Name: name, Pass: len(missed) == 0, Detail: fmtList(missed, 5)},
		{Name: "no flow between other nodes disrupted", Pass: len(extra) == 0, Detail: detail},
	}
}

// failuresOf counts a flow's disrupted requests over its outages: failed,
// missing and late.
func failuresOf(s measure.FlowSummary) int {
	n := 0
	for _, o := range s.Outages {
		n += o.Failures + o.Slow
	}
	return n
}

func coveredByHole(o measure.OutageInterval, faults []results.FaultRecord, flow measure.FlowMeta, slack time.Duration) bool {
	for _, f := range faults {
		if f.Kind != FaultBlackHole || !inHole(f, flow) || f.Recover == nil {
			continue
		}
		if !o.Start.Before(f.Inject.Add(-slack)) && !o.End.After(f.Recover.Add(slack)) {
			return true
		}
	}
	return false
}

// precision compares every ground-truth black hole with what was measured on
// each flow in it (its flow, or every flow of its client pod): one check per
// hole and flow. The outages overlapping the hole, or reaching within one
// bucket of it, are the measurement: their seconds summed give the total, the
// first one's start and the last one's end give its edges. A check is within
// when the total and both edges are each off by at most one bucket: a total
// alone would pass an outage of the right length in the wrong place.
func precision(faults []results.FaultRecord, sums []measure.FlowSummary, bucket time.Duration) []results.PrecisionCheck {
	var out []results.PrecisionCheck
	for _, f := range faults {
		if f.Kind != FaultBlackHole || f.Recover == nil {
			continue
		}
		truth := f.Recover.Sub(f.Inject)
		for _, s := range sums {
			if !inHole(f, s.Flow) {
				continue
			}
			// Where the flow's connections came back on the wire after the
			// hole closed, the hole's end for the flow lies between the
			// hole's end and the last of them.
			end := *f.Recover
			wire := wireResume(f, s.Flow)
			if wire != nil && wire.last.After(end) {
				end = wire.last
			}
			measured := 0.0
			var first, last, lastFailed time.Time
			for _, o := range s.Outages {
				if !o.Start.Before(end.Add(bucket)) || !o.End.After(f.Inject.Add(-bucket)) {
					continue
				}
				// Requests that started once the path was back (after the
				// hole, and after the pod's connections moved again on the
				// wire) and were all answered, late, were not held up by the
				// hole: the burst of work after it is an event of its own,
				// counted as disruption but not as the hole's measurement.
				if o.Start.After(end) && o.Failures == 0 {
					continue
				}
				measured += o.Seconds
				if first.IsZero() || o.Start.Before(first) {
					first = o.Start
				}
				if o.End.After(last) {
					last = o.End
				}
				if o.LastFailed != nil && o.LastFailed.After(lastFailed) {
					lastFailed = *o.LastFailed
				}
			}
			errS := measured - truth.Seconds()
			pc := results.PrecisionCheck{Flow: s.Flow.ID, Hole: f.Target, HoleStart: f.Inject, TruthSeconds: round3(truth.Seconds()),
				MeasuredSeconds: round3(measured), ErrorSeconds: round3(errS)}
			if wire != nil {
				pc.WireEnd, pc.WireLastEnd = ptr(wire.first), ptr(wire.last)
				if end.After(*f.Recover) {
					// Outages of the flow up to the wire's end are the hole's.
					pc.BackoffUntil = ptr(end.Add(bucket))
					pc.LateEndExplained = fmt.Sprintf("the pod's connections with %s carried new data both ways again %s to %s after the hole (packet tap)",
						s.Flow.Server, ms(max(0, wire.first.Sub(*f.Recover))), ms(end.Sub(*f.Recover)))
					if wire.stuck > 0 {
						pc.LateEndExplained += fmt.Sprintf("; %d still stuck when the tap stopped looking", wire.stuck)
					}
				}
			}
			if !first.IsZero() {
				startErr, endErr := first.Sub(f.Inject), last.Sub(*f.Recover)
				pc.StartErrorSeconds, pc.EndErrorSeconds = ptr(round3(startErr.Seconds())), ptr(round3(endErr.Seconds()))
				pc.Within = math.Abs(errS) <= bucket.Seconds() && startErr.Abs() <= bucket && endErr.Abs() <= bucket
				if wire != nil {
					// The end's distance to [hole end, wire's last end].
					var off time.Duration
					switch {
					case last.Before(*f.Recover):
						off = last.Sub(*f.Recover)
					case last.After(end):
						off = last.Sub(end)
					}
					pc.WireEndErrorSeconds = ptr(round3(off.Seconds()))
					longest := end.Sub(f.Inject).Seconds()
					hole := measured
					if off > bucket && !lastFailed.After(end.Add(bucket)) && !last.After(f.Recover.Add(truth+minRTO+bucket)) {
						// No request sent after the last connection came
						// back failed, yet the flow stayed out: the node
						// proxies working off what the hole held up in
						// their tunnels (every stream queued in it reaches
						// the server at once, in one burst of work on both
						// nodes), answering late, and requests sent into
						// the hole timing out. The flow was out until then,
						// and that is what was measured, but it is the data
						// plane's backlog, not the hole. It is the hole's as
						// far as the back-off window reaches.
						pc.BacklogSeconds = ptr(round3(off.Seconds()))
						pc.BackoffUntil = ptr(last)
						pc.LateEndExplained = fmt.Sprintf("the flow stayed out %s after the pod's connections with %s came back (packet tap), and no request sent after that failed: the data plane working off what the hole held up (late answers, and timeouts of requests sent into the hole)",
							ms(off), s.Flow.Server)
						hole -= off.Seconds()
						off = 0
					}
					pc.Within = startErr.Abs() <= bucket && off.Abs() <= bucket &&
						hole >= truth.Seconds()-bucket.Seconds() && hole <= longest+bucket.Seconds()
				}
			}
			out = append(out, pc)
		}
	}
	return out
}

// wireRange is when, by the packet tap, the first and the last of a flow's
// client pod's connections with its server moved again after a hole, and
// how many were still stuck when the tap stopped looking.
type wireRange struct {
	first, last time.Time
	stuck       int
}

// wireResume is the hole record's wire range for the flow's server, or nil
// if the record says nothing usable about it. Only pod-IP flows: a service
// flow's server is one of several endpoints its connections may go to.
func wireResume(f results.FaultRecord, m measure.FlowMeta) *wireRange {
	if m.Via != "pod" {
		return nil
	}
	for _, w := range f.Wire {
		if w.Peer != m.Server || w.Resumed == nil || w.TapDrops > 0 {
			continue
		}
		r := &wireRange{first: *w.Resumed, last: *w.Resumed, stuck: w.Stuck}
		if w.Last != nil {
			r.last = *w.Last
		}
		return r
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// explainLateEnds looks at every check whose outage ended more than a
// bucket after its hole: if, between the hole's end and the outage's, the
// flow's client or server namespace was retransmitting, or the client's
// node proxy was re-dialling its HBONE pool, or a retransmission timeout
// fired inside the hole, the flow was still waiting on connection state the
// hole left behind (a connection backing off, a pooled tunnel being
// replaced). Both ends count: what was lost in the hole
// may be the client's request or the server's answer, and each side
// retransmits its own (in ambient mode from the node proxy's sockets in
// that pod's namespace). Such a
// check is within if its start is and the overshoot is no longer than the
// hole itself plus one minimum retransmission timeout (Linux doubles the
// timeout from 200 ms, so the first retransmission after the hole comes at
// most that long after it).
func explainLateEnds(pcs []results.PrecisionCheck, faults []results.FaultRecord, sums []measure.FlowSummary, te *trialEvidence, bucket time.Duration) {
	if te == nil {
		return
	}
	client, server, clientNode := map[string]string{}, map[string]string{}, map[string]string{}
	for _, s := range sums {
		client[s.Flow.ID], server[s.Flow.ID], clientNode[s.Flow.ID] = s.Flow.Client, s.Flow.Server, s.Flow.ClientNode
	}
	for i := range pcs {
		pc := &pcs[i]
		var hole *results.FaultRecord
		for j := range faults {
			if faults[j].Kind == FaultBlackHole && faults[j].Inject.Equal(pc.HoleStart) && faults[j].Recover != nil {
				hole = &faults[j]
			}
		}
		if hole == nil {
			continue
		}
		// The back-off window: the hole's length plus one minimum
		// retransmission timeout after it (plus a bucket of placement).
		truth := hole.Recover.Sub(hole.Inject)
		until := hole.Recover.Add(truth + minRTO + bucket)
		ends := []string{client[pc.Flow], server[pc.Flow]}
		ev := te.interval(*hole.Recover, until, ends, []string{clientNode[pc.Flow]})
		if ev == nil {
			continue
		}
		retrans := ev.TCPRetransSegs + ev.TCPLossProbes + ev.TCPSynRetrans
		redials := ev.HBONEConnectionsOpened["outbound"] + ev.ProxyFailures["hbone_retry"]
		// A retransmission timeout that fired inside the hole was lost
		// with it, and TCP doubled the timeout: the next retransmission,
		// the first that can get through, is due after the hole even when
		// no counter moves between the hole's end and the flow's return.
		var backedOff int64
		if in := te.interval(hole.Inject, *hole.Recover, ends, nil); in != nil {
			backedOff = in.TCPTimeouts
		}
		if retrans+redials+backedOff == 0 {
			continue
		}
		if pc.WireEnd != nil {
			// The packet tap placed the hole's end and judged the check;
			// the counters only widen what counts as the hole's after it
			// (a connection's later recovery, which the tap's first
			// both-ways progress does not cover).
			if pc.BackoffUntil == nil || until.After(*pc.BackoffUntil) {
				pc.BackoffUntil = &until
			}
			continue
		}
		pc.BackoffUntil = &until
		if pc.Within || pc.StartErrorSeconds == nil || *pc.EndErrorSeconds <= bucket.Seconds() ||
			math.Abs(*pc.StartErrorSeconds) > bucket.Seconds() {
			continue
		}
		late := time.Duration(*pc.EndErrorSeconds * float64(time.Second))
		pc.LateEndExplained = fmt.Sprintf("%d retransmission timeouts fired inside the hole (lost, then doubled) at %s; in the %s after it: %d segments retransmitted, %d HBONE connections opened and %d retried by the node proxy",
			backedOff, strings.Join(ends, " and "), until.Sub(*hole.Recover).Round(time.Millisecond), retrans,
			ev.HBONEConnectionsOpened["outbound"], ev.ProxyFailures["hbone_retry"])
		pc.Within = !hole.Recover.Add(late).After(until)
	}
}

// minRTO is Linux's minimum TCP retransmission timeout.
const minRTO = 200 * time.Millisecond

// describePrecision says what a precision check found, for an expectation's
// detail.
func describePrecision(pc results.PrecisionCheck) string {
	s := fmt.Sprintf("%s at %s: truth %.3fs measured %.3fs", pc.Flow, pc.HoleStart.Format("15:04:05.000"), pc.TruthSeconds, pc.MeasuredSeconds)
	if pc.StartErrorSeconds == nil {
		return s + " (no outage)"
	}
	return s + fmt.Sprintf(" (start %+.3fs, end %+.3fs)", *pc.StartErrorSeconds, *pc.EndErrorSeconds)
}
