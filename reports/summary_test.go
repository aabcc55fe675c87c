package reports

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func ptrTime(t time.Time) *time.Time { return &t }

func ptrFloat(f float64) *float64 { return &f }

// syntheticRun has a failed node-crash trial with everything a table shows
// and a trial that never got as far as measuring.
func syntheticRun() *results.Run {
	crashed := measure.FlowSummary{
		Flow:     measure.FlowMeta{ID: "n1-to-n3.pod.tcp-stream", Client: "client-n1", ClientNode: "node-1", Server: "server-n3", ServerNode: "node-3", Profile: "tcp-stream"},
		Requests: 400, OK: 391, Failed: 9,
		ByClass: map[events.Class]int{events.ClassRefused: 2, events.ClassTimeout: 7},
		Outages: []measure.OutageInterval{{Start: at(5 * time.Second), End: at(13250 * time.Millisecond), Seconds: 8.25, Failures: 13,
			ByClass: map[events.Class]int{events.ClassTimeout: 7, events.ClassRefused: 2, measure.ClassMissing: 4}, Class: events.ClassTimeout}},
		DisruptionSeconds: 8.25,
		Streams: measure.StreamSummary{Broken: 3, Reconnected: 3, ReconnectSeconds: []float64{1.25, 0.5, 0.75}, MaxReconnectSeconds: 1.25,
			Stalls: 2, StallSeconds: 0.5, MaxStallSeconds: 0.31},
		Slow:     2,
		Affected: true,
	}
	ctl := measure.FlowSummary{
		Flow:     measure.FlowMeta{ID: "control.pod.http-keepalive", Client: "ctl-client", ClientNode: "node-1", Server: "ctl-server", ServerNode: "node-2", Profile: "http-keepalive", Control: true},
		Requests: 200, OK: 200,
	}
	return &results.Run{
		SchemaVersion: results.SchemaVersion,
		ID:            "run-1",
		Status:        results.StatusError,
		Trials: []*results.Trial{
			{
				Scenario: "node-crash", Status: results.StatusFailed, BringUpSeconds: 1.5,
				Topology: results.Topology{Nodes: []string{"node-1", "node-2", "node-3"}},
				Window:   &results.Window{Start: t0, End: at(22 * time.Second)},
				Faults: []results.FaultRecord{
					{Kind: "node-crash", Target: "node-3", Inject: at(5 * time.Second), Recover: ptrTime(at(13250 * time.Millisecond))},
					{Kind: "blackhole", Target: "n1-to-n3.pod.tcp-stream", Inject: at(15 * time.Second)},
				},
				CPU: &results.CPU{Mean: 0.424, Max: 0.966},
				Summary: &measure.Trial{
					Flows:  []measure.FlowSummary{crashed, ctl}, // control last: the table puts it first
					Radius: measure.BlastRadius{Flows: []string{"n1-to-n3.pod.tcp-stream"}, Pods: []string{"client-n1", "server-n3"}, Nodes: []string{"node-1", "node-3"}},
				},
				Precision: []results.PrecisionCheck{
					{Flow: "n1-to-n3.pod.tcp-stream", TruthSeconds: 0.1, MeasuredSeconds: 0.15, ErrorSeconds: 0.05, Within: true,
						StartErrorSeconds: ptrFloat(-0.02), EndErrorSeconds: ptrFloat(0.03)},
					{Flow: "n1-to-n3.pod.tcp-stream", TruthSeconds: 0.3, MeasuredSeconds: 0.1, ErrorSeconds: -0.2, Within: false},
				},
				Noisy:        true,
				NoisyReasons: []string{"control flow x was disrupted for 0.300s in 1 outage(s)", "CPU saturated"},
				Expectations: []results.ExpectationResult{
					{Name: "every flow to or from node-3 disrupted", Pass: true, Detail: "not shown when passing"},
					{Name: "no flow between other nodes disrupted", Pass: false, Detail: "n1-to-n2.pod.http-newconn (1.500s)"},
					{Name: "control flow undisturbed", Pass: false},
				},
			},
			{
				Scenario: "baseline", Status: results.StatusError, Error: "bring up: netns: permission denied",
				Topology: results.Topology{Nodes: []string{"node-1"}},
			},
		},
	}
}

func TestSummary(t *testing.T) {
	var buf bytes.Buffer
	Summary(&buf, syntheticRun())
	out := buf.String()
	lines := strings.Split(out, "\n")

	// Lines whose text is fully determined.
	for _, want := range []string{
		"== node-crash: failed (3 nodes, 2 flows, bring-up 1.50s) ==",
		"fault: node-crash node-3 at +5.000s, recovered at +13.250s (8.250s)",
		"fault: blackhole n1-to-n3.pod.tcp-stream at +15.000s",
		"blast radius: 1/2 flows; pods: client-n1 server-n3; nodes: node-1 node-3",
		"precision: n1-to-n3.pod.tcp-stream truth 0.100s measured 0.150s error +0.050s start -0.020s end +0.030s within=true",
		"precision: n1-to-n3.pod.tcp-stream truth 0.300s measured 0.100s error -0.200s within=false",
		"cpu: mean 42%, max 97% busy",
		"NOISY: control flow x was disrupted for 0.300s in 1 outage(s); CPU saturated",
		"PASS every flow to or from node-3 disrupted",
		"FAIL no flow between other nodes disrupted: n1-to-n2.pod.http-newconn (1.500s)",
		"FAIL control flow undisturbed",
		"== baseline: error (1 nodes, 0 flows, bring-up 0.00s) ==",
		"error: bring up: netns: permission denied",
	} {
		if !contains(lines, want) {
			t.Errorf("no line %q in:\n%s", want, out)
		}
	}

	// Table rows, compared field by field (tabwriter pads with spaces).
	header := fieldsOf(t, lines, "FLOW")
	if want := "FLOW REQUESTS FAILED SLOW OUTAGES DISRUPTED FAILURES BY CLASS STREAM BREAKS / STALLS"; strings.Join(header, " ") != want {
		t.Errorf("header = %q, want %q", strings.Join(header, " "), want)
	}
	ctlRow := fieldsOf(t, lines, "control.pod.http-keepalive")
	if want := "control.pod.http-keepalive (control) 200 0 0 0 - - -"; strings.Join(ctlRow, " ") != want {
		t.Errorf("control row = %q, want %q", strings.Join(ctlRow, " "), want)
	}
	flowRow := fieldsOf(t, lines, "n1-to-n3.pod.tcp-stream")
	if want := "n1-to-n3.pod.tcp-stream 400 9 2 1 8.250s refused:2 timeout:7 missing:4 3 (max reconnect 1.25s) / 2 (longest 0.31s)"; strings.Join(flowRow, " ") != want {
		t.Errorf("flow row = %q, want %q", strings.Join(flowRow, " "), want)
	}
	// The control flow comes first in the table.
	if i, j := lineIndex(lines, "control.pod.http-keepalive"), lineIndex(lines, "n1-to-n3.pod.tcp-stream"); i < 0 || j < 0 || i > j {
		t.Errorf("control row at line %d, flow row at line %d: control should come first", i, j)
	}
	if strings.Contains(out, "not shown when passing") {
		t.Errorf("a passing expectation's detail was printed:\n%s", out)
	}

	// The errored trial has no table after it.
	second := out[strings.Index(out, "== baseline"):]
	for _, absent := range []string{"FLOW", "blast radius", "cpu:", "NOISY", "PASS", "FAIL", "fault:", "precision:"} {
		if strings.Contains(second, absent) {
			t.Errorf("errored trial section contains %q:\n%s", absent, second)
		}
	}
	if n := strings.Count(out, "blast radius:"); n != 1 {
		t.Errorf("%d blast radius lines, want 1", n)
	}
}

func TestSummaryEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		name   string
		run    *results.Run
		want   []string // whole lines
		absent []string // substrings
	}{
		{
			name: "no trials prints nothing",
			run:  &results.Run{},
		},
		{
			name: "fault without a load window is timed at +0",
			run: &results.Run{Trials: []*results.Trial{{Scenario: "x", Status: results.StatusInterrupted,
				Faults: []results.FaultRecord{{Kind: "node-crash", Target: "node-2", Inject: at(time.Hour)}}}}},
			want:   []string{"== x: interrupted (0 nodes, 0 flows, bring-up 0.00s) ==", "fault: node-crash node-2 at +0.000s"},
			absent: []string{"error:", "FLOW"},
		},
		{
			name: "quiet trial: empty radius, no noise, no cpu",
			run: &results.Run{Trials: []*results.Trial{{Scenario: "baseline", Status: results.StatusDone,
				Topology: results.Topology{Nodes: []string{"node-1", "node-2"}},
				Summary: &measure.Trial{Flows: []measure.FlowSummary{{Flow: measure.FlowMeta{ID: "n1-to-n2.pod.http-newconn", Profile: "http-newconn"}, Requests: 10, OK: 10}},
					Radius: measure.BlastRadius{Flows: []string{}, Pods: []string{}, Nodes: []string{}}},
				Expectations: []results.ExpectationResult{{Name: "no outage on any flow", Pass: true}}}}},
			want:   []string{"== baseline: done (2 nodes, 1 flows, bring-up 0.00s) ==", "blast radius: 0/1 flows; pods: -; nodes: -", "PASS no outage on any flow"},
			absent: []string{"NOISY", "cpu:", "precision:", "(control)", "\nFAIL "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			Summary(&buf, tc.run)
			out := buf.String()
			if tc.want == nil && tc.absent == nil && out != "" {
				t.Errorf("output %q, want none", out)
			}
			lines := strings.Split(out, "\n")
			for _, w := range tc.want {
				if !contains(lines, w) {
					t.Errorf("no line %q in:\n%s", w, out)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out, a) {
					t.Errorf("output contains %q:\n%s", a, out)
				}
			}
		})
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func lineIndex(lines []string, prefix string) int {
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return i
		}
	}
	return -1
}

func fieldsOf(t *testing.T, lines []string, prefix string) []string {
	t.Helper()
	i := lineIndex(lines, prefix)
	if i < 0 {
		t.Fatalf("no line starting with %q in:\n%s", prefix, strings.Join(lines, "\n"))
	}
	return strings.Fields(lines[i])
}
