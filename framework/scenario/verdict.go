package scenario

import (
	"math"
	"slices"
	"sort"
	"time"

	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// Verdict values.
const (
	VerdictNoImpact          = "no-impact"
	VerdictContained         = "contained"
	VerdictClusterWide       = "cluster-wide"
	VerdictNoDataPlaneImpact = "no-data-plane-impact"
)

// Verdicts lists the verdict values, mildest first.
var Verdicts = []string{VerdictNoDataPlaneImpact, VerdictNoImpact, VerdictContained, VerdictClusterWide}

// minAffectingFailures is how many failed, missing or late requests in the
// fault period make a flow affected. One lone failure is reported as
// isolated instead: on two shared cores a single request can time out for
// reasons that have nothing to do with the fault, and one such request
// must not turn a contained fault into a cluster-wide one. A broken stream
// always counts.
const minAffectingFailures = 2

// verdictInput is what a verdict needs besides the measured flows.
type verdictInput struct {
	faultNodes   []string
	controlPlane bool
	// extraNodes: per flow ID, nodes the flow's traffic crosses besides its
	// client's and its endpoints' (waypoint replicas).
	extraNodes map[string][]string
	// endpointNodes: per flow ID, the nodes of every pod that can serve it.
	endpointNodes map[string][]string
	fault         *measure.Fault
	windowEnd     time.Time
	bucket        time.Duration
}

// computeVerdict decides what the fault reached.
func computeVerdict(in verdictInput, sums []measure.FlowSummary) *results.Verdict {
	v := &results.Verdict{FaultNodes: slices.Clone(in.faultNodes), Total: len(sums)}
	sort.Strings(v.FaultNodes)
	for _, s := range sums {
		v.DisruptionSeconds += s.DisruptionSeconds
		v.FailedDisruptionSeconds += s.FailedDisruptionSeconds
		v.BrokenStreams += s.Streams.Broken
		v.StalledStreams += s.Streams.Stalls
		failures := 0
		for _, o := range s.Outages {
			v.FailedRequests += o.Failures
			v.SlowRequests += o.Slow
		}
		for _, o := range measure.FaultOutages(s.Outages, in.windowEnd, in.fault, in.bucket) {
			failures += o.Failures + o.Slow
		}
		brokeInFault := s.Streams.Broken > 0 && failures > 0
		if failures == 0 {
			continue
		}
		if failures < minAffectingFailures && !brokeInFault {
			v.Isolated = append(v.Isolated, s.Flow.ID)
			continue
		}
		v.Affected++
		nodes := append([]string{s.Flow.ClientNode, s.Flow.ServerNode}, in.endpointNodes[s.Flow.ID]...)
		nodes = append(nodes, in.extraNodes[s.Flow.ID]...)
		touches := false
		for _, n := range nodes {
			touches = touches || slices.Contains(in.faultNodes, n)
		}
		if !touches {
			v.Beyond = append(v.Beyond, s.Flow.ID)
		}
	}
	v.DisruptionSeconds = round3(v.DisruptionSeconds)
	v.FailedDisruptionSeconds = round3(v.FailedDisruptionSeconds)
	switch {
	case v.Affected == 0 && in.controlPlane:
		v.Value = VerdictNoDataPlaneImpact
	case v.Affected == 0:
		v.Value = VerdictNoImpact
	case len(v.Beyond) > 0:
		v.Value = VerdictClusterWide
	default:
		v.Value = VerdictContained
	}
	return v
}

// worse orders verdicts by severity.
func worse(a, b string) bool { return slices.Index(Verdicts, a) > slices.Index(Verdicts, b) }

// Matrix aggregates the run's trials into one cell per scenario and mode,
// in the order they first appear.
func Matrix(trials []*results.Trial) []results.MatrixCell {
	type key struct{ sc, mode string }
	var order []key
	cells := map[key]*results.MatrixCell{}
	figs := map[key][7][]float64{}
	for _, t := range trials {
		k := key{t.Scenario, t.Mode}
		c := cells[k]
		if c == nil {
			c = &results.MatrixCell{Scenario: t.Scenario, Fault: t.Fault, Mode: t.Mode}
			cells[k] = c
			order = append(order, k)
		}
		switch t.Status {
		case results.StatusSkipped:
			c.Skipped = t.Error
			continue
		case results.StatusError, results.StatusInterrupted:
			c.Errors++
			continue
		case results.StatusFailed:
			c.Failed++
		}
		c.Skipped = ""
		if t.Verdict == nil {
			// A trial without a fault (a baseline) is measured but has no
			// verdict: counted, with the figures left empty.
			if t.Status == results.StatusDone || t.Status == results.StatusFailed {
				c.Trials++
			}
			continue
		}
		c.Trials++
		if t.Noisy {
			c.Noisy++
		}
		v := t.Verdict
		if c.Verdicts == nil {
			c.Verdicts = map[string]int{}
		}
		c.Verdicts[v.Value]++
		if c.Verdict == "" || worse(v.Value, c.Verdict) {
			c.Verdict = v.Value
		}
		c.Total = v.Total
		f := figs[k]
		f[0] = append(f[0], float64(v.Affected))
		f[1] = append(f[1], v.DisruptionSeconds)
		f[2] = append(f[2], float64(v.FailedRequests))
		f[3] = append(f[3], float64(v.BrokenStreams))
		f[4] = append(f[4], float64(v.SlowRequests))
		f[5] = append(f[5], v.FailedDisruptionSeconds)
		f[6] = append(f[6], float64(v.StalledStreams))
		figs[k] = f
	}
	var out []results.MatrixCell
	for _, k := range order {
		c := cells[k]
		f := figs[k]
		c.Affected, c.DisruptionSeconds, c.FailedRequests, c.BrokenStreams = stats(f[0]), stats(f[1]), stats(f[2]), stats(f[3])
		c.SlowRequests, c.FailedDisruptionSeconds, c.StalledStreams = stats(f[4]), stats(f[5]), stats(f[6])
		out = append(out, *c)
	}
	return out
}

// stats: mean, nearest-rank p95, the worst trial and a 95 % confidence
// interval of the mean (Student's t, two-sided).
func stats(xs []float64) results.Stats {
	n := len(xs)
	if n == 0 {
		return results.Stats{}
	}
	sorted := slices.Clone(xs)
	sort.Float64s(sorted)
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(n)
	st := results.Stats{N: n, Mean: round3(mean), P95: sorted[int(math.Ceil(0.95*float64(n)))-1], Max: sorted[n-1], CILow: round3(mean), CIHigh: round3(mean)}
	if n > 1 {
		ss := 0.0
		for _, x := range xs {
			ss += (x - mean) * (x - mean)
		}
		sd := math.Sqrt(ss / float64(n-1))
		half := tCritical(n-1) * sd / math.Sqrt(float64(n))
		st.CILow, st.CIHigh = round3(mean-half), round3(mean+half)
	}
	return st
}

// tCritical is Student's t for a two-sided 95 % interval with df degrees of
// freedom.
func tCritical(df int) float64 {
	table := []float64{12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
		2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
		2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042}
	if df < 1 {
		return math.NaN()
	}
	if df <= len(table) {
		return table[df-1]
	}
	return 1.96
}
