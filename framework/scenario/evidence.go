package scenario

import (
	"path/filepath"
	"slices"
	"time"

	"blastradius.dev/blastradius/framework/evidence"
)

// Evidence sources of an embedded-cluster trial, in <trial>/evidence/:
//
//   - netns.<pod>: the kernel TCP counters of every pod's network namespace
//     (workloads, the control plane, node proxies, waypoints);
//   - proxy.<pod>: the /metrics counters of the proxy running in <pod> (a
//     node proxy's own pod in ambient mode, the application pod for a
//     sidecar).
//
// sources.json records each source's pod, node and role.
const (
	EvidenceDir       = "evidence"
	NetnsSourcePrefix = "netns."
	ProxySourcePrefix = "proxy."
)

// MetricsTarget is one proxy's metrics endpoint, as a data plane lists it.
type MetricsTarget struct {
	Pod  string // the pod the proxy runs in
	Role string // node-proxy, sidecar or waypoint
	URL  string // http://<pod IP>:<admin port>/metrics
}

// MetricsTargets is what a data plane offers to have its proxies sampled
// during load.
type MetricsTargets interface {
	MetricsTargets() []MetricsTarget
}

// trialEvidence reads one trial's evidence for many intervals.
type trialEvidence struct {
	f *evidence.Folder
	m *evidence.Manifest
}

// openTrialEvidence opens <trialDir>/evidence; nil when there is none (the
// sampler did not run, or a provider without it).
func openTrialEvidence(trialDir string) *trialEvidence {
	dir := filepath.Join(trialDir, EvidenceDir)
	m, err := evidence.ReadManifest(dir)
	if err != nil {
		return nil
	}
	return &trialEvidence{f: evidence.Open(dir), m: m}
}

// interval is what the network and the proxies of an outage's flow counted
// over [from, to]: the namespaces of pods and any proxy inside them
// (sidecars), plus the node proxies of nodes and their pods' namespaces.
// Pass a flow's client and server pods and their nodes. Nil when nothing
// was sampled.
func (te *trialEvidence) interval(from, to time.Time, pods, nodes []string) *evidence.Evidence {
	if te == nil {
		return nil
	}
	var sources []string
	for _, s := range te.m.Sources {
		mine := slices.Contains(pods, s.Pod) ||
			slices.Contains(nodes, s.Node) && slices.ContainsFunc(te.m.Sources, func(o evidence.Source) bool {
				return o.Pod == s.Pod && o.Kind == evidence.KindMetrics && o.Role == "node-proxy"
			})
		if mine {
			sources = append(sources, s.Name)
		}
	}
	if len(sources) == 0 {
		return nil
	}
	return te.f.Evidence(from, to, sources)
}
