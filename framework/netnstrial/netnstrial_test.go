package netnstrial_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/dataplane"
	"blastradius.dev/blastradius/framework/netnstrial"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
)

func reference() *netnstrial.Backend {
	ref := func(mode, dir string, logf func(string, ...any)) (netnstrial.DataPlane, error) {
		return dataplane.New(mode, dir, logf)
	}
	return &netnstrial.Backend{DataPlanes: map[string]netnstrial.NewDataPlane{"ambient": ref, "sidecar": ref}}
}

// A meshed mode with no data plane wired in is an error, never a trial
// that quietly runs without a mesh.
func TestMeshedModeWithoutDataPlaneIsAnError(t *testing.T) {
	b := &netnstrial.Backend{}
	if dp, err := b.DataPlane("none", t.TempDir(), nil); err != nil || dp != nil {
		t.Errorf("mode none: %v, %v", dp, err)
	}
	if _, err := b.DataPlane("ambient", t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "mode ambient has no data plane") {
		t.Fatalf("mode ambient without a data plane: %v", err)
	}
	sc, err := scenario.Lookup(scenario.FaultNodeProxyCrash)
	if err != nil {
		t.Fatal(err)
	}
	r, err := scenario.NewRunner(scenario.Options{Dir: t.TempDir(), Bucket: 100 * time.Millisecond, BudgetRPS: 100, Timeout: time.Second, Backend: b},
		results.Environment{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := r.TrialIn(context.Background(), sc, "ambient", 1)
	if err == nil || tr.Status != results.StatusError || !strings.Contains(tr.Error, "has no data plane") {
		t.Errorf("trial in ambient without a data plane: %v (%s: %s)", err, tr.Status, tr.Error)
	}
}

// The embedded cluster offers every cluster fault in every mode; the data
// plane of the mode adds its own.
func TestCapabilitiesOfEachMode(t *testing.T) {
	b := reference()
	infra := []scenario.Capability{scenario.CapCrashNode, scenario.CapPartitionNodes, scenario.CapPartitionSegment,
		scenario.CapDropFlow, scenario.CapDropPod, scenario.CapDrainNode}
	for mode, want := range map[string][]scenario.Capability{
		"none":    infra,
		"sidecar": append(infra, scenario.CapCrashSidecar, scenario.CapRestartAppPod, scenario.CapCrashControlPlane, scenario.CapStopControlPlane),
		"ambient": append(infra, scenario.CapCrashNodeProxy, scenario.CapRestartNodeProxy, scenario.CapCrashNodeAgent, scenario.CapWaypoints,
			scenario.CapCrashControlPlane, scenario.CapStopControlPlane),
	} {
		caps := b.Capabilities(mode)
		for _, c := range want {
			if caps[c] == "" {
				t.Errorf("mode %s lacks %s (has %v)", mode, c, caps)
			}
		}
		if mode == "none" && len(caps) != len(infra) {
			t.Errorf("mode none offers %d capabilities, want the %d of the cluster: %v", len(caps), len(infra), caps)
		}
	}
	// Every fault of the catalogue can run somewhere on the embedded cluster.
	offered := map[string]bool{}
	for _, mode := range []string{"none", "sidecar", "ambient"} {
		for f := range scenario.FaultsOffered(b, mode) {
			offered[f] = true
		}
	}
	for _, f := range scenario.FaultNames() {
		if !offered[f] {
			t.Errorf("fault %s runs in no mode of the embedded cluster", f)
		}
	}
}
