package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/load"
)

func TestEvaluateGoals(t *testing.T) {
	mode := func(name string, p50, mbps float64, rss ...float64) *ModeResult {
		m := &ModeResult{Mode: name, Latency: &Latency{OK: 100, P50Ms: p50}, Throughput: &Throughput{MBps: mbps}}
		for i, r := range rss {
			m.Proxies = append(m.Proxies, &ProcUsage{Pod: "ztunnel-n" + string(rune('1'+i)), PeakRSSMB: r})
		}
		return m
	}
	g := EvaluateGoals([]*ModeResult{mode("none", 0.2, 1000), mode("sidecar", 2, 100, 40, 40), mode("ambient", 0.45, 450, 20, 28)})
	if len(g) != 3 {
		t.Fatalf("%d goals", len(g))
	}
	want := []bool{true, true, true}
	for i, w := range want {
		if g[i].Pass == nil || *g[i].Pass != w {
			t.Errorf("goal %q: pass %v, want %v (%s)", g[i].Name, g[i].Pass, w, g[i].Measured)
		}
	}
	g = EvaluateGoals([]*ModeResult{mode("none", 0.2, 1000), mode("ambient", 0.6, 300, 31, 20)})
	for i := range g {
		if g[i].Pass == nil || *g[i].Pass {
			t.Errorf("goal %q: pass %v, want false (%s)", g[i].Name, g[i].Pass, g[i].Measured)
		}
	}
	// Missing or failed modes: not evaluated.
	failed := mode("none", 0.2, 1000)
	failed.Error = "boom"
	g = EvaluateGoals([]*ModeResult{failed, mode("ambient", 0.3, 500, 10)})
	if g[0].Pass != nil || g[1].Pass != nil || g[2].Pass == nil {
		t.Errorf("with none failed: %+v", g)
	}
}

func TestSummarize(t *testing.T) {
	if Summarize(nil, nil, nil) != nil {
		t.Error("no proxies: want nil")
	}
	ps := []*ProcUsage{
		{LatencyCPUSeconds: 1, ThroughputCPUSeconds: 2, PeakRSSMB: 20},
		{LatencyCPUSeconds: 3, ThroughputCPUSeconds: 1, PeakRSSMB: 25},
	}
	s := Summarize(ps, &Latency{Requests: 10000}, &Throughput{BulkResult: load.BulkResult{Acked: true, Delivered: 2e9}})
	if s.Count != 2 || s.LatencyCPUSum != 4 || s.LatencyCPUMax != 3 || s.ThroughputCPUSum != 3 || s.ThroughputCPUMax != 2 ||
		s.PeakRSSMaxMB != 25 || s.PeakRSSSumMB != 45 {
		t.Errorf("summary %+v", s)
	}
	if s.CPUMsPer1000Requests != 400 || s.CPUSecondsPerGB != 1.5 {
		t.Errorf("per 1000 requests %v ms, per GB %v s; want 400, 1.5", s.CPUMsPer1000Requests, s.CPUSecondsPerGB)
	}
}

func TestPrintTable(t *testing.T) {
	r := &Report{Config: Config{QPS: 1000, Connections: 16, DurationS: 10, WarmupS: 2, ThroughputDurationS: 5},
		Modes: []*ModeResult{
			{Mode: "none", Latency: &Latency{P50Ms: 0.2, P99Ms: 1, AchievedRPS: 1000}, Throughput: &Throughput{MBps: 900, BulkResult: load.BulkResult{Acked: true}}},
			{Mode: "ambient", Error: "deploy: boom"},
		}}
	r.Goals = EvaluateGoals(r.Modes)
	var b bytes.Buffer
	PrintTable(&b, r)
	out := b.String()
	for _, want := range []string{"p50 ms", "0.200", "900.0", "ambient: ERROR: deploy: boom", "n/a"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestParseFlags(t *testing.T) {
	c, err := ParseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Modes, ",") != "none,sidecar,ambient" || c.QPS != 1000 || c.Duration != 10*time.Second ||
		c.ThroughputDuration != 5*time.Second || c.Warmup != 2*time.Second {
		t.Errorf("defaults %+v", c)
	}
	c, err = ParseFlags([]string{"--modes", "ambient, none", "--qps", "500", "--duration", "3s"}, io.Discard)
	if err != nil || strings.Join(c.Modes, ",") != "ambient,none" || c.QPS != 500 || c.DurationS != 3 {
		t.Errorf("parsed %+v, %v", c, err)
	}
	bad := map[string][]string{
		`"bogus" unknown`:                  {"--modes", "none,bogus"},
		"given twice":                      {"--modes", "none,none"},
		"no mode given":                    {"--modes", ""},
		"--qps 0 out of range":             {"--qps", "0"},
		"--qps NaN out of range":           {"--qps", "NaN"},
		"--connections 0 out of range":     {"--connections", "0"},
		"--duration 100ms out of range":    {"--duration", "100ms"},
		"--throughput-duration":            {"--throughput-duration", "0s"},
		"--warmup -1s out of range":        {"--warmup", "-1s"},
		"--timeout 1ms out of range":       {"--timeout", "1ms"},
		`unexpected argument "stray"`:      {"stray"},
		"flag provided but not defined":    {"--frobnicate"},
		`invalid value "fast" for flag -d`: {"--duration", "fast"},
	}
	for want, args := range bad {
		_, err := ParseFlags(args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: error %v, want one containing %q", args, err, want)
		}
	}
	var help bytes.Buffer
	if _, err := ParseFlags([]string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	for _, f := range []string{"-modes", "-qps", "-duration", "-throughput-duration", "-out", "-connections", "-warmup"} {
		if !strings.Contains(help.String(), f) {
			t.Errorf("--help does not explain %s", f)
		}
	}
}

func TestAgentMainBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--sink-listen", ":0", "--send", "127.0.0.1:1"},
		{"--send", "127.0.0.1:1"},
		{"--send", "127.0.0.1:1", "--result", "x", "--duration", "0s"},
		{"--bogus"},
	} {
		var out, errb bytes.Buffer
		if code := AgentMain(args, &out, &errb); code != 2 || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line", args, code, errb.String())
		}
	}
}

// The sender writes its result file, confirmed by a sink, and a restarted
// sender that finds it does not send again.
func TestAgentMainSend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- load.ServeSink(ctx, ln, nil) }()
	defer func() { cancel(); <-done }()

	result := filepath.Join(t.TempDir(), "throughput.json")
	args := []string{"--send", ln.Addr().String(), "--duration", "200ms", "--result", result}
	var out, errb bytes.Buffer
	if code := AgentMain(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, err := os.ReadFile(result)
	if err != nil {
		t.Fatal(err)
	}
	var r load.BulkResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Acked || r.Bytes == 0 || r.Delivered != r.Bytes {
		t.Errorf("result %+v", r)
	}
	out.Reset()
	if code := AgentMain(args, &out, &errb); code != 0 || !strings.Contains(out.String(), "not sending") {
		t.Errorf("second run: exit %d, %q", code, out.String())
	}
	late := append(args[:len(args):len(args)], "--not-after", "1")
	os.Remove(result)
	out.Reset()
	if code := AgentMain(late, &out, &errb); code != 0 || !strings.Contains(out.String(), "not sending") {
		t.Errorf("after --not-after: exit %d, %q", code, out.String())
	}
	if _, err := os.Stat(result); err == nil {
		t.Error("a late sender wrote a result")
	}
}
