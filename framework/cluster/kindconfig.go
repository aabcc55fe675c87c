package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"

	"blastradius.dev/blastradius/internal/oneline"
)

// LoadKindConfig reads and checks a kind cluster configuration the way kind
// itself decodes it (strict: unknown fields are errors), and checks what
// blastradius needs of it: one control plane and at least two workers, so a
// worker can fail while traffic between two others is measured. Errors are
// one line naming the file.
func LoadKindConfig(path string) (*v1alpha4.Cluster, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kind config: %w", err)
	}
	cfg, err := ParseKindConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("kind config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseKindConfig is LoadKindConfig on bytes.
func ParseKindConfig(raw []byte) (*v1alpha4.Cluster, error) {
	var tm struct {
		Kind       string `yaml:"kind"`
		APIVersion string `yaml:"apiVersion"`
	}
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return nil, fmt.Errorf("not YAML: %v", oneline.Lines(err.Error()))
	}
	if tm.APIVersion != "kind.x-k8s.io/v1alpha4" || tm.Kind != "Cluster" {
		return nil, fmt.Errorf("want kind: Cluster, apiVersion: kind.x-k8s.io/v1alpha4; got kind %q apiVersion %q", tm.Kind, tm.APIVersion)
	}
	cfg := &v1alpha4.Cluster{}
	d := yaml.NewDecoder(bytes.NewReader(raw))
	d.KnownFields(true)
	if err := d.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("invalid: %v", oneline.Lines(err.Error()))
	}
	v1alpha4.SetDefaultsCluster(cfg)
	cp, workers := 0, 0
	for _, n := range cfg.Nodes {
		switch n.Role {
		case v1alpha4.ControlPlaneRole:
			cp++
		case v1alpha4.WorkerRole:
			workers++
		default:
			return nil, fmt.Errorf("node role %q is neither control-plane nor worker", n.Role)
		}
	}
	if cp < 1 {
		return nil, fmt.Errorf("needs a control-plane node")
	}
	if workers < 2 {
		return nil, fmt.Errorf("needs at least 2 workers to measure a node failure between others, has %d", workers)
	}
	return cfg, nil
}
