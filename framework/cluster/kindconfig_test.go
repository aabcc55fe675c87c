package cluster

import (
	"strings"
	"testing"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
)

func TestRepositoryKindConfig(t *testing.T) {
	cfg, err := LoadKindConfig("../../kind-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	roles := map[v1alpha4.NodeRole]int{}
	for _, n := range cfg.Nodes {
		roles[n.Role]++
	}
	if roles[v1alpha4.ControlPlaneRole] != 1 || roles[v1alpha4.WorkerRole] != 3 {
		t.Fatalf("roles %v, want 1 control-plane + 3 workers", roles)
	}
}

func TestBadKindConfig(t *testing.T) {
	cases := map[string]string{
		"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n":                                                "apiVersion",
		"kind: Pod\napiVersion: kind.x-k8s.io/v1alpha4\n":                                                    "kind",
		"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodez: []\n":                                     "invalid",
		"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: boss\n":                          "neither",
		"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: worker\n- role: worker\n":        "control-plane",
		"kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: control-plane\n- role: worker\n": "at least 2 workers",
		"\t: [": "not YAML",
	}
	for in, want := range cases {
		_, err := ParseKindConfig([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: got %v, want one line containing %q", in, err, want)
		}
	}
}
