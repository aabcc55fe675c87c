package soak

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/sandbox"
)

// TestMain prepares the sandbox when this test binary is the sandboxed
// re-execution of TestSoakShort; otherwise tests run as usual (the trend
// and /proc tests need no namespaces).
func TestMain(m *testing.M) {
	if sandbox.Inside() {
		if err := sandbox.Setup(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// TestSoakShort is a real soak, short: the embedded ambient cluster, load,
// a fault every 10 s for 40 s, samples every 3 s. It re-executes this test
// binary inside the sandbox (user, net, mount and PID namespaces), as
// `blastradius soak` does, and is skipped only when the kernel refuses those
// namespaces.
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a 40 s soak")
	}
	if !sandbox.Inside() {
		dir := t.TempDir()
		bin := filepath.Join(dir, "blastradius")
		// The slim build is what pods run; it builds in a fraction of the
		// time of the full CLI.
		if out, err := exec.Command("go", "build", "-tags", "nokube", "-o", bin, "blastradius.dev/blastradius/cmd/blastradius").CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
		t.Setenv("BR_SOAK_TEST_BINARY", bin)
		args := []string{"-test.run=^TestSoakShort$", "-test.count=1", "-test.timeout=4m"}
		if testing.Verbose() {
			args = append(args, "-test.v")
		}
		code, err := sandbox.Enter(args)
		if err != nil {
			t.Skipf("no sandbox: %v", err)
		}
		if code != 0 {
			t.Fatalf("sandboxed soak test exited %d (its output is above)", code)
		}
		return
	}

	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sum, err := Run(ctx, Config{Duration: 40 * time.Second, FaultEvery: 10 * time.Second, SampleEvery: 3 * time.Second,
		Nodes: 3, QPS: 90, Waypoints: 2, CertTTL: DefaultCertTTL, Out: out,
		Binary: os.Getenv("BR_SOAK_TEST_BINARY"), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Faults) < 3 {
		t.Fatalf("%d faults, want ≥ 3", len(sum.Faults))
	}
	for _, f := range sum.Faults {
		if f.Error != "" {
			t.Errorf("fault %d %s on %s: %s", f.N, f.Fault, f.Target, f.Error)
		}
	}
	if sum.Load.Requests == 0 || sum.Load.OK == 0 {
		t.Errorf("load: %+v", sum.Load)
	}

	// Every sample and fault is in soak.jsonl, as a whole line.
	fh, err := os.Open(filepath.Join(out, "soak.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	good := map[string]int{}     // process -> samples with values
	withG := map[string]int{}    // process -> samples with a goroutine count
	restarts := map[string]int{} // process -> highest restart count
	pids := map[string]map[int]bool{}
	kinds := map[string]int{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		var line struct {
			Kind string `json:"kind"`
			Sample
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("soak.jsonl line %q: %v", sc.Text(), err)
		}
		kinds[line.Kind]++
		if line.Kind != "process" {
			continue
		}
		s := line.Sample
		if s.valid() && s.Goroutines > 0 {
			withG[s.Process]++
		}
		if s.valid() {
			good[s.Process]++
			if pids[s.Process] == nil {
				pids[s.Process] = map[int]bool{}
			}
			pids[s.Process][s.PID] = true
		}
		restarts[s.Process] = max(restarts[s.Process], s.Restarts)
	}
	if kinds["process"] != sum.Samples || kinds["fault"] != len(sum.Faults) || kinds["load"] == 0 {
		t.Errorf("soak.jsonl has %v; the summary %d samples and %d faults", kinds, sum.Samples, len(sum.Faults))
	}
	// ≥ 10 rounds in 40 s at 3 s; a process being restarted may miss one.
	for _, p := range []string{"controlplane", "ztunnel-n1", "ztunnel-n2", "ztunnel-n3", "waypoint-0", "waypoint-1"} {
		if good[p] < 8 {
			t.Errorf("%s: %d samples with values, want ≥ 8", p, good[p])
		}
		// go_goroutines on every admin /metrics: node proxy, waypoint and
		// control plane.
		if withG[p] < good[p]/2 {
			t.Errorf("%s: goroutines in %d of %d samples; /metrics lacks go_goroutines?", p, withG[p], good[p])
		}
	}
	// The rotation starts node-proxy-crash on node-2, node-agent-crash on
	// node-1, node-proxy-restart on node-3.
	for _, p := range []string{"ztunnel-n2", "ztunnel-n3"} {
		if restarts[p] < 1 || len(pids[p]) < 2 {
			t.Errorf("%s: restarts %d, %d PIDs; want the fault's restart recorded with a new PID", p, restarts[p], len(pids[p]))
		}
	}
	if restarts["ztunnel-n1"] != 0 || len(pids["ztunnel-n1"]) != 1 {
		t.Errorf("ztunnel-n1 (never faulted): restarts %d, PIDs %v", restarts["ztunnel-n1"], pids["ztunnel-n1"])
	}

	var disk Summary
	b, err := os.ReadFile(filepath.Join(out, "soak.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &disk); err != nil {
		t.Fatal(err)
	}
	if disk.Verdict == "" || len(disk.Faults) != len(sum.Faults) {
		t.Errorf("soak.json: verdict %q, %d faults", disk.Verdict, len(disk.Faults))
	}
	found := false
	for _, c := range sum.Checks {
		found = found || c.Process == "ztunnel-n1"
	}
	if !found {
		t.Errorf("ztunnel-n1 lived through the soak but was not judged: checks %+v (%s)", sum.Checks, sum.Reason)
	}
	t.Logf("verdict %s: %s", sum.Verdict, sum.Reason)
}
