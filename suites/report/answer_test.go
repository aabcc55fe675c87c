package report

import (
	"math"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/chromedp/chromedp"

	"blastradius.dev/blastradius/framework/results"
)

// answerRow is one row of the report's answer table as the browser shows
// it: the row's data attributes and, per data-col cell, its rendered text.
type answerRow struct {
	Row        string            `json:"row"`
	Mode       string            `json:"mode"`
	Status     string            `json:"status"`
	Fault      string            `json:"fault"`
	Scenario   string            `json:"scenario"`
	Trial      string            `json:"trial"`
	Cells      map[string]string `json:"cells"`
	Inside     string            `json:"inside"`
	Rule       string            `json:"rule"`
	FaultNodes string            `json:"faultNodes"`
}

const answerRowsJS = `[...document.querySelectorAll("#answer tr[data-row]")].map(tr => {
	const cells = {};
	for (const c of tr.querySelectorAll("[data-col]")) cells[c.dataset.col] = c.innerText.trim();
	const ins = tr.querySelector('[data-col="inside"]');
	return {row: tr.dataset.row, mode: tr.dataset.mode, status: tr.dataset.status, fault: tr.dataset.fault,
		scenario: tr.dataset.scenario, trial: tr.dataset.trial || "", cells,
		inside: ins ? ins.dataset.value : "", rule: ins ? ins.dataset.rule || "" : "", faultNodes: ins ? ins.dataset.faultNodes || "" : ""};
})`

// rowKinds is the fault kinds each answer row may be measured with,
// written out here rather than taken from the reports package so that the
// test does not grade the code with itself.
var rowKinds = map[string][]string{
	"node-proxy":    {"node-proxy-crash"},
	"node-agent":    {"node-agent-crash"},
	"control-plane": {"controlplane-crash"},
	"cert-expiry":   {"controlplane-down"},
	"waypoint":      {"waypoint-all-killed", "waypoint-replica-kill"},
	"sidecar":       {"sidecar-crash"},
	"node":          {"node-crash"},
}

// answerInBrowser opens the run's report and checks its answer section
// against run.json: it is the page's first section, and every row shows
// the affected flows / total of its trial's verdict, the pods and nodes of
// its trial's radius, the disruption per affected pod and a containment
// that follows from the trial's flows; rows without a measured trial say
// why. The rows this run must have (node crash in none and ambient, node
// proxy crash in ambient) are measured.
func answerInBrowser(t tb, rr *realRun) {
	ctx, cancel := offlineBrowser(rr.chrome)
	defer cancel()
	abs, err := filepath.Abs(rr.page)
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate((&url.URL{Scheme: "file", Path: abs}).String())); err != nil {
		t.Fatalf("open %s: %v", abs, err)
	}
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector("main > section") || {}).id || ""`))
	if err != nil {
		t.Fatal(err)
	}
	if first != "answer" {
		t.Errorf("the report's first section is %q, want the answer", first)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]answerRow](answerRowsJS))
	if err != nil {
		t.Fatalf("read the answer rows: %v", err)
	}
	overall, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[document.querySelector("#answer").dataset.outcome, document.querySelector("#answer .answer-overall").innerText]`))
	if err != nil {
		t.Fatalf("read the overall answer: %v", err)
	}
	shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.ID("answer")))
	if err != nil {
		t.Errorf("screenshot of the answer: %v", err)
	} else {
		t.Logf("answer screenshot: %s", artifact(t, "answer.png", shot))
	}
	if i := strings.Index(rr.output, "== answer"); i >= 0 {
		text := rr.output[i:]
		if j := strings.Index(text, "\nrun "); j >= 0 {
			text = text[:j+1]
		}
		t.Logf("the answer as the run printed it (%s):\n%s", artifact(t, "answer.txt", []byte(text)), text)
	} else {
		t.Errorf("blastradius run printed no answer:\n%s", rr.output)
	}

	run := rr.run
	seen := map[string]bool{}
	var proxyInside string
	for _, r := range rows {
		key := r.Row + "/" + r.Mode
		if seen[key] {
			t.Errorf("answer row %s twice", key)
		}
		seen[key] = true
		kinds, ok := rowKinds[r.Row]
		if !ok {
			t.Errorf("answer row %s: unknown row", key)
			continue
		}
		if !slices.Contains(kinds, r.Fault) {
			t.Errorf("answer row %s: fault %s, want one of %v", key, r.Fault, kinds)
		}
		if r.Status != "measured" {
			checkUnmeasuredRow(t, run, r, kinds)
			continue
		}
		idx, _ := strconv.Atoi(r.Trial)
		tr := findTrial(run, r.Scenario, r.Mode, idx)
		if tr == nil || tr.Verdict == nil || tr.Summary == nil {
			t.Errorf("answer row %s shows %s #%s, which run.json has no measured trial of", key, r.Scenario, r.Trial)
			continue
		}
		if tr.Fault != r.Fault {
			t.Errorf("answer row %s: trial %s #%d has fault %s, the row says %s", key, tr.Scenario, tr.Index, tr.Fault, r.Fault)
		}
		v, rad := tr.Verdict, tr.Summary.Radius
		want := map[string]string{
			"flows": strconv.Itoa(v.Affected) + "/" + strconv.Itoa(v.Total),
			"pods":  strconv.Itoa(len(rad.Pods)),
			"nodes": strconv.Itoa(len(rad.Nodes)),
		}
		for col, w := range want {
			if got := r.Cells[col]; got != w {
				t.Errorf("answer row %s, %s: the browser shows %q, run.json says %q", key, col, got, w)
			}
		}
		perPod := 0.0
		if len(rad.Pods) > 0 {
			perPod = v.DisruptionSeconds / float64(len(rad.Pods))
		}
		if got, err := strconv.ParseFloat(strings.TrimSuffix(r.Cells["disruption"], " s"), 64); err != nil || math.Abs(got-perPod) > 0.005 {
			t.Errorf("answer row %s, disruption per affected pod: the browser shows %q, run.json gives %.3f", key, r.Cells["disruption"], perPod)
		}
		if got := strings.Join(v.FaultNodes, " "); r.FaultNodes != got {
			t.Errorf("answer row %s: fault nodes %q, run.json says %q", key, r.FaultNodes, got)
		}
		inside, rule := containment(run, tr, r.Row != "node")
		shown := strings.SplitN(r.Cells["inside"], "\n", 2)[0]
		if shown != inside || r.Inside != inside || r.Rule != rule {
			t.Errorf("answer row %s, inside its node's radius: the browser shows %q (%s, rule %s), run.json gives %q by rule %s",
				key, shown, r.Inside, r.Rule, inside, rule)
		}
		if r.Cells["sentence"] == "" {
			t.Errorf("answer row %s has no sentence", key)
		}
		if key == "node-proxy/ambient" {
			proxyInside = inside
		}
	}
	for _, key := range []string{"node/none", "node/ambient", "node-proxy/ambient"} {
		found := false
		for _, r := range rows {
			if r.Row+"/"+r.Mode == key {
				found = true
				if r.Status != "measured" {
					t.Errorf("answer row %s is %s (%s); this run measured it", key, r.Status, r.Cells["sentence"])
				}
			}
		}
		if !found {
			t.Errorf("no answer row %s", key)
		}
	}
	if len(overall) != 2 || overall[1] == "" {
		t.Fatalf("no overall answer: %q", overall)
	}
	t.Logf("overall answer (%s): %s", overall[0], overall[1])
	switch {
	case proxyInside == "yes" && overall[0] != "inside", proxyInside == "no" && overall[0] != "beyond":
		t.Errorf("the node proxy's row says inside=%s, the overall answer's outcome is %s", proxyInside, overall[0])
	}
}

func findTrial(run *results.Run, scenario, mode string, index int) *results.Trial {
	for _, t := range run.Trials {
		if t != nil && t.Scenario == scenario && t.Mode == mode && t.Index == index {
			return t
		}
	}
	return nil
}

// checkUnmeasuredRow: run.json indeed has no measured trial of the row's
// faults in its mode, and a skipped or errored one's reason is shown.
func checkUnmeasuredRow(t tb, run *results.Run, r answerRow, kinds []string) {
	key := r.Row + "/" + r.Mode
	for _, tr := range run.Trials {
		if tr == nil || tr.Mode != r.Mode || !slices.Contains(kinds, tr.Fault) {
			continue
		}
		if tr.Verdict != nil && (tr.Status == results.StatusDone || tr.Status == results.StatusFailed) && r.Row != "cert-expiry" {
			t.Errorf("answer row %s says %s, but run.json has %s #%d measured", key, r.Status, tr.Scenario, tr.Index)
		}
		if (tr.Status == results.StatusSkipped || tr.Status == results.StatusError) && tr.Error != "" && r.Status == tr.Status &&
			!strings.Contains(r.Cells["sentence"], tr.Error) {
			t.Errorf("answer row %s does not give the trial's reason %q: %q", key, tr.Error, r.Cells["sentence"])
		}
	}
	if r.Cells["sentence"] == "" {
		t.Errorf("answer row %s (%s) says nothing", key, r.Status)
	}
}

// containment works out from run.json whether a trial's affected flows
// (its radius, less the isolated single failures) all have an end on a
// fault node and, when withCrash and the run measured a crash of those
// nodes in the same mode, were all reached by that crash too.
func containment(run *results.Run, tr *results.Trial, withCrash bool) (inside, rule string) {
	affected := func(t *results.Trial) []string {
		var out []string
		for _, f := range t.Summary.Radius.Flows {
			if !slices.Contains(t.Verdict.Isolated, f) {
				out = append(out, f)
			}
		}
		return out
	}
	fn := tr.Verdict.FaultNodes
	var crash map[string]bool
	if withCrash && len(fn) > 0 {
		for _, c := range run.Trials {
			if c == nil || c.Mode != tr.Mode || c.Fault != "node-crash" || c.Verdict == nil || c.Summary == nil ||
				(c.Status != results.StatusDone && c.Status != results.StatusFailed) {
				continue
			}
			covers := true
			for _, n := range fn {
				covers = covers && slices.Contains(c.Verdict.FaultNodes, n)
			}
			if !covers {
				continue
			}
			if crash == nil {
				crash = map[string]bool{}
			}
			for _, f := range affected(c) {
				crash[f] = true
			}
		}
	}
	rule = "node-flows"
	if crash != nil {
		rule = "node-flows+node-crash"
	}
	for _, id := range affected(tr) {
		onNode := false
		for _, f := range tr.Summary.Flows {
			if f.Flow.ID == id {
				onNode = slices.Contains(fn, f.Flow.ClientNode) || slices.Contains(fn, f.Flow.ServerNode)
			}
		}
		if !onNode || (crash != nil && !crash[id]) {
			return "no", rule
		}
	}
	return "yes", rule
}
