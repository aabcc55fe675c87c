package scenario

import "testing"

func TestMeshModes(t *testing.T) {
	for _, tc := range []struct{ mode, base, mesh string }{
		{"none", "none", ""},
		{"ambient", "ambient", MeshReference},
		{"sidecar", "sidecar", MeshReference},
		{"istio-ambient", "ambient", MeshIstio},
		{"istio-sidecar", "sidecar", MeshIstio},
	} {
		if got := BaseMode(tc.mode); got != tc.base {
			t.Errorf("BaseMode(%s) = %s, want %s", tc.mode, got, tc.base)
		}
		if got := MeshOf(tc.mode); got != tc.mesh {
			t.Errorf("MeshOf(%s) = %q, want %q", tc.mode, got, tc.mesh)
		}
		if tc.mesh != "" {
			if got := ModeOf(tc.mesh, tc.base); got != tc.mode {
				t.Errorf("ModeOf(%s, %s) = %s, want %s", tc.mesh, tc.base, got, tc.mode)
			}
		}
	}
	// An Istio mode plans, skips and reaches as its base mode does.
	sc, err := Lookup("node-proxy-crash")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := PlanFor(sc, "ambient", 450)
	if err != nil {
		t.Fatal(err)
	}
	ist, err := PlanFor(sc, "istio-ambient", 450)
	if err != nil {
		t.Fatal(err)
	}
	if ist.Skip != "" || ist.Mode != "istio-ambient" || len(ist.Flows) != len(ref.Flows) || ist.Target != ref.Target {
		t.Errorf("istio-ambient plan: skip %q, mode %s, %d flows, target %s; the reference's: %d flows, target %s",
			ist.Skip, ist.Mode, len(ist.Flows), ist.Target, len(ref.Flows), ref.Target)
	}
	if pl, _ := PlanFor(sc, "istio-sidecar", 450); pl.Skip == "" {
		t.Error("node-proxy-crash plans in istio-sidecar: want skipped, as in sidecar")
	}
}
