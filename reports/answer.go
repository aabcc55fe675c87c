package reports

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
)

// The answer: the question blastradius exists for (is the ambient mesh's
// per-node proxy a single point of failure?), computed from run.json alone.
// Each mesh component's failure, and a whole node's, is set against the
// radius of the node it runs on; the overall sentence is derived from the
// rows, so it changes when the measurements do and never by editing text.

// Answer row statuses.
const (
	AnswerMeasured   = "measured"
	AnswerSkipped    = "skipped"      // the trial was skipped; Reason is its Error
	AnswerError      = "error"        // the trial could not complete
	AnswerIncomplete = "not-measured" // the run stopped during the trial
	AnswerNotRun     = "not-run"      // the run has no such trial
	AnswerNoVerdict  = "no-verdict"   // finished, but without a verdict or summary
)

// The cert-expiry row's own scenario and its fault kind.
const (
	certExpiryScenario = "cert-expiry"
	certExpiryFault    = scenario.FaultControlPlaneDown
)

// Containment rules: which set of flows an affected flow must belong to for
// the fault to count as inside its node's radius.
const (
	// RuleNodeFlows: every affected flow has its client or its server on a
	// node the fault was aimed at.
	RuleNodeFlows = "node-flows"
	// RuleNodeCrash: RuleNodeFlows, and every affected flow was also
	// affected by a measured crash of that node in the same mode.
	RuleNodeCrash = "node-flows+node-crash"
)

// AnswerTable is the computed answer section: one row per component and
// mode, in a fixed order, and one overall sentence.
type AnswerTable struct {
	Rows []AnswerRow
	// Overall is the one-sentence answer, derived from the rows.
	Overall string
	// Outcome summarises Overall for machines: "inside" (the ambient node
	// proxy's crash stayed inside its node's radius), "beyond" (it did
	// not) or "unanswered" (the run did not measure it).
	Outcome string
	// Empty: the run has no trial of any row's fault at all.
	Empty bool
}

// AnswerRow is one component's failure in one mode.
type AnswerRow struct {
	Row       string // stable key: node-proxy, node-agent, control-plane, cert-expiry, waypoint, sidecar, node
	Component string // what failed, for people
	Mode      string
	Fault     string // the fault kind the row is measured with
	Scenario  string // the scenario of the trial shown; "" when none
	Status    string // one of the Answer* statuses
	Reason    string // why the row is not measured

	// The trial shown, when measured: the worst of Trials (see pickWorst).
	Trial    int // its index
	Trials   int // measured trials of Scenario in Mode
	Verdicts map[string]int
	Verdict  string
	Noisy    bool

	Affected, Total int      // flows, from the trial's verdict
	Pods, Nodes     int      // from the trial's measured radius
	FaultNodes      []string // the nodes the component runs on (the fault's nodes)
	// Disruption is the verdict's disruption-seconds; DisruptionPerPod
	// that over the affected pods, 0 when no pod was affected.
	Disruption       float64
	DisruptionPerPod float64

	// Inside: every affected flow is inside the fault nodes' radius under
	// Rule. Beyond lists those that are not.
	Inside bool
	Rule   string
	// Flows are the affected flows the rule was applied to; OffNode those
	// with neither end on a fault node.
	Flows   []string
	OffNode []string
	// NodeCrash names the node-crash trials whose affected flows were the
	// reference under RuleNodeCrash ("node-crash #1").
	NodeCrash []string
	Beyond    []string

	Sentence string
}

// answerDef is one row of the answer: a component and the trials that fail it.
type answerDef struct {
	key       string
	component string
	kind      string
	// match selects the trials that measure this row; nil: the fault kind.
	match func(t *results.Trial) bool
}

// answerDefs are the rows in the order the section lists them: the
// per-node proxy the question is about first, then the other components,
// the whole node last as the yardstick the others are measured against.
func answerDefs(run *results.Run) []answerDef {
	// The row measures losing the waypoint; killing every replica is that
	// loss outright, so it is preferred, and one replica stands in for it
	// only when the run has nothing better.
	all, one := scenario.FaultWaypointAllKilled, scenario.FaultWaypointKill
	wp := answerDef{key: "waypoint", component: "Waypoint, all replicas killed", kind: all}
	switch {
	case hasKind(run, all, true):
	case hasKind(run, one, true), !hasKind(run, all, false) && hasKind(run, one, false):
		wp = answerDef{key: "waypoint", component: "Waypoint, one replica killed", kind: one}
	}
	return []answerDef{
		{key: "node-proxy", component: "Node proxy crash", kind: scenario.FaultNodeProxyCrash},
		{key: "node-agent", component: "Node agent crash", kind: scenario.FaultNodeAgentCrash},
		{key: "control-plane", component: "Control plane crash", kind: scenario.FaultControlPlaneCrash},
		{key: "cert-expiry", component: "Control plane down past the certificate TTL", kind: certExpiryFault, match: pastCertTTL},
		wp,
		{key: "sidecar", component: "Sidecar crash", kind: scenario.FaultSidecarCrash},
		{key: "node", component: "Node crash", kind: scenario.FaultNodeCrash},
	}
}

// pastCertTTL: the cert-expiry scenario, or any control-plane outage that
// lasted until some workload certificate had expired. A shorter outage
// is the controlplane-down scenario's question, not this row's.
func pastCertTTL(t *results.Trial) bool {
	if t.Scenario == certExpiryScenario {
		return true
	}
	if t.Fault != scenario.FaultControlPlaneDown || len(t.CertExpiries) == 0 {
		return false
	}
	var end time.Time
	for _, f := range t.Faults {
		if f.Kind == scenario.FaultControlPlaneDown && f.Recover != nil {
			end = *f.Recover
		}
	}
	if end.IsZero() && t.Window != nil {
		end = t.Window.End
	}
	if end.IsZero() {
		return true
	}
	for _, exp := range t.CertExpiries {
		if exp.Before(end) {
			return true
		}
	}
	return false
}

func (d answerDef) matches(t *results.Trial) bool {
	if t == nil {
		return false
	}
	if d.match != nil {
		return d.match(t)
	}
	return t.Fault == d.kind
}

// hasKind: the run has a trial of the fault kind (measured ones only when
// measured is set).
func hasKind(run *results.Run, kind string, measured bool) bool {
	for _, t := range run.Trials {
		if t != nil && t.Fault == kind && (!measured || isMeasured(t)) {
			return true
		}
	}
	return false
}

// isMeasured: the trial finished with a verdict and a summary.
func isMeasured(t *results.Trial) bool {
	return (t.Status == results.StatusDone || t.Status == results.StatusFailed) && t.Verdict != nil && t.Summary != nil
}

// modesOfKind is where the fault's component exists, from the catalogue:
// a mode without it has nothing to answer for that row.
func modesOfKind(kind string) []string {
	if k, err := scenario.LookupFault(kind); err == nil && k.Modes != nil {
		var out []string
		for _, m := range modeOrder {
			if slices.Contains(k.Modes, scenario.BaseMode(m)) {
				out = append(out, m)
			}
		}
		return out
	}
	return modeOrder
}

// Answer computes the answer section from run.json's data. It reads
// nothing else and changes nothing.
func Answer(run *results.Run) AnswerTable {
	runModes := map[string]bool{}
	for m := range strings.SplitSeq(run.Environment.Mode, ",") {
		if m = strings.TrimSpace(m); m != "" {
			runModes[m] = true
		}
	}
	for _, t := range run.Trials {
		if t != nil {
			runModes[t.Mode] = true
		}
	}
	var at AnswerTable
	at.Empty = true
	for _, d := range answerDefs(run) {
		for _, m := range modesOfKind(d.kind) {
			if scenario.MeshOf(m) == scenario.MeshIstio && !runModes[m] {
				continue // a run without Istio has no Istio rows
			}
			r := answerRow(run, d, m, runModes)
			if r.Status != AnswerNotRun {
				at.Empty = false
			}
			at.Rows = append(at.Rows, r)
		}
	}
	at.Overall, at.Outcome = overall(at.Rows)
	return at
}

func answerRow(run *results.Run, d answerDef, mode string, runModes map[string]bool) AnswerRow {
	r := AnswerRow{Row: d.key, Component: d.component, Mode: mode, Fault: d.kind}
	var cands []*results.Trial
	for _, t := range run.Trials {
		if t != nil && t.Mode == mode && d.matches(t) {
			cands = append(cands, t)
		}
	}
	if len(cands) == 0 {
		r.Status = AnswerNotRun
		switch {
		case !runModes[mode]:
			r.Reason = "this run did not include mode " + mode
		case d.key == "cert-expiry":
			r.Reason = "the run has no control-plane outage that outlasted the certificate TTL (cert-expiry)"
		default:
			r.Reason = "the run has no " + d.kind + " trial"
		}
		r.Sentence = rowSentence(r)
		return r
	}
	r.Scenario = pickScenario(cands, d)
	var sel, measured []*results.Trial
	for _, t := range cands {
		if t.Scenario == r.Scenario {
			sel = append(sel, t)
			if isMeasured(t) {
				measured = append(measured, t)
			}
		}
	}
	if len(measured) == 0 {
		r.Status, r.Reason = unmeasured(sel)
		r.Sentence = rowSentence(r)
		return r
	}
	var evals []AnswerRow
	for _, t := range measured {
		e := r
		e.Status = AnswerMeasured
		measureRow(&e, run, t, d.key != "node")
		evals = append(evals, e)
	}
	r = pickWorst(evals)
	r.Trials = len(measured)
	r.Verdicts = map[string]int{}
	for _, t := range measured {
		r.Verdicts[t.Verdict.Value]++
	}
	r.Sentence = rowSentence(r)
	return r
}

// pickScenario chooses which scenario a row shows when several measure it
// in one mode: the catalogue's own (named after the fault) first, since
// the rows are meant to be compared with each other, then the first the
// run measured, then the first it mentions.
func pickScenario(cands []*results.Trial, d answerDef) string {
	own := d.kind
	if d.key == "cert-expiry" {
		own = certExpiryScenario
	}
	first, firstMeasured := "", ""
	for _, t := range cands {
		if t.Scenario == own && isMeasured(t) {
			return own
		}
		if first == "" {
			first = t.Scenario
		}
		if firstMeasured == "" && isMeasured(t) {
			firstMeasured = t.Scenario
		}
	}
	if firstMeasured != "" {
		return firstMeasured
	}
	for _, t := range cands {
		if t.Scenario == own {
			return own
		}
	}
	return first
}

// unmeasured says why none of a scenario's trials in a mode was measured:
// an error first (something went wrong), then a run that stopped, then a
// skip (the mode or provider cannot have the fault).
func unmeasured(sel []*results.Trial) (status, reason string) {
	for _, t := range sel {
		if t.Status == results.StatusError {
			return AnswerError, orDefault(t.Error, "the trial could not complete")
		}
	}
	for _, t := range sel {
		if t.Status == results.StatusRunning || t.Status == results.StatusInterrupted {
			return AnswerIncomplete, "the run stopped during this trial (status " + t.Status + ")"
		}
	}
	for _, t := range sel {
		if t.Status == results.StatusSkipped {
			return AnswerSkipped, orDefault(t.Error, "skipped, no reason recorded")
		}
	}
	return AnswerNoVerdict, "the trial ended (" + sel[0].Status + ") without a verdict or summary"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// measureRow fills r's figures from trial t. withCrash: compare with a
// measured node crash of the same mode when the run has one of the same
// node (not for the node row, which is that yardstick).
func measureRow(r *AnswerRow, run *results.Run, t *results.Trial, withCrash bool) {
	v, s := t.Verdict, t.Summary
	r.Trial, r.Verdict, r.Noisy = t.Index, v.Value, t.Noisy
	r.Affected, r.Total = v.Affected, v.Total
	r.Pods, r.Nodes = len(s.Radius.Pods), len(s.Radius.Nodes)
	r.FaultNodes = slices.Clone(v.FaultNodes)
	r.Disruption = v.DisruptionSeconds
	if r.Pods > 0 {
		r.DisruptionPerPod = v.DisruptionSeconds / float64(r.Pods)
	}
	affected := affectedFlows(t)
	ends := flowEnds(t)
	r.Rule = RuleNodeFlows
	var crash map[string]bool
	if withCrash {
		crash, r.NodeCrash = nodeCrashReach(run, t.Mode, r.FaultNodes)
		if r.NodeCrash != nil {
			r.Rule = RuleNodeCrash
		}
	}
	r.Flows = affected
	for _, f := range affected {
		// On the node: an end there (client or server), or, as the verdict
		// counts it, another pod that serves the flow or a proxy it crosses
		// there (a waypoint replica): the verdict lists the flows with none.
		e, known := ends[f]
		onNode := known && (slices.Contains(r.FaultNodes, e[0]) || slices.Contains(r.FaultNodes, e[1])) ||
			!slices.Contains(v.Beyond, f)
		if !onNode {
			r.OffNode = append(r.OffNode, f)
		}
		if !onNode || (crash != nil && !crash[f]) {
			r.Beyond = append(r.Beyond, f)
		}
	}
	r.Inside = len(r.Beyond) == 0
}

// affectedFlows is the trial's measured radius without the flows the
// verdict set aside as isolated single failures (docs/verdict.md): one
// timed-out request on a busy machine must not move a fault out of its
// node's radius. What is left is the set the verdict's count is of.
func affectedFlows(t *results.Trial) []string {
	var out []string
	for _, f := range t.Summary.Radius.Flows {
		if !slices.Contains(t.Verdict.Isolated, f) {
			out = append(out, f)
		}
	}
	return out
}

// flowEnds maps a flow to its client's and server's nodes.
func flowEnds(t *results.Trial) map[string][2]string {
	m := map[string][2]string{}
	for _, f := range t.Flows {
		m[f.ID] = [2]string{f.ClientNode, f.ServerNode}
	}
	for _, f := range t.Summary.Flows {
		m[f.Flow.ID] = [2]string{f.Flow.ClientNode, f.Flow.ServerNode}
	}
	return m
}

// nodeCrashReach is what measured crashes of every one of nodes reached in
// mode: the union of the affected flows of each node-crash trial aimed at
// all of them, and those trials' names. Nil when the run has none.
func nodeCrashReach(run *results.Run, mode string, nodes []string) (map[string]bool, []string) {
	if len(nodes) == 0 {
		return nil, nil
	}
	var reach map[string]bool
	var refs []string
	for _, t := range run.Trials {
		if t == nil || t.Mode != mode || t.Fault != scenario.FaultNodeCrash || !isMeasured(t) {
			continue
		}
		covers := true
		for _, n := range nodes {
			covers = covers && slices.Contains(t.Verdict.FaultNodes, n)
		}
		if !covers {
			continue
		}
		if reach == nil {
			reach = map[string]bool{}
		}
		for _, f := range affectedFlows(t) {
			reach[f] = true
		}
		refs = append(refs, fmt.Sprintf("%s #%d", t.Scenario, t.Index))
	}
	return reach, refs
}

// pickWorst chooses the trial a row shows among several: one that reached
// beyond its node's radius first, then the most severe verdict, then the
// most affected flows, then the most disruption; the earliest on a tie. A
// single point of failure shows itself in its worst trial, and a real
// trial keeps flows, pods and nodes consistent with each other, which a
// mean of sets would not. Noisy trials (the control flow, which no fault
// reaches, was disrupted too) compete only when every trial was noisy:
// what they measured is not all the fault's doing.
func pickWorst(evals []AnswerRow) AnswerRow {
	cands := slices.DeleteFunc(slices.Clone(evals), func(e AnswerRow) bool { return e.Noisy })
	if len(cands) == 0 {
		cands = evals
	}
	best := cands[0]
	for _, e := range cands[1:] {
		if worseRow(e, best) {
			best = e
		}
	}
	return best
}

func worseRow(a, b AnswerRow) bool {
	if a.Inside != b.Inside {
		return !a.Inside
	}
	if ra, rb := slices.Index(scenario.Verdicts, a.Verdict), slices.Index(scenario.Verdicts, b.Verdict); ra != rb {
		return ra > rb
	}
	if a.Affected != b.Affected {
		return a.Affected > b.Affected
	}
	return a.Disruption > b.Disruption
}

// nodeList names nodes in prose: "node-3", "node-1 and node-2".
func nodeList(ns []string) string {
	switch len(ns) {
	case 0:
		return "no node"
	case 1:
		return ns[0]
	}
	return strings.Join(ns[:len(ns)-1], ", ") + " and " + ns[len(ns)-1]
}

// flowList names at most three flows and counts the rest.
func flowList(fs []string) string {
	if len(fs) <= 3 {
		return strings.Join(fs, ", ")
	}
	return strings.Join(fs[:3], ", ") + fmt.Sprintf(" and %d more", len(fs)-3)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// Containment is the row's "inside its node's radius" figure in words.
func (r AnswerRow) Containment() string {
	if r.Status != AnswerMeasured {
		return "–"
	}
	if r.Inside {
		return "yes"
	}
	return "no"
}

// RuleText says which rule decided Inside, in words.
func (r AnswerRow) RuleText() string {
	switch r.Rule {
	case RuleNodeCrash:
		return "flows with an end or a crossed proxy on " + nodeList(r.FaultNodes) + " and reached by its crash (" + strings.Join(r.NodeCrash, ", ") + ")"
	case RuleNodeFlows:
		return "flows with an end or a crossed proxy on " + nodeList(r.FaultNodes)
	}
	return ""
}

func rowSentence(r AnswerRow) string {
	head := r.Component + " (" + r.Mode
	if r.Trials > 1 {
		head += fmt.Sprintf(", worst of %d trials", r.Trials)
	}
	head += ")"
	switch r.Status {
	case AnswerNotRun:
		return head + ": not run — " + r.Reason + "."
	case AnswerSkipped:
		return head + ": skipped — " + r.Reason + "."
	case AnswerError:
		return head + ": not measured, the trial could not complete — " + r.Reason + "."
	case AnswerIncomplete, AnswerNoVerdict:
		return head + ": not measured — " + r.Reason + "."
	}
	s := fmt.Sprintf("%s: %d of %d flows, %s, %s affected — ", head, r.Affected, r.Total,
		plural(r.Pods, "pod", "pods"), plural(r.Nodes, "node", "nodes"))
	where := nodeList(r.FaultNodes)
	switch {
	case len(r.FaultNodes) == 0 && len(r.Flows) > 0:
		s += "the trial names no node the fault was aimed at, so no affected flow can be placed inside a node's radius"
	case len(r.Flows) == 0:
		s += "nothing affected: inside " + where + "'s radius"
	case r.Inside && r.Rule == RuleNodeCrash:
		s += "all with an end or a crossed proxy on " + where + " and all reached by the crash of " + where + " too: inside " + where + "'s radius"
	case r.Inside:
		s += "all with an end or a crossed proxy on " + where + ": inside " + where + "'s radius"
	default:
		var why []string
		if len(r.OffNode) > 0 {
			why = append(why, fmt.Sprintf("%d with no end and no crossed proxy on %s (%s)", len(r.OffNode), where, flowList(r.OffNode)))
		}
		var missed []string
		for _, f := range r.Beyond {
			if !slices.Contains(r.OffNode, f) {
				missed = append(missed, f)
			}
		}
		if len(missed) > 0 {
			why = append(why, fmt.Sprintf("%d the crash of %s did not reach (%s)", len(missed), where, flowList(missed)))
		}
		s += strings.Join(why, " and ") + ": beyond " + where + "'s radius"
	}
	if r.Pods == 0 {
		s += "; no pod affected, 0 s of disruption per affected pod"
	} else {
		s += fmt.Sprintf("; %.2f s of disruption per affected pod", r.DisruptionPerPod)
	}
	if r.Noisy {
		s += " (a noisy trial: part of it may not be the fault's doing)"
	}
	return s + "."
}

// overall derives the one-sentence answer from the rows: the ambient node
// proxy's row decides it, and every other component that reached beyond
// its node's radius is named after it.
func overall(rows []AnswerRow) (sentence, outcome string) {
	var np *AnswerRow
	var order []string
	beyond := map[string][]string{}
	others := false
	for i := range rows {
		r := &rows[i]
		if r.Row == "node-proxy" && scenario.BaseMode(r.Mode) == "ambient" {
			// Istio's node proxy answers when it was measured; the
			// reference's otherwise.
			if np == nil || (r.Mode == "istio-ambient" && r.Status == AnswerMeasured) {
				if np != nil && np.Status == AnswerMeasured {
					others = true
				}
				np = r
			} else if r.Status == AnswerMeasured {
				others = true
			}
			continue
		}
		if r.Status != AnswerMeasured {
			continue
		}
		others = true
		if !r.Inside {
			if beyond[r.Component] == nil {
				order = append(order, r.Component)
			}
			beyond[r.Component] = append(beyond[r.Component], r.Mode)
		}
	}
	tail := ""
	switch {
	case len(order) > 0:
		var parts []string
		for _, c := range order {
			parts = append(parts, strings.ToLower(c[:1])+c[1:]+" ("+strings.Join(beyond[c], ", ")+")")
		}
		tail = "; what did reach beyond its node's radius: " + strings.Join(parts, "; ")
	case others:
		tail = "; no other measured component reached beyond its node's radius"
	}
	proxy := "the ambient node proxy"
	if np != nil && np.Mode == "istio-ambient" {
		proxy = "Istio's ambient node proxy (ztunnel)"
	}
	if np == nil || np.Status != AnswerMeasured {
		why := "no row"
		if np != nil {
			why = np.Reason
		}
		return "No answer from this run: the crash of " + proxy + " was not measured (" + why + ")" + tail + ".", "unanswered"
	}
	where := nodeList(np.FaultNodes)
	if np.Noisy {
		// The figures stand, but a reader must not take them as the fault's
		// alone: say so in the answer itself, not only in the row.
		tail = "; but that trial was noisy (its control flow, which no fault reaches, was disrupted, or the CPU saturated), so part of what it measured may not be the fault's doing" + tail
	}
	switch {
	case len(np.FaultNodes) == 0 && len(np.Flows) > 0:
		return "No answer from this run: the crash of " + proxy + " affected flows, but its trial names no node it was aimed at" + tail + ".", "unanswered"
	case np.Inside && len(np.Flows) == 0:
		return "No: in this run the crash of " + proxy + " on " + where + " affected no flow" + tail + ".", "inside"
	case np.Inside:
		how := "every one with an end or a crossed proxy on " + where
		if np.Rule == RuleNodeCrash {
			how += " and reached by the crash of " + where + " too"
		}
		return fmt.Sprintf("No, not beyond its own node: in this run the crash of %s on %s reached %d of %d flows, all inside %s's radius (%s)%s.",
			proxy, where, np.Affected, np.Total, where, how, tail), "inside"
	}
	return fmt.Sprintf("Yes: in this run the crash of %s on %s reached %s beyond %s's radius (%s)%s.",
		proxy, where, plural(len(np.Beyond), "flow", "flows"), where, flowList(np.Beyond), tail), "beyond"
}

// AnswerText writes the answer as plain text: the table, each row's
// sentence and the overall answer, the same as the report's first section.
func AnswerText(w io.Writer, run *results.Run) {
	at := Answer(run)
	fmt.Fprintln(w, "\n== answer: is the ambient mesh's per-node proxy a single point of failure? ==")
	if at.Empty {
		fmt.Fprintln(w, at.Overall)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tMODE\tTRIAL\tAFFECTED FLOWS\tPODS\tNODES\tINSIDE ITS NODE'S RADIUS\tDISRUPTION S PER AFFECTED POD")
	for _, r := range at.Rows {
		if r.Status != AnswerMeasured {
			// The reason is in the row's sentence below: a long reason in a
			// column would widen the whole table.
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\n", r.Component, r.Mode, strings.ReplaceAll(r.Status, "-", " "))
			continue
		}
		trial := fmt.Sprintf("%s #%d %s", r.Scenario, r.Trial, r.Verdict)
		if r.Trials > 1 {
			trial += fmt.Sprintf(" (worst of %d)", r.Trials)
		}
		inside := r.Containment() + ", " + nodeList(r.FaultNodes) + ", rule " + r.Rule
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\t%.2f\n", r.Component, r.Mode, trial, r.Affected, r.Total, r.Pods, r.Nodes, inside, r.DisruptionPerPod)
	}
	tw.Flush()
	for _, r := range at.Rows {
		fmt.Fprintln(w, "  "+r.Sentence)
	}
	fmt.Fprintln(w, "answer: "+at.Overall)
}
