package main

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
)

// compareFixture writes six baseline runs of about 1 s of disruption, a run
// with 5 s, an equal run and a run with nothing measured; it returns the
// folder holding them.
func compareFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, dis float64, status string) {
		tr := &results.Trial{Scenario: "node-crash", Fault: "node-crash", Mode: "ambient", Index: 1, Status: status,
			Topology: results.Topology{Nodes: []string{"node-1", "node-2"}, Pods: []results.PodInfo{{Name: "client-n1", Node: "node-1", Role: "client"}}},
			Summary:  &measure.Trial{},
			Verdict:  &results.Verdict{Value: "contained", Total: 4, DisruptionSeconds: dis, FailedRequests: 10}}
		if status != results.StatusDone {
			tr.Summary, tr.Verdict, tr.Error = nil, nil, "bring up cluster: timeout"
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		r := &results.Run{SchemaVersion: results.SchemaVersion, ID: name, Started: time.Now(), Status: results.StatusDone,
			Environment: results.Environment{Provider: "netns", BucketMs: 100, BudgetRPS: 600}, Trials: []*results.Trial{tr}}
		if err := results.Save(p, r); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range []float64{0.9, 1, 1.1, 1, 0.95, 1.05} {
		write(fmt.Sprintf("baselines/night-%d", i), d, results.StatusDone)
	}
	write("worse", 5, results.StatusDone)
	write("equal", 1, results.StatusDone)
	write("broken", 0, results.StatusError)
	return dir
}

func TestCompareExitCodes(t *testing.T) {
	dir := compareFixture(t)
	at := func(p string) string { return filepath.Join(dir, p) }
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{at("worse"), "--baseline", at("baselines")}, 1, "REGRESS"},
		// Flags before the run folder, and one --baseline per run.
		{[]string{"--baseline", at("baselines/night-0"), "--baseline", at("baselines/night-1"), at("worse"), "--min-history", "2"}, 1, "REGRESSION"},
		{[]string{at("equal"), "--baseline", at("baselines")}, 0, "PASS"},
		{[]string{at("worse"), "--baseline", at("baselines"), "--min-history", "7"}, 0, "NOT-ENOUGH-HISTORY"},
		{[]string{at("equal"), "--baseline", at("baselines"), "--min-history", "7", "--strict"}, 1, "not enough history, --strict"},
		{[]string{at("broken"), "--baseline", at("baselines")}, 3, "nothing comparable"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := dispatch(append([]string{"compare"}, c.args...), &out, &errb)
		if code != c.code || !strings.Contains(out.String(), c.want) || errb.Len() != 0 {
			t.Errorf("compare %v: exit %d (want %d), stdout lacks %q or stderr %q:\n%s", c.args, code, c.code, c.want, errb.String(), out.String())
		}
	}
}

func TestCompareJSONOut(t *testing.T) {
	dir := compareFixture(t)
	file := filepath.Join(dir, "compare.json")
	var out, errb bytes.Buffer
	code := dispatch([]string{"compare", filepath.Join(dir, "worse"), "--baseline", filepath.Join(dir, "baselines"), "--format", "json", "--out", file}, &out, &errb)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "VARIANT") {
		t.Errorf("with --out, stdout still shows the table:\n%s", out.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		ExitCode int `json:"exitCode"`
		Variants []struct {
			Tier    string `json:"tier"`
			History struct {
				Trials int `json:"trials"`
			} `json:"history"`
		} `json:"variants"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.ExitCode != 1 || len(rep.Variants) != 1 || rep.Variants[0].Tier != "regress" || rep.Variants[0].History.Trials != 6 {
		t.Errorf("json report %+v", rep)
	}
	// Without --out, JSON goes to stdout.
	out.Reset()
	dispatch([]string{"compare", filepath.Join(dir, "equal"), "--baseline", filepath.Join(dir, "baselines"), "--format", "json"}, &out, &errb)
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.ExitCode != 0 {
		t.Errorf("json on stdout: %v %+v", err, rep)
	}
}

// Bad flags and bad folders: one line naming the problem, exit 2.
func TestCompareBadInput(t *testing.T) {
	dir := compareFixture(t)
	newer := filepath.Join(dir, "newer")
	os.Mkdir(newer, 0o755)
	os.WriteFile(filepath.Join(newer, "run.json"), []byte(`{"schemaVersion": 7}`), 0o644)
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	equal, base := filepath.Join(dir, "equal"), filepath.Join(dir, "baselines")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{}, "no run folder given"},
		{[]string{equal}, "no --baseline given"},
		{[]string{equal, "extra", "--baseline", base}, `unexpected argument "extra"`},
		{[]string{equal, "--baseline", base, "--format", "yaml"}, `--format "yaml" unknown`},
		{[]string{equal, "--baseline", base, "--min-history", "0"}, "--min-history 0 must be at least 1"},
		{[]string{equal, "--baseline", base, "--flake-tolerance", "-1"}, "--flake-tolerance -1 out of range"},
		{[]string{equal, "--baseline", base, "--bogus"}, "flag provided but not defined"},
		{[]string{equal, "--baseline", ""}, "empty folder"},
		{[]string{empty, "--baseline", base}, empty + ": no run.json"},
		{[]string{filepath.Join(dir, "nope"), "--baseline", base}, "nope: no such folder"},
		{[]string{equal, "--baseline", newer}, newer + ": run.json schema version 7 is newer than this build reads (2)"},
		{[]string{equal, "--baseline", empty}, "baseline " + empty + ": no run.json"},
		{[]string{equal, "--baseline", base, "--out", filepath.Join(dir, "no", "such", "file")}, "--out: open"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := dispatch(append([]string{"compare"}, c.args...), &out, &errb)
		msg := errb.String()
		if code != 2 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, c.want) {
			t.Errorf("compare %v: exit %d, stderr %q; want 2 and one line containing %q", c.args, code, msg, c.want)
		}
	}
}

func TestCompareHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"compare", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, f := range []string{"-baseline", "-min-history", "-flake-tolerance", "-strict", "-format", "-out", "Exit: 0"} {
		if !strings.Contains(errb.String(), f) {
			t.Errorf("--help does not explain %s", f)
		}
	}
}
