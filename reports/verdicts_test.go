package reports

import (
	"bytes"
	"strings"
	"testing"

	"blastradius.dev/blastradius/framework/results"
)

func TestVerdictTable(t *testing.T) {
	run := &results.Run{Matrix: []results.MatrixCell{
		{Scenario: "node-proxy-crash", Fault: "node-proxy-crash", Mode: "none", Skipped: "fault node-proxy-crash needs mode ambient"},
		{Scenario: "node-proxy-crash", Fault: "node-proxy-crash", Mode: "ambient", Trials: 1, Verdict: "contained", Verdicts: map[string]int{"contained": 1},
			Affected: results.Stats{N: 1, Mean: 13}, Total: 28, DisruptionSeconds: results.Stats{N: 1, Mean: 7.27},
			FailedRequests: results.Stats{N: 1, Mean: 117}, BrokenStreams: results.Stats{N: 1, Mean: 55},
			SlowRequests: results.Stats{N: 1, Mean: 31}, StalledStreams: results.Stats{N: 1, Mean: 4}},
		{Scenario: "cert-expiry", Fault: "controlplane-down", Mode: "sidecar", Errors: 1},
	}}
	var b bytes.Buffer
	Verdicts(&b, run)
	out := b.String()
	for _, want := range []string{
		"FAULT", "AFFECTED FLOWS", "SLOW REQUESTS", "STALLED STREAMS",
		"not applicable (skipped, with the reason):\n  node-proxy-crash in none: fault node-proxy-crash needs mode ambient",
		"13/28", "7.27", "117", "31", "55", "4", "contained",
		"cert-expiry (controlplane-down)", "ERROR: 1 trial(s) could not run",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verdict table lacks %q:\n%s", want, out)
		}
	}
	// Several trials: interval and p95 columns.
	run.Matrix[1].Trials = 3
	run.Matrix[1].DisruptionSeconds = results.Stats{N: 3, Mean: 7, P95: 9, CILow: 4.5, CIHigh: 9.5}
	run.Matrix[1].Verdicts = map[string]int{"contained": 2, "cluster-wide": 1}
	run.Matrix[1].Verdict = "cluster-wide"
	b.Reset()
	Verdicts(&b, run)
	for _, want := range []string{"TRIALS", "7.00 [4.50, 9.50] 9.00", "cluster-wide (contained×2, cluster-wide×1)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("multi-trial table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	Verdicts(&b, &results.Run{})
	if b.Len() != 0 {
		t.Errorf("no matrix printed %q", b.String())
	}
}
