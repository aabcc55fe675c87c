package reports

// The HTML report's tests. The golden test compares the STRUCTURE of the
// report of a recorded run (testdata/small/run.json, recorded from
// testdata/small-node-crash.yaml) with testdata/small.outline.golden: headings,
// section ids, tables and their sizes, and per SVG the counts of flow rows,
// shaded outages by class, failure runs and fault markers. Numbers in text
// are normalised to '#', so a wording change in a figure does not churn the
// golden file but a lost section, outage or marker does.
//
// After an intended change to the report, refresh the golden file with
//
//	go test ./reports -run TestHTMLGolden -update
//
// and review the diff of testdata/small.outline.golden.

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

var update = flag.Bool("update", false, "rewrite the HTML report's golden files in testdata/")

func renderHTML(t *testing.T, run *results.Run, opt HTMLOptions) string {
	t.Helper()
	var buf bytes.Buffer
	if err := HTML(&buf, run, opt); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestHTMLGolden(t *testing.T) {
	run, err := results.Load(filepath.Join("testdata", "small"))
	if err != nil {
		t.Fatal(err)
	}
	// No Dir: the event files are not checked in (they are big), and the
	// check would mark every one missing.
	out := renderHTML(t, run, HTMLOptions{})
	checkPage(t, out)
	if again := renderHTML(t, run, HTMLOptions{}); again != out {
		t.Fatal("two renderings of the same run differ: the report is not deterministic")
	}
	got := outline(t, out)
	golden := filepath.Join("testdata", "small.outline.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", golden)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (create it with: go test ./reports -run TestHTMLGolden -update)", err)
	}
	if got != string(want) {
		t.Errorf("report structure differs from %s (refresh with -update if intended):\n%s", golden, lineDiff(string(want), got))
	}
	// What the recorded run must show, whatever the golden file says: a
	// crash of node-2 breaks the flows to and from it in both modes.
	for _, want := range []string{`data-mode="none"`, `data-mode="ambient"`, `class="mk in"`, `class="mk rc"`, `class="out c-`} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %s", want)
		}
	}
}

func TestHTMLPartialRun(t *testing.T) {
	dir := t.TempDir()
	// One of the two event files of the interrupted trial exists.
	if err := os.MkdirAll(filepath.Join(dir, "02-node-crash-ambient", "flows"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "02-node-crash-ambient", "flows", "a.jsonl"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := measuredTrial("node-crash", "none", 1, 3, 60)
	done.Dir = "01-node-crash-none"
	// The summary lost a flow the trial planned.
	done.Flows = append(done.Flows, results.FlowRef{FlowMeta: measure.FlowMeta{ID: "n9-to-n9.pod.http-newconn"}})
	running := &results.Trial{Scenario: "node-crash", Fault: "node-crash", Mode: "ambient", Index: 1, Status: results.StatusRunning,
		Dir: "02-node-crash-ambient", Started: t0,
		Flows: []results.FlowRef{
			{FlowMeta: measure.FlowMeta{ID: "a"}, Events: "02-node-crash-ambient/flows/a.jsonl"},
			{FlowMeta: measure.FlowMeta{ID: "b"}, Events: "02-node-crash-ambient/flows/b.jsonl"},
		},
		Faults: []results.FaultRecord{{Kind: "node-crash", Target: "node-2", Inject: at(2 * time.Second)}}}
	run := &results.Run{SchemaVersion: results.SchemaVersion, ID: "killed", Status: results.StatusInterrupted, Started: t0,
		Trials: []*results.Trial{done, running}} // no matrix: the kill came before it was written
	out := renderHTML(t, run, HTMLOptions{Dir: dir})
	checkPage(t, out)
	for _, want := range []string{
		"Incomplete run (status interrupted)",
		"not measured: no verdict matrix in run.json",
		`data-missing="summary">not measured: the run stopped during this trial.`,
		"1 of 2 flow event files were recorded",
		`data-missing="events">no event file: b</p>`,
		`data-missing="flow">not measured: no summary for this flow`,
		"not recovered before load ended",
		`<td class="nm">not measured: no verdict yet</td>`,
		`">not measured: running</text>`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("partial report lacks %q", want)
		}
	}
	// The measured trial still has its timeline and matrix.
	if n := strings.Count(out, `<g class="fl"`); n != 3 {
		t.Errorf("%d flow rows, want the measured trial's 3", n)
	}
}

func TestHTMLEscapesNames(t *testing.T) {
	evil := `<script>alert("x")</script>&`
	tr := measuredTrial(evil, "none", 1, 2, 40)
	tr.Summary.Flows[0].Flow.ID = `f"><img src=x onerror=alert(1)>`
	tr.Expectations = []results.ExpectationResult{{Name: "<b>bold</b>", Detail: "a < b"}}
	tr.Noisy, tr.NoisyReasons = true, []string{"<i>cpu</i>"}
	tr.Faults[0].Target = `node"'<x>`
	run := &results.Run{SchemaVersion: results.SchemaVersion, ID: "<id>", Status: results.StatusDone,
		Trials: []*results.Trial{tr},
		Matrix: []results.MatrixCell{{Scenario: evil, Mode: "none", Trials: 1, Verdict: `<v>`, Total: 2}}}
	out := renderHTML(t, run, HTMLOptions{})
	checkPage(t, out)
	for _, bad := range []string{"<script", "<img", "<b>bold", "<i>cpu", "<v>", "<x>", "<id>"} {
		if strings.Contains(out, bad) {
			t.Errorf("report contains unescaped %q", bad)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;", "&lt;b&gt;bold&lt;/b&gt;: a &lt; b", `node&#34;&#39;&lt;x&gt;`} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks escaped %q", want)
		}
	}
	if !regexp.MustCompile(`id="sc-[a-z0-9_-]+"`).MatchString(out) {
		t.Error("scenario section id is not a plain slug")
	}
}

func TestHTMLMultiTrial(t *testing.T) {
	run := &results.Run{SchemaVersion: results.SchemaVersion, ID: "multi", Status: results.StatusDone}
	for i := 1; i <= 3; i++ {
		run.Trials = append(run.Trials, measuredTrial("node-crash", "ambient", i, 4, 100))
	}
	run.Trials = append(run.Trials, measuredTrial("node-crash", "none", 1, 4, 100))
	run.Matrix = []results.MatrixCell{
		{Scenario: "node-crash", Mode: "none", Trials: 1, Verdict: "contained", Verdicts: map[string]int{"contained": 1}, Total: 4,
			DisruptionSeconds: results.Stats{N: 1, Mean: 4, P95: 4, CILow: 4, CIHigh: 4}},
		{Scenario: "node-crash", Mode: "ambient", Trials: 3, Verdict: "cluster-wide", Verdicts: map[string]int{"contained": 2, "cluster-wide": 1}, Total: 4,
			DisruptionSeconds: results.Stats{N: 3, Mean: 4.5, P95: 6.25, Max: 6.25, CILow: 1.126, CIHigh: 7.874},
			FailedRequests:    results.Stats{N: 3, Mean: 1, P95: 3, Max: 3, CILow: -3.3, CIHigh: 5.3}},
	}
	out := renderHTML(t, run, HTMLOptions{})
	checkPage(t, out)
	for _, want := range []string{
		"(several trials: mean [95 % CI], p95 and worst)",
		"4.5 [1.13, 7.87] p95 6.25 worst 6.25", // the ambient cell's disruption-seconds
		"1 [-3.3, 5.3] p95 3 worst 3",          // its failed requests: the worst trial shown
		`<table class="stats">`,
		"cluster-wide×1, contained×2",
		"ambient · trial 3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("multi-trial report lacks %q", want)
		}
	}
	// Four trials, four rows on the comparison's shared axis.
	if n := strings.Count(out, `<g class="ovr"`); n != 4 {
		t.Errorf("%d overview rows, want 4", n)
	}
	if n := strings.Count(out, `<section class="trial"`); n != 4 {
		t.Errorf("%d trial sections, want 4", n)
	}
}

// The report of the default matrix (25 measured trials of 28 flows, 140
// buckets of 100 ms) must stay under 2 MB even when every flow flaps: run
// length encoding bounds the elements by runs, not buckets.
func TestHTMLSizeBudget(t *testing.T) {
	run := &results.Run{SchemaVersion: results.SchemaVersion, ID: "big", Status: results.StatusDone,
		Environment: results.Environment{BucketMs: 100}}
	modes := []string{"none", "sidecar", "ambient"}
	measured := 0
	for s := range 15 {
		name := fmt.Sprintf("fault-%02d", s)
		for _, m := range modes {
			if measured >= 25 || (s >= 5 && m != modes[s%3]) {
				run.Trials = append(run.Trials, &results.Trial{Scenario: name, Mode: m, Status: results.StatusSkipped})
				run.Matrix = append(run.Matrix, results.MatrixCell{Scenario: name, Mode: m, Skipped: "fault " + name + " needs another mode"})
				continue
			}
			measured++
			tr := measuredTrial(name, m, 1, 28, 140)
			run.Trials = append(run.Trials, tr)
			run.Matrix = append(run.Matrix, results.MatrixCell{Scenario: name, Mode: m, Trials: 1, Verdict: "contained", Total: 28,
				Affected: results.Stats{N: 1, Mean: 9}, DisruptionSeconds: results.Stats{N: 1, Mean: 45.5}})
		}
	}
	if measured != 25 {
		t.Fatalf("built %d measured trials, want 25", measured)
	}
	start := time.Now()
	out := renderHTML(t, run, HTMLOptions{})
	took := time.Since(start)
	checkPage(t, out)
	t.Logf("25 trials × 28 flows × 140 buckets: %d bytes, rendered in %v", len(out), took)
	if len(out) >= 2<<20 {
		t.Errorf("report is %d bytes, budget 2 MB", len(out))
	}
	if n := strings.Count(out, "<rect"); n > 25*28*30 {
		t.Errorf("%d rects: looks like one per bucket", n)
	}
}

// measuredTrial is a finished trial of n flows on three nodes with buckets
// buckets each; every third flow flaps (failing every other 300 ms during the
// fault) and has an outage, the worst case for the timeline's size.
func measuredTrial(scenario, mode string, index, n, buckets int) *results.Trial {
	const bucket = 100 * time.Millisecond
	win := &results.Window{Start: t0, End: at(time.Duration(buckets) * bucket)}
	inject, recover := at(3*time.Second), at(8*time.Second)
	tr := &results.Trial{Scenario: scenario, Fault: "node-crash", Mode: mode, Index: index, Status: results.StatusDone,
		Description: "synthetic", Started: t0, Dir: fmt.Sprintf("%s-%s", scenario, mode),
		Topology: results.Topology{Nodes: []string{"node-1", "node-2", "node-3"}},
		Window:   win,
		Faults:   []results.FaultRecord{{Kind: "node-crash", Target: "node-3", Inject: inject, Recover: &recover}},
		Summary:  &measure.Trial{},
		Verdict:  &results.Verdict{Value: "contained", FaultNodes: []string{"node-3"}, Total: n},
		Expectations: []results.ExpectationResult{{Name: "every flow to or from node-3 disrupted", Pass: true},
			{Name: "no flow between other nodes disrupted", Pass: false, Detail: "n1-to-n2 (1.2s)"}},
	}
	for i := range n {
		cn, sn := i%3+1, (i/3)%3+1
		meta := measure.FlowMeta{ID: fmt.Sprintf("n%d-to-n%d.pod.flow-%02d", cn, sn, i), ClientNode: fmt.Sprintf("node-%d", cn),
			ServerNode: fmt.Sprintf("node-%d", sn), Profile: "http-newconn", QPS: 20, Control: i == n-1 && n > 2}
		fs := measure.FlowSummary{Flow: meta, Requests: 2 * buckets, OK: 2 * buckets, ByClass: map[events.Class]int{},
			Latency: measure.LatencyByPhase{Before: measure.LatencySummary{Count: 10, P50Ms: 1.234, P99Ms: 9.87}}}
		flaps := i%3 == 0 && !meta.Control
		for b := range buckets {
			bk := measure.Bucket{Offset: time.Duration(b) * bucket, Requests: 2, OK: 2}
			if flaps && b >= 30 && b < 80 && (b/3)%2 == 0 {
				bk.OK = b % 2
				bk.Failed = map[events.Class]int{events.ClassTimeout: 2 - bk.OK}
			}
			fs.Timeline = append(fs.Timeline, bk)
		}
		if flaps {
			fs.Affected = true
			fs.Failed = 40
			fs.ByClass[events.ClassTimeout] = 30
			fs.ByClass[events.ClassRefused] = 10
			fs.Outages = []measure.OutageInterval{
				{Start: at(3 * time.Second), End: at(5 * time.Second), Seconds: 2, Failures: 30, Class: events.ClassTimeout,
					ByClass: map[events.Class]int{events.ClassTimeout: 30}},
				{Start: at(6 * time.Second), End: at(8 * time.Second), Seconds: 2, Failures: 12, Class: measure.ClassMissing,
					ByClass: map[events.Class]int{events.ClassRefused: 10, measure.ClassMissing: 2}},
			}
			fs.DisruptionSeconds = 4
			tr.Verdict.Affected++
			tr.Summary.Radius.Flows = append(tr.Summary.Radius.Flows, meta.ID)
		}
		tr.Summary.Flows = append(tr.Summary.Flows, fs)
		tr.Flows = append(tr.Flows, results.FlowRef{FlowMeta: meta, Events: tr.Dir + "/flows/" + meta.ID + ".jsonl"})
	}
	return tr
}

// checkPage asserts what every report must be: a parseable HTML5 document
// with doctype, charset and language, unique ids, a title on every chart,
// and nothing that loads from elsewhere.
func checkPage(t *testing.T, out string) {
	t.Helper()
	if !strings.HasPrefix(out, "<!DOCTYPE html>\n<html lang=\"en\">") || !strings.Contains(out, `<meta charset="utf-8">`) {
		t.Errorf("page does not start with doctype, lang and charset: %.120q", out)
	}
	doc, err := html.Parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			for _, a := range n.Attr {
				switch a.Key {
				case "id":
					if ids[a.Val] {
						t.Errorf("duplicate id %q", a.Val)
					}
					ids[a.Val] = true
				case "src":
					t.Errorf("<%s src=%q>: the report must load nothing", n.Data, a.Val)
				case "href":
					if !strings.HasPrefix(a.Val, "#") {
						t.Errorf("<%s href=%q>: only in-page links allowed", n.Data, a.Val)
					}
				}
			}
			switch n.Data {
			case "script", "link", "img", "iframe", "object":
				t.Errorf("<%s> element: the report must be self-contained and script-free", n.Data)
			case "svg":
				if c := n.FirstChild; nodeAttr(n, "aria-hidden") != "true" && (c == nil || c.Data != "title") {
					t.Errorf("<svg class=%q> has no <title> first", nodeAttr(n, "class"))
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if strings.Contains(out, "url(") || strings.Contains(out, "@import") {
		t.Error("CSS refers to an external resource")
	}
}

func nodeAttr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

var digits = regexp.MustCompile(`[0-9]+(\.[0-9]+)?`)

// outline is the report's structure, one line per landmark, indented by
// section depth. Text numbers become '#'; counts of chart elements stay.
func outline(t *testing.T, out string) string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	line := func(depth int, format string, a ...any) {
		b.WriteString(strings.Repeat("  ", depth))
		fmt.Fprintf(&b, format, a...)
		b.WriteByte('\n')
	}
	norm := func(s string) string { return digits.ReplaceAllString(strings.Join(strings.Fields(s), " "), "#") }
	var walk func(n *html.Node, depth int)
	walk = func(n *html.Node, depth int) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "section", "nav", "header", "footer":
				line(depth, "%s#%s", n.Data, nodeAttr(n, "id"))
				depth++
			case "h1", "h2", "h3":
				line(depth, "%s %s", n.Data, norm(nodeText(n)))
				return
			case "table":
				rows, cols := 0, 0
				eachElem(n, func(e *html.Node) {
					if e.Data == "tr" {
						rows++
					}
					if e.Data == "th" && e.Parent != nil && e.Parent.Parent != nil && e.Parent.Parent.Data == "thead" {
						cols++
					}
				})
				line(depth, "table.%s rows=%d cols=%d", nodeAttr(n, "class"), rows, cols)
				return
			case "ul":
				var items []string
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					if c.Type == html.ElementNode && c.Data == "li" {
						items = append(items, norm(nodeText(c)))
					}
				}
				if cl := nodeAttr(n, "class"); cl == "expect" || cl == "faults" || cl == "noisy" {
					line(depth, "ul.%s %q", cl, items)
				} else {
					line(depth, "ul.%s items=%d", cl, len(items))
				}
				return
			case "p":
				if cl := nodeAttr(n, "class"); cl != "" && cl != "meta" && cl != "desc" && cl != "cmd" && cl != "runstatus" {
					line(depth, "p.%s %s", cl, norm(nodeText(n)))
				}
				return
			case "svg":
				if nodeAttr(n, "aria-hidden") == "true" {
					return
				}
				count := map[string]int{}
				outs := map[string]int{}
				eachElem(n, func(e *html.Node) {
					c := nodeAttr(e, "class")
					switch {
					case e.Data == "g" && (c == "fl" || c == "ovr"):
						count[c]++
					case strings.HasPrefix(c, "out "):
						outs[nodeAttr(e, "data-class")]++
					case c == "rf" || c == "rp" || c == "rs" || c == "fp" || c == "mk in" || c == "mk rc" || c == "nm" ||
						(len(c) == 2 && c[0] == 'h'):
						count[c]++
					}
				})
				line(depth, "svg %q counts=%v outages=%v", norm(nodeText(n.FirstChild)), count, outs)
				return
			case "details":
				line(depth, "details %s", norm(nodeText(n.FirstChild)))
			case "div":
				line(depth, "div.%s %s", nodeAttr(n, "class"), norm(nodeText(n)))
				return
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, depth)
		}
	}
	walk(doc, 0)
	return b.String()
}

func eachElem(n *html.Node, f func(*html.Node)) {
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.ElementNode {
			f(c)
			eachElem(c, f)
		}
	}
}

func nodeText(n *html.Node) string {
	if n == nil {
		return ""
	}
	if n.Type == html.TextNode {
		return n.Data
	}
	var b strings.Builder
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		b.WriteString(nodeText(c))
	}
	return b.String()
}

// lineDiff shows the first differing lines, enough to see what changed.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %s\n  got  %s\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}

// A bucket with late answers and no failure is drawn as late, not as
// success: the timeline sees what disruption-seconds counts.
func TestTimelineShowsLateAnswers(t *testing.T) {
	tl := []measure.Bucket{
		{Offset: 0, Requests: 5, OK: 5},
		{Offset: 100 * time.Millisecond, Requests: 5, OK: 5, Slow: 2},
		{Offset: 200 * time.Millisecond, Requests: 5, OK: 5, Slow: 5},
		{Offset: 300 * time.Millisecond, Requests: 5, OK: 3, Slow: 3, Failed: map[events.Class]int{events.ClassTimeout: 2}},
		{Offset: 400 * time.Millisecond, Requests: 5, OK: 5},
	}
	got := failureRuns(tl, 100*time.Millisecond)
	want := []segment{{from: 0.1, to: 0.3, state: bSlow}, {from: 0.3, to: 0.4, state: bPartial}}
	if len(got) != len(want) {
		t.Fatalf("segments %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].state != want[i].state || math.Abs(got[i].from-want[i].from) > 1e-9 || math.Abs(got[i].to-want[i].to) > 1e-9 {
			t.Errorf("segment %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}
