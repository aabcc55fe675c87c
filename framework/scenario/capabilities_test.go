package scenario

import (
	"context"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

var allCapabilities = map[Capability]bool{
	CapCrashNode: true, CapPartitionNodes: true, CapPartitionSegment: true, CapDropFlow: true, CapDropPod: true,
	CapDrainNode: true, CapCrashNodeProxy: true, CapRestartNodeProxy: true, CapCrashControlPlane: true,
	CapStopControlPlane: true, CapCrashNodeAgent: true, CapWaypoints: true, CapCrashSidecar: true, CapRestartAppPod: true,
	CapRollNodeProxies: true,
}

// Every fault kind names what it needs, from the known capabilities: the
// vocabulary a backend answers in.
func TestEveryFaultNamesKnownNeeds(t *testing.T) {
	for _, name := range FaultNames() {
		k := faultKinds[name]
		for _, f := range []Fault{{Kind: name}, {Kind: name, Drop: DropClientPod}} {
			got := k.Needs(f)
			if len(got) == 0 {
				t.Errorf("fault %s needs nothing", name)
			}
			for _, c := range got {
				if !allCapabilities[c] {
					t.Errorf("fault %s needs unknown capability %q", name, c)
				}
			}
		}
	}
	if got := needs(Fault{Kind: FaultBlackHole, Drop: DropClientPod}); len(got) != 1 || got[0] != CapDropPod {
		t.Errorf("client-pod black hole needs %v, want [drop-pod]", got)
	}
	if got := needs(Fault{Kind: FaultBlackHole}); len(got) != 1 || got[0] != CapDropFlow {
		t.Errorf("flow black hole needs %v, want [drop-flow]", got)
	}
}

// fakeBackend offers caps and counts the trials it was asked to run.
type fakeBackend struct {
	caps   Capabilities
	trials int
}

func (f *fakeBackend) CheckMode(string) error           { return nil }
func (f *fakeBackend) Capabilities(string) Capabilities { return f.caps }
func (f *fakeBackend) Trial(context.Context, *TrialRun) error {
	f.trials++
	return nil
}

func newTestRunner(t *testing.T, b Backend) *Runner {
	t.Helper()
	r, err := NewRunner(Options{Dir: t.TempDir(), Bucket: 100 * time.Millisecond, BudgetRPS: 100, Timeout: time.Second, Backend: b},
		results.Environment{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A fault whose capability the backend lacks is a skipped trial, decided
// before the backend is asked to make anything; one it offers is run.
func TestTrialSkippedWithoutCapability(t *testing.T) {
	sc, err := Lookup(FaultPartition)
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBackend{caps: Capabilities{CapCrashNode: "kill"}}
	r := newTestRunner(t, b)
	tr, err := r.TrialIn(context.Background(), sc, "none", 1)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Status != results.StatusSkipped || !strings.Contains(tr.Error, "needs partition-nodes, which this provider does not offer in mode none (it offers: crash-node)") {
		t.Errorf("trial %s: %q", tr.Status, tr.Error)
	}
	if b.trials != 0 {
		t.Errorf("the backend ran %d trials of a fault it cannot do", b.trials)
	}
	b.caps[CapPartitionNodes] = "nft"
	if _, err := r.TrialIn(context.Background(), sc, "none", 2); err != nil {
		t.Fatal(err)
	}
	if b.trials != 1 {
		t.Errorf("the backend ran %d trials once it offers the capability, want 1", b.trials)
	}
}

func TestNoBackendIsAnError(t *testing.T) {
	sc, err := Lookup(FaultPartition)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := newTestRunner(t, nil).TrialIn(context.Background(), sc, "none", 1)
	if err == nil || tr.Status != results.StatusError {
		t.Errorf("a runner without a backend ran a trial: %v, %s", err, tr.Status)
	}
}

type crasherOnly struct{}

func (crasherOnly) PodNode(string) (string, bool)         { return "", false }
func (crasherOnly) CrashNode(string) (time.Time, error)   { return time.Now(), nil }
func (crasherOnly) RecoverNode(string) (time.Time, error) { return time.Now(), nil }

type proxyOnly struct{}

func (proxyOnly) Describe() string                         { return "test data plane" }
func (proxyOnly) CrashNodeProxy(string) (time.Time, error) { return time.Now(), nil }

// What a backend offers is read off the interfaces its cluster and data
// plane implement, and decides which faults it lists.
func TestCapabilitiesFromInterfaces(t *testing.T) {
	caps := InfraCapabilities(crasherOnly{}, Capabilities{CapCrashNode: "pulled the plug"}).Merge(DataPlaneCapabilities(proxyOnly{}))
	if len(caps) != 2 || caps[CapCrashNode] != "pulled the plug" || caps[CapCrashNodeProxy] == "" {
		t.Fatalf("capabilities %v", caps)
	}
	if n := len(DataPlaneCapabilities(nil)); n != 0 {
		t.Errorf("mode none offers %d data plane capabilities", n)
	}
	got := FaultsOffered(&fakeBackend{caps: caps}, "ambient")
	var names []string
	for n := range got {
		names = append(names, n)
	}
	if len(names) != 2 || got[FaultNodeCrash] != "pulled the plug" || got[FaultNodeProxyCrash] == "" {
		t.Errorf("faults offered: %v", got)
	}
	// node-proxy-crash exists only in ambient mode.
	if _, ok := FaultsOffered(&fakeBackend{caps: caps}, "none")[FaultNodeProxyCrash]; ok {
		t.Error("node-proxy-crash offered in mode none")
	}
}
