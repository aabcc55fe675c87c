package scenario

import (
	"fmt"
	"math"
	"time"

	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// check evaluates the scenario's expectation over the measured flows.
func check(sc Scenario, p plan, tr *results.Trial, sums []measure.FlowSummary, bucket time.Duration) []results.ExpectationResult {
	var out []results.ExpectationResult
	control := results.ExpectationResult{Name: "control flow undisturbed", Pass: true}
	for _, s := range sums {
		if s.Flow.Control && len(s.Outages) > 0 {
			control.Pass = false
			control.Detail = fmt.Sprintf("%s: %d outage(s), %.3fs", s.Flow.ID, len(s.Outages), s.DisruptionSeconds)
		}
	}
	switch sc.Expect {
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
		var missed, extra []string
		for _, s := range sums {
			touches := s.Flow.ClientNode == target || s.Flow.ServerNode == target
			switch {
			case touches && !s.Affected:
				missed = append(missed, s.Flow.ID)
			case !touches && len(s.Outages) > 0:
				extra = append(extra, fmt.Sprintf("%s (%.3fs)", s.Flow.ID, s.DisruptionSeconds))
			}
		}
		out = append(out,
			results.ExpectationResult{Name: "every flow to or from " + target + " disrupted", Pass: len(missed) == 0, Detail: fmtList(missed, 5)},
			results.ExpectationResult{Name: "no flow between other nodes disrupted", Pass: len(extra) == 0, Detail: fmtList(extra, 5)})
	case ExpectPrecision:
		var bad []string
		for _, pc := range tr.Precision {
			if !pc.Within {
				bad = append(bad, fmt.Sprintf("truth %.3fs measured %.3fs", pc.TruthSeconds, pc.MeasuredSeconds))
			}
		}
		n := len(tr.Precision)
		out = append(out, results.ExpectationResult{
			Name:   fmt.Sprintf("every black hole measured within one bucket (%s)", bucket),
			Pass:   n == len(sc.Fault.Holes) && len(bad) == 0,
			Detail: fmt.Sprintf("%d/%d holes measured; off: %s", n-len(bad), len(sc.Fault.Holes), fmtList(bad, 5)),
		})
		var stray []string
		for _, s := range sums {
			for _, o := range s.Outages {
				if !coveredByHole(o, tr.Faults, s.Flow.ID, bucket) {
					stray = append(stray, fmt.Sprintf("%s at %s (%.3fs %s)", s.Flow.ID, o.Start.Format("15:04:05.000"), o.Seconds, o.Class))
				}
			}
		}
		out = append(out, results.ExpectationResult{Name: "no outage outside the holes", Pass: len(stray) == 0, Detail: fmtList(stray, 5)})
	}
	if sc.Expect != ExpectNoOutage {
		out = append(out, control)
	}
	return out
}

func coveredByHole(o measure.OutageInterval, faults []results.FaultRecord, flow string, slack time.Duration) bool {
	for _, f := range faults {
		if f.Kind != FaultBlackHole || f.Target != flow || f.Recover == nil {
			continue
		}
		if !o.Start.Before(f.Inject.Add(-slack)) && !o.End.After(f.Recover.Add(slack)) {
			return true
		}
	}
	return false
}

// precision compares every ground-truth black hole with the outage measured
// on its flow: the outages overlapping the hole, summed.
func precision(faults []results.FaultRecord, sums []measure.FlowSummary, bucket time.Duration) []results.PrecisionCheck {
	var out []results.PrecisionCheck
	for _, f := range faults {
		if f.Kind != FaultBlackHole || f.Recover == nil {
			continue
		}
		truth := f.Recover.Sub(f.Inject).Seconds()
		measured := 0.0
		for _, s := range sums {
			if s.Flow.ID != f.Target {
				continue
			}
			for _, o := range s.Outages {
				if o.Start.Before(f.Recover.Add(bucket)) && o.End.After(f.Inject.Add(-bucket)) {
					measured += o.Seconds
				}
			}
		}
		errS := measured - truth
		out = append(out, results.PrecisionCheck{Flow: f.Target, TruthSeconds: round3(truth), MeasuredSeconds: round3(measured),
			ErrorSeconds: round3(errS), Within: math.Abs(errS) <= bucket.Seconds()})
	}
	return out
}
