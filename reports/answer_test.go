package reports

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// flowID is the ID of the pod flow from node c to node s.
func flowID(c, s int) string { return fmt.Sprintf("n%d-to-n%d.pod.http-newconn", c, s) }

// answerTrial is a measured trial on three nodes: one pod flow per ordered
// node pair and a control flow; the flows in affected failed, each with 2
// disruption-seconds. The verdict is worked out the way
// framework/scenario does, from the fault nodes.
func answerTrial(sc, kind, mode string, index int, faultNodes []string, affected ...string) *results.Trial {
	tr := &results.Trial{Scenario: sc, Fault: kind, Mode: mode, Index: index, Status: results.StatusDone,
		Dir: fmt.Sprintf("%s-%s-%d", sc, mode, index), Started: t0,
		Topology: results.Topology{Nodes: []string{"node-1", "node-2", "node-3"}},
		Summary:  &measure.Trial{},
		Verdict:  &results.Verdict{FaultNodes: faultNodes, Value: "no-impact"}}
	var metas []measure.FlowMeta
	for c := 1; c <= 3; c++ {
		for s := 1; s <= 3; s++ {
			metas = append(metas, measure.FlowMeta{ID: flowID(c, s), Client: fmt.Sprintf("client-n%d", c), Server: fmt.Sprintf("server-n%d", s),
				ClientNode: fmt.Sprintf("node-%d", c), ServerNode: fmt.Sprintf("node-%d", s), Via: "pod", Profile: "http-newconn"})
		}
	}
	metas = append(metas, measure.FlowMeta{ID: "control.pod.http-keepalive", Client: "ctl-client", Server: "ctl-server",
		ClientNode: "node-1", ServerNode: "node-1", Control: true})
	for _, m := range metas {
		fs := measure.FlowSummary{Flow: m}
		if slices.Contains(affected, m.ID) {
			fs.Affected, fs.DisruptionSeconds = true, 2
			tr.Verdict.Affected++
			tr.Verdict.DisruptionSeconds += 2
			if !slices.Contains(faultNodes, m.ClientNode) && !slices.Contains(faultNodes, m.ServerNode) {
				tr.Verdict.Beyond = append(tr.Verdict.Beyond, m.ID)
			}
		}
		tr.Summary.Flows = append(tr.Summary.Flows, fs)
		tr.Flows = append(tr.Flows, results.FlowRef{FlowMeta: m})
	}
	tr.Summary.Radius = measure.Radius(tr.Summary.Flows)
	tr.Verdict.Total = len(metas)
	switch {
	case len(tr.Verdict.Beyond) > 0:
		tr.Verdict.Value = "cluster-wide"
	case tr.Verdict.Affected > 0:
		tr.Verdict.Value = "contained"
	}
	return tr
}

// toNode3 is every pod flow with an end on node-3.
var toNode3 = []string{flowID(1, 3), flowID(2, 3), flowID(3, 1), flowID(3, 2), flowID(3, 3)}

func answerRun(modes string, trials ...*results.Trial) *results.Run {
	return &results.Run{SchemaVersion: results.SchemaVersion, ID: "answer", Status: results.StatusDone,
		Environment: results.Environment{Mode: modes}, Trials: trials}
}

func rowOf(t *testing.T, at AnswerTable, row, mode string) AnswerRow {
	t.Helper()
	for _, r := range at.Rows {
		if r.Row == row && r.Mode == mode {
			return r
		}
	}
	t.Fatalf("no answer row %s/%s in %v", row, mode, keys(at))
	return AnswerRow{}
}

func keys(at AnswerTable) []string {
	var out []string
	for _, r := range at.Rows {
		out = append(out, r.Row+"/"+r.Mode)
	}
	return out
}

func TestAnswerContained(t *testing.T) {
	run := answerRun("ambient",
		answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, toNode3...),
		answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3), flowID(3, 1), flowID(3, 3)),
	)
	at := Answer(run)
	r := rowOf(t, at, "node-proxy", "ambient")
	if r.Status != AnswerMeasured || !r.Inside || r.Rule != RuleNodeCrash || len(r.Beyond) != 0 {
		t.Fatalf("node-proxy row: status %s inside %v rule %s beyond %v, want measured, inside by the node-crash rule", r.Status, r.Inside, r.Rule, r.Beyond)
	}
	// 3 of 10 flows; pods client-n1, client-n3, server-n1, server-n3; nodes 1 and 3.
	if r.Affected != 3 || r.Total != 10 || r.Pods != 4 || r.Nodes != 2 {
		t.Errorf("figures %d/%d flows, %d pods, %d nodes; want 3/10, 4, 2", r.Affected, r.Total, r.Pods, r.Nodes)
	}
	if r.DisruptionPerPod != 1.5 {
		t.Errorf("disruption per pod %v, want 6 s / 4 pods = 1.5", r.DisruptionPerPod)
	}
	if !slices.Equal(r.NodeCrash, []string{"node-crash #1"}) {
		t.Errorf("node-crash reference %v", r.NodeCrash)
	}
	want := "Node proxy crash (ambient): 3 of 10 flows, 4 pods, 2 nodes affected — all with an end or a crossed proxy on node-3 and all reached by the crash of node-3 too: inside node-3's radius; 1.50 s of disruption per affected pod."
	if r.Sentence != want {
		t.Errorf("sentence\n got %s\nwant %s", r.Sentence, want)
	}
	if at.Outcome != "inside" || !strings.HasPrefix(at.Overall, "No, not beyond its own node: in this run the crash of the ambient node proxy on node-3 reached 3 of 10 flows") {
		t.Errorf("overall %q (%s)", at.Overall, at.Outcome)
	}
	// The node row is the yardstick: judged by its own flows only.
	if n := rowOf(t, at, "node", "ambient"); !n.Inside || n.Rule != RuleNodeFlows || n.Affected != 5 {
		t.Errorf("node row: inside %v rule %s affected %d", n.Inside, n.Rule, n.Affected)
	}
}

func TestAnswerClusterWide(t *testing.T) {
	run := answerRun("ambient",
		answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3), flowID(1, 2)),
		answerTrial("cert-expiry", "controlplane-down", "ambient", 1, []string{"node-1"}, flowID(1, 2), flowID(2, 2), flowID(2, 3)),
	)
	at := Answer(run)
	r := rowOf(t, at, "node-proxy", "ambient")
	if r.Inside || !slices.Equal(r.Beyond, []string{flowID(1, 2)}) || r.Rule != RuleNodeFlows {
		t.Fatalf("node-proxy row: inside %v beyond %v rule %s; want outside because of %s by the node-flows rule", r.Inside, r.Beyond, r.Rule, flowID(1, 2))
	}
	if !strings.Contains(r.Sentence, "1 with no end and no crossed proxy on node-3 (n1-to-n2.pod.http-newconn): beyond node-3's radius") {
		t.Errorf("sentence %q", r.Sentence)
	}
	c := rowOf(t, at, "cert-expiry", "ambient")
	if c.Status != AnswerMeasured || c.Inside || !slices.Equal(c.Beyond, []string{flowID(2, 2), flowID(2, 3)}) {
		t.Errorf("cert-expiry row: %s inside %v beyond %v", c.Status, c.Inside, c.Beyond)
	}
	if at.Outcome != "beyond" || !strings.HasPrefix(at.Overall, "Yes: in this run the crash of the ambient node proxy on node-3 reached 1 flow beyond node-3's radius") ||
		!strings.Contains(at.Overall, "control plane down past the certificate TTL (ambient)") {
		t.Errorf("overall %q (%s)", at.Overall, at.Outcome)
	}
}

// A flow with an end or a crossed proxy on the node still counts as beyond when a measured
// crash of that node did not reach it: the crash is the node's radius.
func TestAnswerNodeCrashRule(t *testing.T) {
	np := answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3), flowID(3, 3))
	run := answerRun("ambient", np,
		answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3)))
	r := rowOf(t, Answer(run), "node-proxy", "ambient")
	if r.Inside || r.Rule != RuleNodeCrash || !slices.Equal(r.Beyond, []string{flowID(3, 3)}) || len(r.OffNode) != 0 {
		t.Fatalf("inside %v rule %s beyond %v off-node %v", r.Inside, r.Rule, r.Beyond, r.OffNode)
	}
	if !strings.Contains(r.Sentence, "1 the crash of node-3 did not reach (n3-to-n3.pod.http-newconn)") {
		t.Errorf("sentence %q", r.Sentence)
	}
	// A crash of another node is no yardstick for node-3: the rule falls
	// back to the node's flows, and both flows have an end on node-3.
	run = answerRun("ambient", np, answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-2"}, flowID(1, 2)))
	if r := rowOf(t, Answer(run), "node-proxy", "ambient"); !r.Inside || r.Rule != RuleNodeFlows {
		t.Errorf("with a crash of node-2 only: inside %v rule %s, want inside by %s", r.Inside, r.Rule, RuleNodeFlows)
	}
	// A crash in another mode is not the yardstick either.
	run = answerRun("sidecar,ambient", np, answerTrial("node-crash", "node-crash", "sidecar", 1, []string{"node-3"}))
	if r := rowOf(t, Answer(run), "node-proxy", "ambient"); r.Rule != RuleNodeFlows {
		t.Errorf("with a sidecar-mode crash only: rule %s", r.Rule)
	}
}

// Isolated single failures (docs/verdict.md) do not move a fault out of
// its node's radius.
func TestAnswerIgnoresIsolated(t *testing.T) {
	tr := answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3), flowID(1, 2))
	tr.Verdict.Isolated = []string{flowID(1, 2)}
	tr.Verdict.Affected, tr.Verdict.Beyond, tr.Verdict.Value = 1, nil, "contained"
	r := rowOf(t, Answer(answerRun("ambient", tr)), "node-proxy", "ambient")
	if !r.Inside || !slices.Equal(r.Flows, []string{flowID(1, 3)}) {
		t.Errorf("inside %v flows %v, want inside with only %s", r.Inside, r.Flows, flowID(1, 3))
	}
}

func TestAnswerMissingRows(t *testing.T) {
	run := answerRun("none", answerTrial("node-crash", "node-crash", "none", 1, []string{"node-3"}, toNode3...))
	at := Answer(run)
	r := rowOf(t, at, "node-proxy", "ambient")
	if r.Status != AnswerNotRun || r.Reason != "this run did not include mode ambient" {
		t.Errorf("node-proxy row: %s %q", r.Status, r.Reason)
	}
	if r.Sentence != "Node proxy crash (ambient): not run — this run did not include mode ambient." {
		t.Errorf("sentence %q", r.Sentence)
	}
	if n := rowOf(t, at, "node", "none"); n.Status != AnswerMeasured {
		t.Errorf("node row in none: %s", n.Status)
	}
	if at.Outcome != "unanswered" || !strings.HasPrefix(at.Overall, "No answer from this run: the crash of the ambient node proxy was not measured (this run did not include mode ambient)") {
		t.Errorf("overall %q (%s)", at.Overall, at.Outcome)
	}
	// The mode ran, the fault did not.
	run = answerRun("ambient", answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, toNode3...))
	if r := rowOf(t, Answer(run), "node-agent", "ambient"); r.Status != AnswerNotRun || r.Reason != "the run has no node-agent-crash trial" {
		t.Errorf("node-agent row: %s %q", r.Status, r.Reason)
	}
	// Nothing of the answer's at all: an empty section, one sentence.
	if at := Answer(answerRun("none")); !at.Empty || at.Outcome != "unanswered" {
		t.Errorf("empty run: empty %v outcome %s", at.Empty, at.Outcome)
	}
}

func TestAnswerSkippedErrorInterrupted(t *testing.T) {
	const why = "fault node-proxy-crash needs a node proxy, which provider kind cannot crash"
	run := answerRun("sidecar,ambient",
		&results.Trial{Scenario: "node-proxy-crash", Fault: "node-proxy-crash", Mode: "ambient", Index: 1, Status: results.StatusSkipped, Error: why},
		&results.Trial{Scenario: "controlplane-crash", Fault: "controlplane-crash", Mode: "sidecar", Index: 1, Status: results.StatusError, Error: "bring-up: node-2 did not become ready"},
		&results.Trial{Scenario: "controlplane-crash", Fault: "controlplane-crash", Mode: "ambient", Index: 1, Status: results.StatusInterrupted},
	)
	at := Answer(run)
	r := rowOf(t, at, "node-proxy", "ambient")
	if r.Status != AnswerSkipped || r.Reason != why || !strings.Contains(r.Sentence, "skipped — "+why) {
		t.Errorf("skipped row: %s %q %q", r.Status, r.Reason, r.Sentence)
	}
	if !strings.Contains(at.Overall, why) {
		t.Errorf("overall %q lacks the skip reason", at.Overall)
	}
	if r := rowOf(t, at, "control-plane", "sidecar"); r.Status != AnswerError || r.Reason != "bring-up: node-2 did not become ready" {
		t.Errorf("errored row: %s %q", r.Status, r.Reason)
	}
	if r := rowOf(t, at, "control-plane", "ambient"); r.Status != AnswerIncomplete {
		t.Errorf("interrupted row: %s %q", r.Status, r.Reason)
	}
}

// Rows come in a fixed order, each component in the modes it exists in,
// side by side.
func TestAnswerSideBySide(t *testing.T) {
	run := answerRun("none,sidecar,ambient",
		answerTrial("controlplane-crash", "controlplane-crash", "sidecar", 1, []string{"node-1"}),
		answerTrial("controlplane-crash", "controlplane-crash", "ambient", 1, []string{"node-1"}),
		answerTrial("sidecar-crash", "sidecar-crash", "sidecar", 1, []string{"node-3"}, flowID(1, 3), flowID(3, 3)),
		answerTrial("node-crash", "node-crash", "none", 1, []string{"node-3"}, toNode3...),
		answerTrial("node-crash", "node-crash", "sidecar", 1, []string{"node-3"}, toNode3...),
		answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, toNode3...),
	)
	at := Answer(run)
	want := []string{"node-proxy/ambient", "node-agent/ambient", "control-plane/sidecar", "control-plane/ambient",
		"cert-expiry/sidecar", "cert-expiry/ambient", "waypoint/ambient", "sidecar/sidecar", "node/none", "node/sidecar", "node/ambient"}
	if got := keys(at); !slices.Equal(got, want) {
		t.Errorf("rows %v\nwant %v", got, want)
	}
	for _, m := range []string{"sidecar", "ambient"} {
		r := rowOf(t, at, "control-plane", m)
		if r.Status != AnswerMeasured || !r.Inside || r.Affected != 0 || r.DisruptionPerPod != 0 ||
			!strings.Contains(r.Sentence, "nothing affected: inside node-1's radius; no pod affected, 0 s of disruption per affected pod") {
			t.Errorf("control plane in %s: %+v", m, r)
		}
	}
	// The sidecar crash is compared with the crash of the same node in
	// the same mode.
	if r := rowOf(t, at, "sidecar", "sidecar"); !r.Inside || r.Rule != RuleNodeCrash || !slices.Equal(r.NodeCrash, []string{"node-crash #1"}) {
		t.Errorf("sidecar row: inside %v rule %s against %v", r.Inside, r.Rule, r.NodeCrash)
	}
}

func TestAnswerMultipleTrials(t *testing.T) {
	nc := answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, toNode3...)
	t1 := answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3))
	t2 := answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 2, []string{"node-3"}, flowID(1, 3), flowID(2, 1))
	t3 := answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 3, []string{"node-3"}, toNode3...)
	r := rowOf(t, Answer(answerRun("ambient", nc, t1, t2, t3)), "node-proxy", "ambient")
	// Trial 2 reached beyond node-3: it is the one shown, whatever the
	// other two affected.
	if r.Trial != 2 || r.Trials != 3 || r.Inside || r.Verdicts["contained"] != 2 || r.Verdicts["cluster-wide"] != 1 {
		t.Errorf("picked trial %d of %d, inside %v, verdicts %v; want trial 2 of 3, outside, contained×2 cluster-wide×1", r.Trial, r.Trials, r.Inside, r.Verdicts)
	}
	if !strings.HasPrefix(r.Sentence, "Node proxy crash (ambient, worst of 3 trials): 2 of 10 flows") {
		t.Errorf("sentence %q", r.Sentence)
	}
	// All inside: the one that affected the most flows.
	r = rowOf(t, Answer(answerRun("ambient", nc, t1, t3)), "node-proxy", "ambient")
	if r.Trial != 3 || !r.Inside || r.Affected != 5 {
		t.Errorf("picked trial %d inside %v affected %d, want trial 3 with 5", r.Trial, r.Inside, r.Affected)
	}
	// An errored trial next to measured ones does not hide them.
	bad := &results.Trial{Scenario: "node-proxy-crash", Fault: "node-proxy-crash", Mode: "ambient", Index: 4, Status: results.StatusError, Error: "boom"}
	if r := rowOf(t, Answer(answerRun("ambient", t1, bad)), "node-proxy", "ambient"); r.Status != AnswerMeasured || r.Trials != 1 {
		t.Errorf("with an errored trial: %s over %d trials", r.Status, r.Trials)
	}
}

// A noisy trial measured more than the fault: it is shown only when every
// trial was noisy, and then the answer says so.
func TestAnswerNoisyTrials(t *testing.T) {
	nc := answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, toNode3...)
	noisy := answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3), flowID(1, 1), "control.pod.http-keepalive")
	noisy.Noisy, noisy.NoisyReasons = true, []string{"control flow control.pod.http-keepalive was disrupted"}
	quiet := answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 2, []string{"node-3"}, flowID(1, 3))
	at := Answer(answerRun("ambient", nc, noisy, quiet))
	if r := rowOf(t, at, "node-proxy", "ambient"); r.Trial != 2 || !r.Inside || r.Trials != 2 {
		t.Errorf("picked trial %d (inside %v) of %d, want the quiet trial 2", r.Trial, r.Inside, r.Trials)
	}
	if strings.Contains(at.Overall, "noisy") {
		t.Errorf("overall mentions noise although the trial shown is quiet: %q", at.Overall)
	}
	at = Answer(answerRun("ambient", nc, noisy))
	r := rowOf(t, at, "node-proxy", "ambient")
	if r.Trial != 1 || r.Inside || !r.Noisy || !strings.Contains(r.Sentence, "noisy") {
		t.Errorf("only a noisy trial: trial %d inside %v noisy %v sentence %q", r.Trial, r.Inside, r.Noisy, r.Sentence)
	}
	if at.Outcome != "beyond" || !strings.Contains(at.Overall, "but that trial was noisy") {
		t.Errorf("overall %q (%s) does not warn that its trial was noisy", at.Overall, at.Outcome)
	}
}

// With two scenarios of one fault kind, the catalogue's own is shown.
func TestAnswerPrefersCatalogueScenario(t *testing.T) {
	scale := answerTrial("scale", "node-crash", "ambient", 1, []string{"node-3"}, flowID(1, 2))
	own := answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, toNode3...)
	r := rowOf(t, Answer(answerRun("ambient", scale, own)), "node", "ambient")
	if r.Scenario != "node-crash" || !r.Inside {
		t.Errorf("scenario %s inside %v, want node-crash, inside", r.Scenario, r.Inside)
	}
	r = rowOf(t, Answer(answerRun("ambient", scale)), "node", "ambient")
	if r.Scenario != "scale" || r.Inside {
		t.Errorf("scenario %s inside %v, want scale (the only one), outside", r.Scenario, r.Inside)
	}
}

func TestAnswerWaypointChoice(t *testing.T) {
	kill := answerTrial("waypoint-replica-kill", "waypoint-replica-kill", "ambient", 1, []string{"node-2"}, flowID(1, 3))
	all := answerTrial("waypoint-all-killed", "waypoint-all-killed", "ambient", 1, []string{"node-1", "node-2"}, flowID(1, 3), flowID(3, 3))
	r := rowOf(t, Answer(answerRun("ambient", kill)), "waypoint", "ambient")
	if r.Fault != "waypoint-replica-kill" || r.Component != "Waypoint, one replica killed" || r.Inside {
		t.Errorf("replica kill only: %s %q inside %v", r.Fault, r.Component, r.Inside)
	}
	r = rowOf(t, Answer(answerRun("ambient", kill, all)), "waypoint", "ambient")
	if r.Fault != "waypoint-all-killed" || r.Component != "Waypoint, all replicas killed" {
		t.Errorf("both: %s %q", r.Fault, r.Component)
	}
	// n3-to-n3 has no end on node-1 or node-2: unless the verdict saw it
	// cross a waypoint replica there, the waypoint's failure reached past
	// the nodes it runs on.
	if r.Inside || !slices.Equal(r.Beyond, []string{flowID(3, 3)}) || !strings.Contains(r.Sentence, "node-1 and node-2") {
		t.Errorf("all killed: inside %v beyond %v sentence %q", r.Inside, r.Beyond, r.Sentence)
	}
	// The verdict counts the waypoint replicas a flow crosses among its
	// nodes (docs/verdict.md): a flow through the waypoint is on the
	// waypoint's nodes, as a crash of those nodes would reach it too.
	all.Verdict.Beyond, all.Verdict.Value = nil, "contained"
	r = rowOf(t, Answer(answerRun("ambient", kill, all)), "waypoint", "ambient")
	if !r.Inside || len(r.Beyond) != 0 {
		t.Errorf("all killed, flows crossing the waypoint: inside %v beyond %v", r.Inside, r.Beyond)
	}
	// A measured replica kill beats an all-killed trial that was skipped.
	skipped := &results.Trial{Scenario: "waypoint-all-killed", Fault: "waypoint-all-killed", Mode: "ambient", Status: results.StatusSkipped, Error: "no waypoints"}
	if r := rowOf(t, Answer(answerRun("ambient", skipped, kill)), "waypoint", "ambient"); r.Fault != "waypoint-replica-kill" || r.Status != AnswerMeasured {
		t.Errorf("skipped all-killed, measured kill: %s %s", r.Fault, r.Status)
	}
}

func TestAnswerCertExpiryByTTL(t *testing.T) {
	down := func(name string, expiry time.Duration) *results.Trial {
		tr := answerTrial(name, "controlplane-down", "ambient", 1, []string{"node-1"}, flowID(2, 2))
		tr.Window = &results.Window{Start: t0, End: at(16 * time.Second)}
		rec := at(12 * time.Second)
		tr.Faults = []results.FaultRecord{{Kind: "controlplane-down", Target: "controlplane", Inject: at(4 * time.Second), Recover: &rec}}
		tr.CertExpiries = map[string]time.Time{"spiffe://cluster.local/ns/default/sa/client-n2": at(expiry)}
		return tr
	}
	// Certificates expired during the outage: this row, whatever its name.
	if r := rowOf(t, Answer(answerRun("ambient", down("long-outage", 10*time.Second))), "cert-expiry", "ambient"); r.Status != AnswerMeasured || r.Scenario != "long-outage" {
		t.Errorf("outage past the TTL: %s %s", r.Status, r.Scenario)
	}
	// They outlived it: the controlplane-down scenario's question, not this row's.
	if r := rowOf(t, Answer(answerRun("ambient", down("controlplane-down", time.Hour))), "cert-expiry", "ambient"); r.Status != AnswerNotRun {
		t.Errorf("outage within the TTL: %s %s", r.Status, r.Scenario)
	}
}

func TestAnswerHTML(t *testing.T) {
	run := answerRun("none,ambient",
		answerTrial("node-crash", "node-crash", "none", 1, []string{"node-3"}, toNode3...),
		answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, toNode3...),
		answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3), flowID(3, 3)),
		&results.Trial{Scenario: "node-proxy-crash", Fault: "node-proxy-crash", Mode: "none", Index: 1, Status: results.StatusSkipped, Error: "only ambient mode has a node proxy"},
	)
	out := renderHTML(t, run, HTMLOptions{})
	checkPage(t, out)
	a, s := strings.Index(out, `<section id="answer"`), strings.Index(out, `<section id="summary"`)
	if a < 0 || s < 0 || a > s {
		t.Fatalf("the answer section (at %d) must come before the verdicts (at %d)", a, s)
	}
	if h := strings.Index(out, "</header>"); h > a {
		t.Errorf("the answer section starts inside the header")
	}
	for _, want := range []string{
		`<section id="answer" data-outcome="inside">`,
		`<tr data-row="node-proxy" data-mode="ambient" data-status="measured" data-fault="node-proxy-crash" data-scenario="node-proxy-crash" data-trial="1">`,
		`<td data-col="flows" data-affected="2" data-total="10">2/10</td>`,
		`<td data-col="pods" data-value="3">3</td>`, // client-n1, client-n3, server-n3
		`<td data-col="nodes" data-value="2">2</td>`,
		`<td data-col="inside" data-value="yes" data-rule="node-flows+node-crash" data-fault-nodes="node-3"><strong>yes</strong>`,
		`<td data-col="disruption" data-value="1.333">1.33 s</td>`, // 4 s over 3 pods
		`<a href="#t-node-proxy-crash-ambient-1">node-proxy-crash #1</a>`,
		`<tr data-row="node" data-mode="none" data-status="measured"`,
		`<tr data-row="sidecar" data-mode="sidecar" data-status="not-run"`,
		`class="na" data-col="sentence">Sidecar crash (sidecar): not run — this run did not include mode sidecar.</td>`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %s", want)
		}
	}
	// The node-proxy fault does not exist in mode none: no row for it.
	if strings.Contains(out, `data-row="node-proxy" data-mode="none"`) {
		t.Error("a node-proxy row in mode none, which has no node proxy")
	}
	// One rowspan per component, covering its modes.
	if !strings.Contains(out, `<th scope="rowgroup" rowspan="3" data-col="component">Node crash`) {
		t.Error("the node crash's three modes are not grouped under one heading")
	}
}

func TestAnswerText(t *testing.T) {
	run := answerRun("ambient",
		answerTrial("node-crash", "node-crash", "ambient", 1, []string{"node-3"}, toNode3...),
		answerTrial("node-proxy-crash", "node-proxy-crash", "ambient", 1, []string{"node-3"}, flowID(1, 3), flowID(3, 3)),
	)
	var b bytes.Buffer
	AnswerText(&b, run)
	out := b.String()
	at := Answer(run)
	for _, want := range []string{
		"== answer: is the ambient mesh's per-node proxy a single point of failure? ==",
		"node-proxy-crash #1 contained",
		"2/10",
		"yes, node-3, rule node-flows+node-crash",
		"Sidecar crash                                sidecar  not run",
		"  " + rowOf(t, at, "node-proxy", "ambient").Sentence + "\n",
		"answer: " + at.Overall + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text answer lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	AnswerText(&b, answerRun("none"))
	if n := strings.Count(b.String(), "\n"); n != 3 {
		t.Errorf("a run with nothing to answer printed %d lines, want the heading and one sentence:\n%s", n, b.String())
	}
}
