package baseline

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"blastradius.dev/blastradius/framework/results"
)

// ReportVersion is the version of the JSON report (docs/compare.md); it is
// bumped on any incompatible change to it.
const ReportVersion = 1

// Tier is how a variant (or one of its figures) compares with its history.
type Tier string

// Tiers, mildest first.
const (
	TierPass             Tier = "pass"
	TierNotEnoughHistory Tier = "not-enough-history"
	TierFlake            Tier = "flake"
	TierRegress          Tier = "regress"
)

// Exit codes of blastradius compare.
const (
	ExitOK           = 0 // every variant passed, flaked or lacks history
	ExitRegress      = 1 // a variant regressed (or, with Strict, lacks history)
	ExitUsage        = 2 // bad flags or a bad folder
	ExitNothingToSee = 3 // no measured trial, or no variant with any history
)

// Options tunes a comparison.
type Options struct {
	// MinHistory is the number of baseline trials a variant needs before
	// its thresholds mean anything; with fewer it is not-enough-history.
	MinHistory int `json:"minHistory"`
	// FlakeTolerance widens the flake band: a value above the p95 limit by
	// no more than this fraction of it is a flake even where p99 equals
	// p95 (with a short history both are its maximum).
	FlakeTolerance float64 `json:"flakeTolerance"`
	// Strict makes not-enough-history fail the comparison (exit 1).
	Strict bool `json:"strict"`
}

// DefaultOptions are the command's defaults.
var DefaultOptions = Options{MinHistory: 5, FlakeTolerance: 0.25}

// Report is the outcome of a comparison; its JSON form is documented in
// docs/compare.md.
type Report struct {
	Version   int           `json:"version"`
	Run       RunRef        `json:"run"`
	Baselines []BaselineRef `json:"baselines"`
	Options   Options       `json:"options"`
	Variants  []*Variant    `json:"variants"`
	Skipped   []Skipped     `json:"skipped"`
	Errors    []TrialError  `json:"errors"`
	Counts    Counts        `json:"counts"`
	ExitCode  int           `json:"exitCode"`
}

// RunRef names the run compared.
type RunRef struct {
	Dir      string  `json:"dir"`
	ID       string  `json:"id"`
	Provider string  `json:"provider"`
	BucketMs float64 `json:"bucketMs"`
}

// BaselineRef is one baseline run and how many of its trials were used.
type BaselineRef struct {
	Dir    string `json:"dir"`
	ID     string `json:"id"`
	Trials int    `json:"trials"` // measured trials of a variant the run has
	// Ignored says why none of the run's trials count ("same run as the
	// one compared", "provider kind, the run's is netns").
	Ignored string `json:"ignored,omitempty"`
}

// Topology identifies the cluster of a variant: node count and the
// workloads (pod name, role and node).
type Topology struct {
	Nodes     int    `json:"nodes"`
	Workloads int    `json:"workloads"`
	Key       string `json:"key"` // "<nodes>n-<workloads>w-<hash of the workload placement>"
}

// Variant is one scenario × mode × topology of the run with its history.
type Variant struct {
	Scenario string   `json:"scenario"`
	Fault    string   `json:"fault,omitempty"`
	Mode     string   `json:"mode"`
	Topology Topology `json:"topology"`
	Tier     Tier     `json:"tier"`
	// Reasons explain every tier other than pass, one sentence each.
	Reasons []string `json:"reasons,omitempty"`
	History History  `json:"history"`
	// Trials, Noisy: this run's measured trials of the variant and how many
	// of them were flagged noisy.
	Trials            int           `json:"trials"`
	Noisy             int           `json:"noisy"`
	DisruptionSeconds *Figure       `json:"disruptionSeconds,omitempty"`
	FailedRequests    *Figure       `json:"failedRequests,omitempty"`
	Verdict           *VerdictCheck `json:"verdict,omitempty"`
	// Compares names the disruption figure compared: late answers included
	// when every trial, this run's and the history's, measured them;
	// failed requests only when some baseline predates that.
	Compares string `json:"compares"`
}

// The disruption figures compare can use.
const (
	ComparesWithLate   = "disruption-seconds, late answers included"
	ComparesFailedOnly = "disruption-seconds of failed requests only (a baseline predates late answers)"
)

// History is what the baselines hold of a variant.
type History struct {
	Trials int `json:"trials"` // measured trials
	Runs   int `json:"runs"`   // distinct runs they came from
	Noisy  int `json:"noisy"`  // of Trials, flagged noisy (counted all the same)
}

// Figure compares one per-trial figure with its history. Absent (nil) when
// the history is empty.
type Figure struct {
	P95 float64 `json:"p95"` // nearest-rank p95 of the history
	P99 float64 `json:"p99"` // nearest-rank p99 of the history
	// Floor is one bucket's worth: the least noise a threshold allows.
	Floor float64 `json:"floor"`
	// PassLimit = max(P95, Floor); FlakeLimit = max(P99, Floor,
	// PassLimit × (1 + flake tolerance)).
	PassLimit  float64 `json:"passLimit"`
	FlakeLimit float64 `json:"flakeLimit"`
	Value      float64 `json:"value"` // this run: the median over its trials (upper median)
	Worst      float64 `json:"worst"` // this run: the largest trial
	Tier       Tier    `json:"tier"`
}

// VerdictCheck compares the verdict with its history. Absent for a
// scenario without a fault (no verdict).
type VerdictCheck struct {
	Usual string `json:"usual"` // the worst verdict at least half of the history reached
	Worst string `json:"worst"` // the worst verdict in the history
	Value string `json:"value"` // this run, the same way as Usual
	Tier  Tier   `json:"tier"`
}

// Skipped is a scenario and mode the run skipped, with the reason.
type Skipped struct {
	Scenario string `json:"scenario"`
	Mode     string `json:"mode"`
	Reason   string `json:"reason"`
}

// TrialError is a trial of the run that could not be measured.
type TrialError struct {
	Scenario string `json:"scenario"`
	Mode     string `json:"mode"`
	Index    int    `json:"index"`
	Status   string `json:"status"` // error, interrupted, or running (never finished)
	Error    string `json:"error"`
}

// Counts tallies the variants per tier and the trials set apart.
type Counts struct {
	Pass             int `json:"pass"`
	Flake            int `json:"flake"`
	Regress          int `json:"regress"`
	NotEnoughHistory int `json:"notEnoughHistory"`
	Skipped          int `json:"skipped"`
	Errors           int `json:"errors"`
}

// verdictRank orders verdict values by severity. no-data-plane-impact is
// no-impact for a control-plane fault, so both rank 0: a variant never
// moves between them (the fault kind decides which it gets). The values
// are framework/scenario's Verdict* constants, spelled out here so that
// comparing does not pull the scenario runner in; a test keeps them equal.
var verdictRank = map[string]int{"no-data-plane-impact": 0, "no-impact": 0, "contained": 1, "cluster-wide": 2}

// measured is one trial's figures.
type measured struct {
	disruption, failed float64
	// failedOnly is the disruption of failed and missing requests alone;
	// late says disruption counts late answers too (schema 2 on).
	failedOnly float64
	late       bool
	verdict    string
	noisy      bool
	run        string
}

// figures returns a trial's figures, false if it was not measured. schema
// is the trial's run.json version.
func figures(t *results.Trial, schema int) (measured, bool) {
	if t.Status != results.StatusDone && t.Status != results.StatusFailed {
		return measured{}, false
	}
	m := measured{noisy: t.Noisy, late: schema >= results.LateAnswersSince}
	switch {
	case t.Verdict != nil:
		m.disruption, m.failed, m.verdict = t.Verdict.DisruptionSeconds, float64(t.Verdict.FailedRequests), t.Verdict.Value
		m.failedOnly = t.Verdict.FailedDisruptionSeconds
	case t.Summary != nil:
		// A scenario without a fault has no verdict; the same sums come
		// from the flow summaries (computeVerdict adds up the same fields).
		for _, f := range t.Summary.Flows {
			m.disruption += f.DisruptionSeconds
			m.failedOnly += f.FailedDisruptionSeconds
			for _, o := range f.Outages {
				m.failed += float64(o.Failures)
			}
		}
	default:
		return measured{}, false
	}
	if !m.late {
		// Before late answers, disruption counted failures alone.
		m.failedOnly = m.disruption
	}
	return m, true
}

// topologyOf identifies a trial's cluster. Pod names, roles and nodes are
// all part of it: the same names placed differently give different flows.
func topologyOf(t *results.Trial) Topology {
	sigs := make([]string, 0, len(t.Topology.Pods))
	for _, p := range t.Topology.Pods {
		sigs = append(sigs, p.Role+"/"+p.Name+"@"+p.Node)
	}
	sort.Strings(sigs)
	h := sha256.Sum256([]byte(fmt.Sprintf("%d|%s", len(t.Topology.Nodes), strings.Join(sigs, ","))))
	n, w := len(t.Topology.Nodes), len(sigs)
	return Topology{Nodes: n, Workloads: w, Key: fmt.Sprintf("%dn-%dw-%s", n, w, hex.EncodeToString(h[:4]))}
}

type variantKey struct{ scenario, fault, mode, topo string }

func keyOf(t *results.Trial) variantKey {
	return variantKey{t.Scenario, t.Fault, t.Mode, topologyOf(t).Key}
}

// Compare puts every variant of run into a tier against the baselines.
func Compare(run *Folder, baselines []*Folder, opt Options) *Report {
	if opt.MinHistory < 1 {
		opt.MinHistory = 1
	}
	env := run.Run.Environment
	bucketMs := env.BucketMs
	if bucketMs <= 0 {
		bucketMs = 100 // the run's default bucket: old or hand-made run.json may lack it
	}
	rep := &Report{
		Version: ReportVersion, Options: opt,
		Run:       RunRef{Dir: run.Dir, ID: run.Run.ID, Provider: env.Provider, BucketMs: bucketMs},
		Baselines: []BaselineRef{}, Variants: []*Variant{}, Skipped: []Skipped{}, Errors: []TrialError{},
	}

	// The run's variants, in the order they first appear.
	type current struct {
		v      *Variant
		trials []measured
		maxQPS float64
		total  int
	}
	byKey := map[variantKey]*current{}
	var order []variantKey
	skipped := map[[2]string]string{}
	var skipOrder [][2]string
	measuredIn := map[[2]string]bool{}
	for _, t := range run.Run.Trials {
		sm := [2]string{t.Scenario, t.Mode}
		if t.Status == results.StatusSkipped {
			if _, ok := skipped[sm]; !ok {
				skipOrder = append(skipOrder, sm)
			}
			skipped[sm] = t.Error
			continue
		}
		m, ok := figures(t, run.Run.SchemaVersion)
		if !ok {
			rep.Errors = append(rep.Errors, TrialError{Scenario: t.Scenario, Mode: t.Mode, Index: t.Index, Status: t.Status, Error: firstLine(t.Error)})
			continue
		}
		measuredIn[sm] = true
		k := keyOf(t)
		c := byKey[k]
		if c == nil {
			c = &current{v: &Variant{Scenario: t.Scenario, Fault: t.Fault, Mode: t.Mode, Topology: topologyOf(t)}}
			byKey[k] = c
			order = append(order, k)
		}
		c.trials = append(c.trials, m)
		for _, f := range t.Flows {
			c.maxQPS = math.Max(c.maxQPS, f.QPS)
		}
		if t.Verdict != nil {
			c.total = t.Verdict.Total
		}
	}
	for _, sm := range skipOrder {
		// A scenario skipped in one trial but measured in another (a
		// skip that depends on the run) is not reported as skipped.
		if !measuredIn[sm] {
			rep.Skipped = append(rep.Skipped, Skipped{Scenario: sm[0], Mode: sm[1], Reason: skipped[sm]})
		}
	}

	// History per variant.
	hist := map[variantKey][]measured{}
	for _, b := range baselines {
		ref := BaselineRef{Dir: b.Dir, ID: b.Run.ID}
		switch {
		case b.Run.ID == run.Run.ID && b.Run.Started.Equal(run.Run.Started):
			// A store may hold the run itself (results/ is one): it is no
			// history of itself.
			ref.Ignored = "same run as the one compared"
		case b.Run.Environment.Provider != env.Provider:
			// Another provider is another machine and network: its
			// disruption says nothing about this one's.
			ref.Ignored = fmt.Sprintf("provider %s, the run's is %s", b.Run.Environment.Provider, env.Provider)
		}
		if ref.Ignored == "" {
			for _, t := range b.Run.Trials {
				k := keyOf(t)
				if byKey[k] == nil {
					continue
				}
				m, ok := figures(t, b.Run.SchemaVersion)
				if !ok {
					continue
				}
				m.run = b.Dir + "\x00" + b.Run.ID
				hist[k] = append(hist[k], m)
				ref.Trials++
			}
		}
		rep.Baselines = append(rep.Baselines, ref)
	}

	withHistory := 0
	for _, k := range order {
		c := byKey[k]
		v := c.v
		h := hist[k]
		runs := map[string]bool{}
		for _, m := range h {
			runs[m.run] = true
			if m.noisy {
				v.History.Noisy++
			}
		}
		v.History.Trials, v.History.Runs = len(h), len(runs)
		v.Trials = len(c.trials)
		for _, m := range c.trials {
			if m.noisy {
				v.Noisy++
			}
		}
		if len(h) > 0 {
			withHistory++
		}
		compareVariant(v, c.trials, h, opt, bucketMs/1000, failedFloor(c.maxQPS, env.BudgetRPS, c.total, bucketMs/1000))
		rep.Variants = append(rep.Variants, v)
		switch v.Tier {
		case TierPass:
			rep.Counts.Pass++
		case TierFlake:
			rep.Counts.Flake++
		case TierRegress:
			rep.Counts.Regress++
		case TierNotEnoughHistory:
			rep.Counts.NotEnoughHistory++
		}
	}
	rep.Counts.Skipped, rep.Counts.Errors = len(rep.Skipped), len(rep.Errors)
	switch {
	case len(rep.Variants) == 0 || withHistory == 0:
		rep.ExitCode = ExitNothingToSee
	case rep.Counts.Regress > 0, opt.Strict && rep.Counts.NotEnoughHistory > 0:
		rep.ExitCode = ExitRegress
	default:
		rep.ExitCode = ExitOK
	}
	return rep
}

// failedFloor is one bucket of failed requests: what a one-bucket outage
// costs the busiest flow. Without per-flow rates (hand-made run.json) the
// budget split over the flows stands in.
func failedFloor(maxQPS, budget float64, flows int, bucketS float64) float64 {
	rate := maxQPS
	if rate <= 0 && budget > 0 && flows > 0 {
		rate = budget / float64(flows)
	}
	return math.Max(1, math.Ceil(rate*bucketS))
}

func compareVariant(v *Variant, cur, hist []measured, opt Options, disFloor, failFloor float64) {
	pick := func(ms []measured, f func(measured) float64) []float64 {
		xs := make([]float64, len(ms))
		for i, m := range ms {
			xs[i] = f(m)
		}
		return xs
	}
	// Disruption is compared like for like: with late answers when every
	// trial measured them, else failed requests' disruption alone.
	late := true
	for _, m := range append(slices.Clone(cur), hist...) {
		late = late && m.late
	}
	dis := func(m measured) float64 { return m.failedOnly }
	v.Compares = ComparesFailedOnly
	if late {
		dis = func(m measured) float64 { return m.disruption }
		v.Compares = ComparesWithLate
	}
	fail := func(m measured) float64 { return m.failed }
	if len(hist) > 0 {
		v.DisruptionSeconds = figure(pick(hist, dis), pick(cur, dis), disFloor, opt.FlakeTolerance)
		v.FailedRequests = figure(pick(hist, fail), pick(cur, fail), failFloor, opt.FlakeTolerance)
		v.Verdict = verdictCheck(hist, cur)
	}
	if len(hist) < opt.MinHistory {
		v.Tier = TierNotEnoughHistory
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d baseline trial(s), %d needed (--min-history)", len(hist), opt.MinHistory))
		return
	}
	v.Tier = TierPass
	raise := func(t Tier, why string) {
		if tierRank(t) > tierRank(v.Tier) {
			v.Tier = t
		}
		if t != TierPass {
			v.Reasons = append(v.Reasons, why)
		}
	}
	for _, f := range []struct {
		name, unit, format string
		fig                *Figure
	}{
		{"disruption", " s", "%.3f", v.DisruptionSeconds},
		{"failed requests", "", "%.0f", v.FailedRequests},
	} {
		g := f.fig
		n := func(x float64) string { return fmt.Sprintf(f.format, x) + f.unit }
		switch g.Tier {
		case TierFlake:
			raise(TierFlake, fmt.Sprintf("%s %s above the p95 limit %s, within the flake limit %s", f.name, n(g.Value), n(g.PassLimit), n(g.FlakeLimit)))
		case TierRegress:
			raise(TierRegress, fmt.Sprintf("%s %s above the flake limit %s (p95 limit %s)", f.name, n(g.Value), n(g.FlakeLimit), n(g.PassLimit)))
		}
	}
	if c := v.Verdict; c != nil {
		switch c.Tier {
		case TierFlake:
			raise(TierFlake, fmt.Sprintf("verdict %s, usually %s (seen before: worst %s)", c.Value, c.Usual, c.Worst))
		case TierRegress:
			raise(TierRegress, fmt.Sprintf("verdict %s, worse than any in the history (usually %s, worst %s)", c.Value, c.Usual, c.Worst))
		}
	}
}

func tierRank(t Tier) int {
	switch t {
	case TierPass:
		return 0
	case TierNotEnoughHistory:
		return 1
	case TierFlake:
		return 2
	}
	return 3
}

// figure derives the limits from the history and tiers the run's value.
func figure(hist, cur []float64, floor, tol float64) *Figure {
	sort.Float64s(hist)
	sort.Float64s(cur)
	g := &Figure{P95: nearestRank(hist, 0.95), P99: nearestRank(hist, 0.99), Floor: floor}
	g.PassLimit = math.Max(g.P95, floor)
	g.FlakeLimit = math.Max(math.Max(g.P99, floor), g.PassLimit*(1+tol))
	g.Value, g.Worst = round3(cur[len(cur)/2]), round3(cur[len(cur)-1])
	switch {
	case g.Value <= g.PassLimit:
		g.Tier = TierPass
	case g.Value <= g.FlakeLimit:
		g.Tier = TierFlake
	default:
		g.Tier = TierRegress
	}
	g.PassLimit, g.FlakeLimit = round3(g.PassLimit), round3(g.FlakeLimit)
	return g
}

// nearestRank is the nearest-rank percentile of sorted xs, as the run's own
// matrix computes its p95.
func nearestRank(sorted []float64, q float64) float64 {
	return sorted[int(math.Ceil(q*float64(len(sorted))))-1]
}

// typical is the worst verdict at least half of the trials reached (the
// upper median by severity); "" when the trials have no verdict.
func typical(ms []measured) (usual, worst string) {
	var vs []string
	for _, m := range ms {
		if _, ok := verdictRank[m.verdict]; ok {
			vs = append(vs, m.verdict)
		}
	}
	if len(vs) == 0 {
		return "", ""
	}
	sort.SliceStable(vs, func(i, j int) bool { return verdictRank[vs[i]] < verdictRank[vs[j]] })
	return vs[len(vs)/2], vs[len(vs)-1]
}

func verdictCheck(hist, cur []measured) *VerdictCheck {
	usual, worst := typical(hist)
	value, _ := typical(cur)
	if usual == "" || value == "" {
		return nil
	}
	c := &VerdictCheck{Usual: usual, Worst: worst, Value: value, Tier: TierPass}
	switch {
	case verdictRank[value] > verdictRank[worst]:
		c.Tier = TierRegress
	case verdictRank[value] > verdictRank[usual]:
		c.Tier = TierFlake
	}
	return c
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
