package reports

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// junitRun has one trial of every kind: passed, failed (two expectations),
// errored, skipped, noisy, and a scenario without a fault (no verdict).
func junitRun() *results.Run {
	t0 := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	win := &results.Window{Start: t0, End: t0.Add(10 * time.Second)}
	v := func(value string, affected int, dis float64) *results.Verdict {
		return &results.Verdict{Value: value, FaultNodes: []string{"node-3"}, Affected: affected, Total: 28, DisruptionSeconds: dis, FailedRequests: 40, BrokenStreams: 3,
			SlowRequests: 12, StalledStreams: 2, FailedDisruptionSeconds: 1.25}
	}
	return &results.Run{SchemaVersion: 1, ID: "r1", Environment: results.Environment{Provider: "netns", Version: "test"},
		Trials: []*results.Trial{
			{Scenario: "node-crash", Fault: "node-crash", Mode: "ambient", Index: 1, Status: results.StatusDone, Started: t0, SetupSeconds: 1.5, Window: win,
				Summary: &measure.Trial{}, Verdict: v("contained", 12, 7.25),
				Expectations: []results.ExpectationResult{{Name: "node-radius", Pass: true}}},
			{Scenario: "node-crash", Fault: "node-crash", Mode: "ambient", Index: 2, Status: results.StatusFailed, Started: t0, Window: win,
				Summary: &measure.Trial{}, Verdict: v("cluster-wide", 20, 11.5), Noisy: true, NoisyReasons: []string{"CPU saturated"},
				Expectations: []results.ExpectationResult{
					{Name: "node-radius", Pass: false, Detail: "flow n1-to-n2 disrupted <2 s>"},
					{Name: "control-flow", Pass: false, Detail: "control flow lost 3 requests"},
					{Name: "outage-bounded", Pass: true}}},
			{Scenario: "node-crash", Fault: "node-crash", Mode: "sidecar", Index: 1, Status: results.StatusError, Started: t0,
				Error: "bring up cluster: timeout\nmore detail"},
			{Scenario: "node-proxy-crash", Fault: "node-proxy-crash", Mode: "none", Index: 1, Status: results.StatusSkipped, Started: t0,
				Error: "fault node-proxy-crash needs mode ambient"},
			{Scenario: "baseline", Mode: "none", Index: 1, Status: results.StatusDone, Started: t0, Window: win, Summary: &measure.Trial{}},
		}}
}

// The structure read back: what a CI tool would see.
type readSuites struct {
	Tests    int `xml:"tests,attr"`
	Failures int `xml:"failures,attr"`
	Errors   int `xml:"errors,attr"`
	Skipped  int `xml:"skipped,attr"`
	Suites   []struct {
		Name       string         `xml:"name,attr"`
		Tests      int            `xml:"tests,attr"`
		Failures   int            `xml:"failures,attr"`
		Errors     int            `xml:"errors,attr"`
		Skipped    int            `xml:"skipped,attr"`
		Properties []readProperty `xml:"properties>property"`
		Cases      []struct {
			Name       string         `xml:"name,attr"`
			Time       string         `xml:"time,attr"`
			Properties []readProperty `xml:"properties>property"`
			Skipped    *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
			Errors   []readResult `xml:"error"`
			Failures []readResult `xml:"failure"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

type readProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type readResult struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr"`
	Body    string `xml:",chardata"`
}

func props(ps []readProperty) map[string]string {
	m := map[string]string{}
	for _, p := range ps {
		m[p.Name] = p.Value
	}
	return m
}

func TestJUnitStructure(t *testing.T) {
	var b bytes.Buffer
	if err := JUnit(&b, junitRun()); err != nil {
		t.Fatal(err)
	}
	var got readSuites
	if err := xml.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("junit.xml does not parse: %v\n%s", err, b.String())
	}
	if got.Tests != 5 || got.Failures != 1 || got.Errors != 1 || got.Skipped != 1 {
		t.Errorf("totals tests=%d failures=%d errors=%d skipped=%d, want 5 1 1 1", got.Tests, got.Failures, got.Errors, got.Skipped)
	}
	var names []string
	for _, s := range got.Suites {
		names = append(names, s.Name)
	}
	want := []string{"node-crash [ambient]", "node-crash [sidecar]", "node-proxy-crash [none]", "baseline [none]"}
	if len(names) != len(want) {
		t.Fatalf("suites %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("suites %q, want %q (one per scenario and mode, in run order)", names, want)
		}
	}

	amb := got.Suites[0]
	if amb.Tests != 2 || amb.Failures != 1 || len(amb.Cases) != 2 {
		t.Fatalf("ambient suite: tests=%d failures=%d cases=%d", amb.Tests, amb.Failures, len(amb.Cases))
	}
	if sp := props(amb.Properties); sp["fault"] != "node-crash" || sp["mode"] != "ambient" || sp["provider"] != "netns" {
		t.Errorf("suite properties %v", sp)
	}
	pass, fail := amb.Cases[0], amb.Cases[1]
	if pass.Name != "node-crash [ambient] #1" || fail.Name != "node-crash [ambient] #2" {
		t.Errorf("case names %q, %q", pass.Name, fail.Name)
	}
	if pass.Time != "11.500" {
		t.Errorf("time %s, want setup + load window 11.500", pass.Time)
	}
	if len(pass.Failures)+len(pass.Errors) != 0 || pass.Skipped != nil {
		t.Errorf("passing trial has results: %+v", pass)
	}
	p := props(pass.Properties)
	for k, v := range map[string]string{"verdict": "contained", "affectedFlows": "12", "totalFlows": "28", "disruptionSeconds": "7.25",
		"failedRequests": "40", "brokenStreams": "3", "noisy": "false",
		"slowRequests": "12", "stalledStreams": "2", "failedDisruptionSeconds": "1.25"} {
		if p[k] != v {
			t.Errorf("property %s = %q, want %q (all: %v)", k, p[k], v, p)
		}
	}
	if len(fail.Failures) != 2 || fail.Failures[0].Message != "node-radius" || fail.Failures[0].Body != "flow n1-to-n2 disrupted <2 s>" ||
		fail.Failures[1].Message != "control-flow" {
		t.Errorf("failures %+v, want one per failed expectation (name, detail)", fail.Failures)
	}
	if props(fail.Properties)["noisy"] != "true" || props(fail.Properties)["verdict"] != "cluster-wide" {
		t.Errorf("failed trial properties %v", props(fail.Properties))
	}

	side := got.Suites[1]
	if side.Errors != 1 || len(side.Cases[0].Errors) != 1 || side.Cases[0].Errors[0].Message != "bring up cluster: timeout" ||
		side.Cases[0].Errors[0].Type != "error" || side.Cases[0].Errors[0].Body != "bring up cluster: timeout\nmore detail" {
		t.Errorf("errored trial: %+v", side.Cases[0])
	}
	if len(side.Cases[0].Properties) != 0 {
		t.Errorf("an unmeasured trial has figures: %v", side.Cases[0].Properties)
	}

	skip := got.Suites[2]
	if skip.Skipped != 1 || skip.Cases[0].Skipped == nil || skip.Cases[0].Skipped.Message != "fault node-proxy-crash needs mode ambient" {
		t.Errorf("skipped trial: %+v", skip.Cases[0])
	}

	base := got.Suites[3].Cases[0]
	if bp := props(base.Properties); bp["noisy"] != "false" || bp["verdict"] != "" {
		t.Errorf("no-fault trial properties %v: noisy only, no verdict", bp)
	}
}

func TestJUnitFile(t *testing.T) {
	dir := t.TempDir()
	if err := JUnitFile(dir, junitRun()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "junit.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte(xml.Header)) {
		t.Errorf("no XML header: %.60s", b)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary file left behind: %v", ents)
	}
	if err := JUnitFile(filepath.Join(dir, "missing"), junitRun()); err == nil {
		t.Error("writing into a missing folder did not fail")
	}
}

// On Istio an expectation of the reference's design that is not met is a
// finding, reported, not a failed test case; on the reference it fails.
func TestJUnitInformationalExpectations(t *testing.T) {
	for _, tc := range []struct {
		mode          string
		informational bool
		wantFailure   bool
	}{{"ambient", false, true}, {"istio-ambient", true, false}} {
		run := &results.Run{ID: "r", Trials: []*results.Trial{{Scenario: "node-proxy-restart", Mode: tc.mode, Index: 1, Status: results.StatusDone,
			Expectations: []results.ExpectationResult{{Name: "no failed request across the handoff", Pass: false, Informational: tc.informational}}}}}
		var b strings.Builder
		if err := JUnit(&b, run); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(b.String(), "<failure"); got != tc.wantFailure {
			t.Errorf("%s: failure in JUnit %v, want %v:\n%s", tc.mode, got, tc.wantFailure, b.String())
		}
		var v strings.Builder
		Verdicts(&v, run)
		if tc.informational && !strings.Contains(TrialLine(run.Trials[0]), "DIFFERS") {
			t.Errorf("%s: trial line %q does not say the expectation differs", tc.mode, TrialLine(run.Trials[0]))
		}
	}
}
