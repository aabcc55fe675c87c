package baseline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
)

// fig is one synthetic trial's figures.
type fig struct {
	dis     float64
	failed  int
	verdict string
}

var started = time.Date(2026, 11, 1, 2, 0, 0, 0, time.UTC)

// trial builds a measured node-crash trial on the default 3-node topology.
func trial(mode string, i int, f fig) *results.Trial {
	if f.verdict == "" {
		f.verdict = "contained"
	}
	t := &results.Trial{Scenario: "node-crash", Fault: "node-crash", Mode: mode, Index: i, Status: results.StatusDone,
		Topology: results.Topology{Nodes: []string{"node-1", "node-2", "node-3"}},
		Flows:    []results.FlowRef{{FlowMeta: measure.FlowMeta{ID: "n1-to-n2", QPS: 20}}},
		Summary:  &measure.Trial{},
		Verdict:  &results.Verdict{Value: f.verdict, Total: 28, DisruptionSeconds: f.dis, FailedRequests: f.failed}}
	for n := 1; n <= 3; n++ {
		t.Topology.Pods = append(t.Topology.Pods,
			results.PodInfo{Name: fmt.Sprintf("client-n%d", n), Node: fmt.Sprintf("node-%d", n), Role: "client"},
			results.PodInfo{Name: fmt.Sprintf("server-n%d", n), Node: fmt.Sprintf("node-%d", n), Role: "server"})
	}
	return t
}

// writeRun saves a run folder under dir/name with the trials.
func writeRun(t *testing.T, dir, name string, trials ...*results.Trial) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &results.Run{SchemaVersion: results.SchemaVersion, ID: name, Started: started, Status: results.StatusDone,
		Environment: results.Environment{Provider: "netns", BucketMs: 100, BudgetRPS: 600}, Trials: trials}
	if err := results.Save(p, r); err != nil {
		t.Fatal(err)
	}
	return p
}

// history writes one baseline run per figure, each with one ambient trial.
func history(t *testing.T, dir string, figs ...fig) []*Folder {
	t.Helper()
	var out []*Folder
	for i, f := range figs {
		p := writeRun(t, dir, fmt.Sprintf("base-%02d", i), trial("ambient", 1, f))
		fs, err := LoadBaseline(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fs...)
	}
	return out
}

func compareOne(t *testing.T, base []*Folder, opt Options, figs ...fig) (*Report, *Variant) {
	t.Helper()
	var trials []*results.Trial
	for i, f := range figs {
		trials = append(trials, trial("ambient", i+1, f))
	}
	run, err := Load(writeRun(t, t.TempDir(), "run", trials...))
	if err != nil {
		t.Fatal(err)
	}
	rep := Compare(run, base, opt)
	if len(rep.Variants) != 1 {
		t.Fatalf("%d variants, want 1", len(rep.Variants))
	}
	return rep, rep.Variants[0]
}

func about1s() []fig {
	return []fig{{0.9, 20, ""}, {1.0, 22, ""}, {1.1, 24, ""}, {1.0, 21, ""}, {0.95, 19, ""}, {1.05, 23, ""}}
}

func TestWorseDisruptionRegresses(t *testing.T) {
	base := history(t, t.TempDir(), about1s()...)
	rep, v := compareOne(t, base, DefaultOptions, fig{5, 22, ""})
	if v.Tier != TierRegress || rep.ExitCode != ExitRegress {
		t.Fatalf("tier %s exit %d, want regress and 1: %v", v.Tier, rep.ExitCode, v.Reasons)
	}
	g := v.DisruptionSeconds
	if g.P95 != 1.1 || g.P99 != 1.1 || g.PassLimit != 1.1 || g.FlakeLimit != 1.375 || g.Value != 5 || g.Tier != TierRegress {
		t.Errorf("disruption figure %+v", g)
	}
	if v.History.Trials != 6 || v.History.Runs != 6 {
		t.Errorf("history %+v, want 6 trials from 6 runs", v.History)
	}
	if len(v.Reasons) != 1 || !strings.Contains(v.Reasons[0], "disruption 5.000 s above the flake limit 1.375 s") {
		t.Errorf("reasons %q", v.Reasons)
	}
}

func TestEqualRunPasses(t *testing.T) {
	base := history(t, t.TempDir(), about1s()...)
	rep, v := compareOne(t, base, DefaultOptions, fig{1.0, 22, ""})
	if v.Tier != TierPass || rep.ExitCode != ExitOK || len(v.Reasons) != 0 {
		t.Fatalf("tier %s exit %d reasons %q, want pass and 0", v.Tier, rep.ExitCode, v.Reasons)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"VARIANT", "node-crash [ambient] 3n/6w", "1.10 / 1.10", "contained → contained", "PASS", "1 pass, 0 flake, 0 regress"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestNotEnoughHistory(t *testing.T) {
	base := history(t, t.TempDir(), about1s()[:4]...)
	// Even a 5 s run is not called a regression on 4 trials of history, and
	// not a pass either.
	rep, v := compareOne(t, base, DefaultOptions, fig{5, 22, ""})
	if v.Tier != TierNotEnoughHistory || rep.ExitCode != ExitOK || rep.Counts.NotEnoughHistory != 1 || rep.Counts.Pass != 0 {
		t.Fatalf("tier %s exit %d counts %+v, want not-enough-history, 0", v.Tier, rep.ExitCode, rep.Counts)
	}
	if len(v.Reasons) != 1 || v.Reasons[0] != "4 baseline trial(s), 5 needed (--min-history)" {
		t.Errorf("reasons %q", v.Reasons)
	}
	if v.DisruptionSeconds == nil || v.DisruptionSeconds.Tier != TierRegress {
		t.Errorf("the figure is still computed for information: %+v", v.DisruptionSeconds)
	}
	strict := DefaultOptions
	strict.Strict = true
	if rep, _ := compareOne(t, base, strict, fig{1, 22, ""}); rep.ExitCode != ExitRegress {
		t.Errorf("--strict: exit %d, want 1", rep.ExitCode)
	}
	few := DefaultOptions
	few.MinHistory = 4
	if _, v := compareOne(t, base, few, fig{1, 22, ""}); v.Tier != TierPass {
		t.Errorf("--min-history 4 with 4 trials: %s", v.Tier)
	}
}

func TestFlakeTier(t *testing.T) {
	base := history(t, t.TempDir(), fig{1, 20, ""}, fig{1, 20, ""}, fig{1, 20, ""}, fig{1, 20, ""}, fig{1, 20, ""})
	// p95 = p99 = 1 s: the band comes from the tolerance, up to 1.25 s.
	rep, v := compareOne(t, base, DefaultOptions, fig{1.2, 20, ""})
	if v.Tier != TierFlake || rep.ExitCode != ExitOK || rep.Counts.Flake != 1 {
		t.Fatalf("1.2 s: tier %s exit %d, want flake and 0", v.Tier, rep.ExitCode)
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	if !strings.Contains(b.String(), "flake: disruption 1.200 s above the p95 limit 1.000 s, within the flake limit 1.250 s") ||
		!strings.Contains(b.String(), "flakes are reported, they do not fail") {
		t.Errorf("flake not explained:\n%s", b.String())
	}
	if _, v := compareOne(t, base, DefaultOptions, fig{1.3, 20, ""}); v.Tier != TierRegress {
		t.Errorf("1.3 s: tier %s, want regress", v.Tier)
	}
	// With a long history p99 > p95: between them is a flake, even without
	// tolerance.
	var figs []fig
	for i := 1; i <= 100; i++ {
		figs = append(figs, fig{float64(i) / 100, 20, ""})
	}
	long := history(t, t.TempDir(), figs...)
	noTol := Options{MinHistory: 5}
	if _, v := compareOne(t, long, noTol, fig{0.97, 20, ""}); v.Tier != TierFlake || v.DisruptionSeconds.PassLimit != 0.95 || v.DisruptionSeconds.FlakeLimit != 0.99 {
		t.Errorf("between p95 and p99: tier %s %+v", v.Tier, v.DisruptionSeconds)
	}
	if _, v := compareOne(t, long, noTol, fig{0.995, 20, ""}); v.Tier != TierRegress {
		t.Errorf("above p99: tier %s", v.Tier)
	}
}

func TestMedianOfSeveralTrials(t *testing.T) {
	base := history(t, t.TempDir(), about1s()...)
	// One bad trial of three does not make the variant regress: the median
	// is compared; the worst is reported.
	_, v := compareOne(t, base, DefaultOptions, fig{1, 20, ""}, fig{9, 20, ""}, fig{1.05, 20, ""})
	if v.Tier != TierPass || v.Trials != 3 || v.DisruptionSeconds.Value != 1.05 || v.DisruptionSeconds.Worst != 9 {
		t.Errorf("tier %s %+v", v.Tier, v.DisruptionSeconds)
	}
}

func TestFailedRequestsRegress(t *testing.T) {
	base := history(t, t.TempDir(), about1s()...)
	_, v := compareOne(t, base, DefaultOptions, fig{1, 300, ""})
	if v.Tier != TierRegress || v.FailedRequests.Tier != TierRegress || v.DisruptionSeconds.Tier != TierPass {
		t.Errorf("tier %s failed %+v", v.Tier, v.FailedRequests)
	}
}

func TestZeroHistoryAllowsOneBucket(t *testing.T) {
	zero := fig{0, 0, "no-impact"}
	base := history(t, t.TempDir(), zero, zero, zero, zero, zero)
	// Bucket 100 ms, busiest flow 20 rps: one bucket is 0.1 s and 2 requests.
	_, v := compareOne(t, base, DefaultOptions, fig{0.1, 2, "no-impact"})
	if v.Tier != TierPass || v.DisruptionSeconds.Floor != 0.1 || v.FailedRequests.Floor != 2 {
		t.Errorf("one bucket over a history of zeros: %s %+v %+v", v.Tier, v.DisruptionSeconds, v.FailedRequests)
	}
	if _, v := compareOne(t, base, DefaultOptions, fig{0.3, 2, "no-impact"}); v.Tier != TierRegress {
		t.Errorf("three buckets over a history of zeros: %s", v.Tier)
	}
}

func TestVerdictWorsened(t *testing.T) {
	base := history(t, t.TempDir(), about1s()...)
	_, v := compareOne(t, base, DefaultOptions, fig{1, 22, "cluster-wide"})
	if v.Tier != TierRegress || v.Verdict.Tier != TierRegress || v.Verdict.Usual != "contained" || v.Verdict.Value != "cluster-wide" {
		t.Errorf("contained → cluster-wide: %s %+v", v.Tier, v.Verdict)
	}
	// no-impact → anything, even contained with little disruption.
	ni := fig{0.05, 1, "no-impact"}
	quiet := history(t, t.TempDir(), ni, ni, ni, ni, ni)
	if _, v := compareOne(t, quiet, DefaultOptions, fig{0.05, 1, "contained"}); v.Tier != TierRegress || v.Verdict.Tier != TierRegress {
		t.Errorf("no-impact → contained: %s %+v", v.Tier, v.Verdict)
	}
	// A verdict the history has seen, but not usually: a flake.
	figs := about1s()
	figs[2].verdict = "cluster-wide"
	mixed := history(t, t.TempDir(), figs...)
	if _, v := compareOne(t, mixed, DefaultOptions, fig{1, 22, "cluster-wide"}); v.Tier != TierFlake || v.Verdict.Worst != "cluster-wide" {
		t.Errorf("seen-before cluster-wide: %s %+v", v.Tier, v.Verdict)
	}
	// Better than usual is a pass.
	if _, v := compareOne(t, base, DefaultOptions, fig{0.5, 10, "no-impact"}); v.Tier != TierPass {
		t.Errorf("contained → no-impact: %s", v.Tier)
	}
}

func TestVariantsAreSeparate(t *testing.T) {
	dir := t.TempDir()
	var base []*Folder
	for i := 0; i < 6; i++ {
		other := trial("ambient", 1, fig{1, 20, ""})
		other.Topology.Pods = other.Topology.Pods[:4] // fewer workloads: another topology
		p := writeRun(t, dir, fmt.Sprintf("b%d", i), trial("sidecar", 1, fig{1, 20, ""}), other)
		fs, err := LoadBaseline(p)
		if err != nil {
			t.Fatal(err)
		}
		base = append(base, fs...)
	}
	rep, v := compareOne(t, base, DefaultOptions, fig{1, 20, ""})
	if v.History.Trials != 0 || v.Tier != TierNotEnoughHistory || rep.ExitCode != ExitNothingToSee {
		t.Errorf("another mode and topology counted as history: %+v tier %s exit %d", v.History, v.Tier, rep.ExitCode)
	}
	if !strings.Contains(rep.Outcome(), "no variant of the run has any history") {
		t.Errorf("outcome %q", rep.Outcome())
	}
}

func TestSkippedAndErroredTrialsApart(t *testing.T) {
	base := history(t, t.TempDir(), about1s()...)
	skipped := &results.Trial{Scenario: "node-proxy-crash", Fault: "node-proxy-crash", Mode: "none", Index: 1, Status: results.StatusSkipped, Error: "needs mode ambient"}
	errored := &results.Trial{Scenario: "node-crash", Fault: "node-crash", Mode: "ambient", Index: 2, Status: results.StatusError, Error: "bring up cluster: timeout\nstack"}
	run, err := Load(writeRun(t, t.TempDir(), "run", trial("ambient", 1, fig{1, 20, ""}), errored, skipped))
	if err != nil {
		t.Fatal(err)
	}
	rep := Compare(run, base, DefaultOptions)
	if len(rep.Variants) != 1 || rep.Variants[0].Tier != TierPass || rep.ExitCode != ExitOK {
		t.Fatalf("variants %d exit %d", len(rep.Variants), rep.ExitCode)
	}
	if len(rep.Skipped) != 1 || rep.Skipped[0].Reason != "needs mode ambient" || rep.Counts.Skipped != 1 {
		t.Errorf("skipped %+v", rep.Skipped)
	}
	if len(rep.Errors) != 1 || rep.Errors[0].Error != "bring up cluster: timeout" || rep.Errors[0].Index != 2 || rep.Counts.Errors != 1 {
		t.Errorf("errors %+v", rep.Errors)
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	for _, want := range []string{"skipped (not compared):\n  node-proxy-crash [none]: needs mode ambient", "not measured (not compared):\n  node-crash [ambient] #2: error: bring up cluster: timeout"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	// Nothing measured at all: nothing comparable.
	run2, _ := Load(writeRun(t, t.TempDir(), "run", errored, skipped))
	if rep := Compare(run2, base, DefaultOptions); rep.ExitCode != ExitNothingToSee || len(rep.Variants) != 0 {
		t.Errorf("only skipped and errored: exit %d", rep.ExitCode)
	}
}

func TestIgnoresItselfAndOtherProviders(t *testing.T) {
	dir := t.TempDir()
	var trials []*results.Trial
	for i := 1; i <= 6; i++ {
		trials = append(trials, trial("ambient", i, fig{1, 20, ""}))
	}
	// The store holds the run itself (same ID and start) and a kind run.
	writeRun(t, dir, "run", trials...)
	kind := writeRun(t, dir, "kind", trials...)
	r, _ := results.Load(kind)
	r.Environment.Provider = "kind"
	if err := results.Save(kind, r); err != nil {
		t.Fatal(err)
	}
	base, err := LoadBaseline(dir)
	if err != nil {
		t.Fatal(err)
	}
	run, _ := Load(filepath.Join(dir, "run"))
	rep := Compare(run, base, DefaultOptions)
	if rep.Variants[0].History.Trials != 0 {
		t.Errorf("history %+v, want none", rep.Variants[0].History)
	}
	ign := map[string]string{}
	for _, b := range rep.Baselines {
		ign[b.ID] = b.Ignored
	}
	if ign["run"] != "same run as the one compared" || ign["kind"] != "provider kind, the run's is netns" {
		t.Errorf("ignored %v", ign)
	}
}

func TestBadFolders(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	newer := filepath.Join(dir, "newer")
	os.Mkdir(newer, 0o755)
	os.WriteFile(filepath.Join(newer, "run.json"), []byte(`{"schemaVersion": 99, "trials": "not even a list"}`), 0o644)
	broken := filepath.Join(dir, "broken")
	os.Mkdir(broken, 0o755)
	os.WriteFile(filepath.Join(broken, "run.json"), []byte(`{"schemaVersion": 1, "trials": [`), 0o644)
	foreign := filepath.Join(dir, "foreign")
	os.Mkdir(foreign, 0o755)
	os.WriteFile(filepath.Join(foreign, "run.json"), []byte(`{"name": "x"}`), 0o644)
	store := filepath.Join(dir, "store")
	writeRun(t, store, "good", trial("ambient", 1, fig{1, 20, ""}))
	os.MkdirAll(filepath.Join(store, "bad"), 0o755)
	os.WriteFile(filepath.Join(store, "bad", "run.json"), []byte(`{"schemaVersion": 3}`), 0o644)

	for _, c := range []struct{ dir, want string }{
		{filepath.Join(dir, "missing"), "missing: no such folder"},
		{empty, "empty: no run.json"},
		{newer, "newer: run.json schema version 99 is newer than this build reads (2)"},
		{broken, "broken: run.json: unexpected end of JSON input"},
		{foreign, "foreign: run.json has no schemaVersion"},
		{store, filepath.Join("store", "bad") + ": run.json schema version 3 is newer"},
	} {
		_, err := LoadBaseline(c.dir)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("LoadBaseline(%s): %v, want one line containing %q", filepath.Base(c.dir), err, c.want)
		}
	}
	if _, err := Load(empty); err == nil || !strings.Contains(err.Error(), "no run.json (not a results folder)") {
		t.Errorf("Load(empty): %v", err)
	}
}

func TestBaselineStore(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		writeRun(t, dir, fmt.Sprintf("2026110%d", i), trial("ambient", 1, fig{1, 20, ""}), trial("ambient", 2, fig{1, 20, ""}))
	}
	os.MkdirAll(filepath.Join(dir, "junit"), 0o755) // not a run: passed over
	fs, err := LoadBaseline(dir)
	if err != nil || len(fs) != 3 {
		t.Fatalf("store: %d folders, %v", len(fs), err)
	}
	_, v := compareOne(t, fs, DefaultOptions, fig{1, 20, ""})
	if v.History.Trials != 6 || v.History.Runs != 3 || v.Tier != TierPass {
		t.Errorf("history %+v tier %s: several trials of one variant per folder", v.History, v.Tier)
	}
}

func TestJSONReport(t *testing.T) {
	base := history(t, t.TempDir(), about1s()...)
	rep, _ := compareOne(t, base, DefaultOptions, fig{5, 22, "cluster-wide"})
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "run", "baselines", "options", "variants", "skipped", "errors", "counts", "exitCode"} {
		if _, ok := got[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	v := got["variants"].([]any)[0].(map[string]any)
	for _, k := range []string{"scenario", "fault", "mode", "topology", "tier", "reasons", "history", "trials", "noisy", "disruptionSeconds", "failedRequests", "verdict"} {
		if _, ok := v[k]; !ok {
			t.Errorf("variant lacks %q", k)
		}
	}
	d := v["disruptionSeconds"].(map[string]any)
	for _, k := range []string{"p95", "p99", "floor", "passLimit", "flakeLimit", "value", "worst", "tier"} {
		if _, ok := d[k]; !ok {
			t.Errorf("figure lacks %q", k)
		}
	}
	if got["exitCode"].(float64) != 1 || v["tier"] != "regress" || got["version"].(float64) != ReportVersion {
		t.Errorf("exitCode %v tier %v", got["exitCode"], v["tier"])
	}
	// Round trip into the Go type: the documented schema is this type.
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back.Variants[0].Verdict.Value != "cluster-wide" {
		t.Errorf("round trip: %v", err)
	}
}

// The verdict ranks must cover framework/scenario's verdicts, in its order.
func TestVerdictRankMatchesScenario(t *testing.T) {
	prev := -1
	for _, v := range scenario.Verdicts {
		r, ok := verdictRank[v]
		if !ok {
			t.Fatalf("verdict %q has no rank", v)
		}
		if r < prev {
			t.Errorf("verdict %q ranks %d, below the milder one before it", v, r)
		}
		prev = r
	}
	if len(verdictRank) != len(scenario.Verdicts) {
		t.Errorf("%d ranks for %d verdicts", len(verdictRank), len(scenario.Verdicts))
	}
}

// Late answers made disruption larger from schema 2 on: against a baseline
// that predates them, compare uses the failed-only figure both sides have;
// with a history that counts them too, the figure with late answers.
func TestCompareLikeForLikeAcrossLateAnswers(t *testing.T) {
	// This run: 1 s of failures, and 2 s more of late answers.
	withLate := func(i int) *results.Trial {
		tr := trial("ambient", i, fig{3, 22, ""})
		tr.Verdict.FailedDisruptionSeconds, tr.Verdict.SlowRequests = 1, 40
		return tr
	}
	run, err := Load(writeRun(t, t.TempDir(), "run", withLate(1)))
	if err != nil {
		t.Fatal(err)
	}

	old := t.TempDir()
	var base []*Folder
	for i, f := range about1s() {
		p := writeRun(t, old, fmt.Sprintf("old-%02d", i), trial("ambient", 1, f))
		// Rewrite as schema 1: disruptionSeconds there is failures only.
		b, _ := os.ReadFile(filepath.Join(p, "run.json"))
		b = []byte(strings.Replace(string(b), `"schemaVersion": 2`, `"schemaVersion": 1`, 1))
		if err := os.WriteFile(filepath.Join(p, "run.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		fs, err := LoadBaseline(p)
		if err != nil {
			t.Fatal(err)
		}
		base = append(base, fs...)
	}
	rep := Compare(run, base, DefaultOptions)
	v := rep.Variants[0]
	if v.Compares != ComparesFailedOnly || v.DisruptionSeconds.Value != 1 || v.Tier != TierPass {
		t.Errorf("against schema-1 history: compares %q, value %v, tier %s (%v); want failed-only, 1, pass",
			v.Compares, v.DisruptionSeconds.Value, v.Tier, v.Reasons)
	}

	// The same history measured with late answers (1 s each): 3 s regresses.
	var late []*Folder
	for i, f := range about1s() {
		tr := trial("ambient", 1, f)
		tr.Verdict.FailedDisruptionSeconds = f.dis
		fs, err := LoadBaseline(writeRun(t, t.TempDir(), fmt.Sprintf("new-%02d", i), tr))
		if err != nil {
			t.Fatal(err)
		}
		late = append(late, fs...)
	}
	rep = Compare(run, late, DefaultOptions)
	v = rep.Variants[0]
	if v.Compares != ComparesWithLate || v.DisruptionSeconds.Value != 3 || v.Tier != TierRegress {
		t.Errorf("against schema-2 history: compares %q, value %v, tier %s; want late answers included, 3, regress",
			v.Compares, v.DisruptionSeconds.Value, v.Tier)
	}
}
