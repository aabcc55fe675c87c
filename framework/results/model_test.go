package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 890_000_000, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func ptr[T any](v T) *T { return &v }

// fullRun sets every field so a field lost in the round trip shows.
func fullRun() *Run {
	flow := measure.FlowMeta{ID: "n1-to-n3.pod.http-newconn", Client: "client-n1", ClientNode: "node-1",
		Server: "server-n3", ServerNode: "node-3", Target: "10.244.3.2:8080", Via: "pod", Profile: "http-newconn", QPS: 21.5}
	ctl := measure.FlowMeta{ID: "control.pod.http-keepalive", Client: "ctl-client", ClientNode: "node-1",
		Server: "ctl-server", ServerNode: "node-2", Target: "10.244.2.3:8080", Via: "pod", Profile: "http-keepalive", QPS: 21.5, Control: true}
	sum := measure.FlowSummary{
		Flow: flow, Requests: 100, OK: 90, Failed: 10,
		ByClass: map[events.Class]int{events.ClassTimeout: 7, events.ClassRefused: 3},
		Outages: []measure.OutageInterval{{Start: at(5 * time.Second), End: at(6500 * time.Millisecond), Seconds: 1.5, Failures: 12,
			ByClass: map[events.Class]int{events.ClassTimeout: 7, events.ClassRefused: 3, measure.ClassMissing: 2}, Class: events.ClassTimeout}},
		DisruptionSeconds: 1.5,
		Latency: measure.LatencyByPhase{
			Before: measure.LatencySummary{Count: 50, P50Ms: 1.1, P90Ms: 2.2, P99Ms: 3.3, MaxMs: 4.4},
			During: measure.LatencySummary{Count: 10, P50Ms: 5, P90Ms: 6, P99Ms: 7, MaxMs: 8},
			After:  measure.LatencySummary{Count: 30, P50Ms: 1, P90Ms: 2, P99Ms: 3, MaxMs: 9.5},
		},
		Streams: measure.StreamSummary{Broken: 2, Reconnected: 1, Unrecovered: 1, ReconnectSeconds: []float64{0.75}, MaxReconnectSeconds: 0.75},
		Timeline: []measure.Bucket{
			{Offset: 0, Requests: 2, OK: 2, MaxLatencyMs: 1.5, MeanLatencyMs: 1.25},
			{Offset: 100 * time.Millisecond, Requests: 2, OK: 1, Failed: map[events.Class]int{events.ClassReset: 1}, MaxLatencyMs: 3, MeanLatencyMs: 3},
		},
		Affected: true,
	}
	ctlSum := measure.FlowSummary{Flow: ctl, Requests: 100, OK: 100, ByClass: map[events.Class]int{},
		Outages: []measure.OutageInterval{}, Streams: measure.StreamSummary{ReconnectSeconds: []float64{}}, Timeline: []measure.Bucket{}}
	return &Run{
		SchemaVersion: SchemaVersion,
		ID:            "20260304-050607",
		Command:       []string{"run", "--scenarios", "node-crash"},
		Started:       t0,
		Finished:      ptr(at(time.Minute)),
		Status:        StatusFailed,
		Environment: Environment{Provider: "netns", Mode: "plain", DataPlane: "kernel", Version: "v0.1.0", Kernel: "6.8.0",
			CPUs: 2, CPUModel: "Test CPU", GoVersion: "go1.26", Rootless: true, NotReadyGrace: "5s", BucketMs: 100, BudgetRPS: 600},
		Trials: []*Trial{{
			Scenario: "node-crash", Description: "crash the last node", Status: StatusFailed, Error: "partial",
			Started: at(time.Second), BringUpSeconds: 1.25, Dir: "01-node-crash",
			Topology: Topology{
				Nodes:    []string{"node-1", "node-2", "node-3"},
				Pods:     []PodInfo{{Name: "client-n1", Node: "node-1", IP: "10.244.1.2", Role: "client"}},
				Services: []SvcInfo{{Name: "echo-n3", VIP: "10.96.0.3", Port: 80, Pods: []string{"server-n3"}}},
			},
			Flows:           []FlowRef{{FlowMeta: flow, Events: "01-node-crash/flows/" + flow.ID + ".jsonl"}},
			Window:          &Window{Start: at(2 * time.Second), End: at(24 * time.Second)},
			Faults:          []FaultRecord{{Kind: "node-crash", Target: "node-3", Inject: at(7 * time.Second), Recover: ptr(at(15 * time.Second)), Detail: "links down"}},
			EndpointChanges: []EndpointChange{{At: at(9 * time.Second), Service: "echo-n3", Endpoints: []string{}}},
			CPU:             &CPU{IntervalMs: 500, Busy: []float64{0.25, 0.5}, Mean: 0.375, Max: 0.5},
			Summary: &measure.Trial{
				Flows:        []measure.FlowSummary{sum, ctlSum},
				Radius:       measure.BlastRadius{Flows: []string{flow.ID}, Pods: []string{"client-n1", "server-n3"}, Nodes: []string{"node-1", "node-3"}},
				Noisy:        true,
				NoisyReasons: []string{"because"},
			},
			Precision:    []PrecisionCheck{{Flow: flow.ID, TruthSeconds: 0.1, MeasuredSeconds: 0.15, ErrorSeconds: 0.05, Within: true}},
			Expectations: []ExpectationResult{{Name: "a", Pass: true}, {Name: "b", Detail: "why"}},
			Noisy:        true,
			NoisyReasons: []string{"because"},
		}},
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  *Run
	}{
		{name: "every field set", run: fullRun()},
		{name: "running, no trials yet", run: &Run{SchemaVersion: SchemaVersion, ID: "x", Command: []string{}, Started: t0, Status: StatusRunning, Trials: []*Trial{}}},
		{name: "trial with only a status", run: &Run{SchemaVersion: SchemaVersion, ID: "y", Command: []string{"run"}, Started: t0, Status: StatusError,
			Trials: []*Trial{{Scenario: "baseline", Status: StatusError, Error: "boom", Started: t0, Dir: "01-baseline",
				Topology: Topology{Nodes: []string{}, Pods: []PodInfo{}, Services: []SvcInfo{}}, Flows: []FlowRef{}, Faults: []FaultRecord{}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := Save(dir, tc.run); err != nil {
				t.Fatal(err)
			}
			got, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.run) {
				gb, _ := json.MarshalIndent(got, "", " ")
				wb, _ := json.MarshalIndent(tc.run, "", " ")
				t.Errorf("round trip mismatch:\n got %s\nwant %s", gb, wb)
			}
			st, err := os.Stat(filepath.Join(dir, "run.json"))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o644 {
				t.Errorf("run.json mode %v, want 0644", st.Mode().Perm())
			}
		})
	}
}

func TestSaveLeavesNoTempFiles(t *testing.T) {
	dir := t.TempDir()
	// Something else lives in a run folder too; Save must not touch it.
	if err := os.Mkdir(filepath.Join(dir, "01-baseline"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := fullRun()
	for i := range 20 {
		r.ID = fmt.Sprintf("run-%d", i)
		if err := Save(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"01-baseline", "run.json"}; !reflect.DeepEqual(names, want) {
		t.Errorf("folder holds %v, want %v", names, want)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "run-19" {
		t.Errorf("ID = %q, want the last save's run-19", got.ID)
	}
}

func TestSaveErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	err := Save(missing, fullRun())
	if err == nil || !strings.HasPrefix(err.Error(), "write run.json: ") {
		t.Errorf("Save into a missing folder: err = %v, want a write run.json error", err)
	}
	if _, serr := os.Stat(missing); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("Save created %s: %v", missing, serr)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string // "" = no run.json at all
		check   func(t *testing.T, dir string, err error)
	}{
		{
			name: "no run.json",
			check: func(t *testing.T, dir string, err error) {
				if !errors.Is(err, os.ErrNotExist) {
					t.Errorf("err = %v, want ErrNotExist", err)
				}
			},
		},
		{
			name:    "newer schema",
			content: `{"schemaVersion": 3, "id": "x", "status": "done"}`,
			check: func(t *testing.T, dir string, err error) {
				if want := fmt.Sprintf("%s: schema version 3, this build reads 1 to %d", dir, SchemaVersion); err == nil || err.Error() != want {
					t.Errorf("err = %v, want %q", err, want)
				}
			},
		},
		{
			name:    "no schema version",
			content: `{"id": "x", "status": "done"}`,
			check: func(t *testing.T, dir string, err error) {
				if want := fmt.Sprintf("%s: schema version 0, this build reads 1 to %d", dir, SchemaVersion); err == nil || err.Error() != want {
					t.Errorf("err = %v, want %q", err, want)
				}
			},
		},
		{
			name:    "truncated JSON",
			content: `{"schemaVersion": 1, "id": "x", "sta`,
			check: func(t *testing.T, dir string, err error) {
				if want := filepath.Join(dir, "run.json") + ": "; err == nil || !strings.HasPrefix(err.Error(), want) {
					t.Errorf("err = %v, want prefix %q", err, want)
				}
			},
		},
		{
			name:    "wrong type",
			content: `{"schemaVersion": "1"}`,
			check: func(t *testing.T, dir string, err error) {
				if want := filepath.Join(dir, "run.json") + ": "; err == nil || !strings.HasPrefix(err.Error(), want) {
					t.Errorf("err = %v, want prefix %q", err, want)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run-folder")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.content != "" {
				if err := os.WriteFile(filepath.Join(dir, "run.json"), []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r, err := Load(dir)
			if r != nil {
				t.Errorf("Load returned a run with an error: %+v", r)
			}
			tc.check(t, dir, err)
		})
	}
}

// TestSaveAtomicUnderConcurrentReads rewrites run.json over and over, with
// sizes going up and down, while another goroutine reads it: every read must
// be a whole, valid run.json.
func TestSaveAtomicUnderConcurrentReads(t *testing.T) {
	dir := t.TempDir()
	base := fullRun()
	if err := Save(dir, base); err != nil {
		t.Fatal(err)
	}
	const iterations = 200
	done := make(chan struct{})
	var wg sync.WaitGroup
	var saveErr error
	wg.Go(func() {
		defer close(done)
		for i := range iterations {
			r := fullRun()
			r.ID = fmt.Sprintf("run-%03d", i)
			// Alternate between a large and a small file so a reader of a
			// file being rewritten in place would see a torn mix.
			if i%2 == 0 {
				for range 1 + i%7 {
					r.Trials = append(r.Trials, base.Trials[0])
				}
			} else {
				r.Trials = nil
			}
			if err := Save(dir, r); err != nil {
				saveErr = err
				return
			}
		}
	})
	reads := 0
	for {
		finished := false
		select {
		case <-done:
			finished = true
		default:
		}
		b, err := os.ReadFile(filepath.Join(dir, "run.json"))
		if err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		if !json.Valid(b) {
			t.Fatalf("read %d: run.json is not valid JSON (%d bytes): %.200s", reads, len(b), b)
		}
		r, err := Load(dir)
		if err != nil {
			t.Fatalf("read %d: Load: %v", reads, err)
		}
		if !strings.HasPrefix(r.ID, "run-") && r.ID != base.ID {
			t.Fatalf("read %d: unexpected ID %q", reads, r.ID)
		}
		reads++
		if finished {
			break
		}
	}
	wg.Wait()
	if saveErr != nil {
		t.Fatal(saveErr)
	}
	r, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("run-%03d", iterations-1); r.ID != want {
		t.Errorf("final ID = %q, want %q", r.ID, want)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "run.json" {
		t.Errorf("folder left with %d entries: %v", len(ents), ents)
	}
	t.Logf("%d concurrent reads", reads)
}
