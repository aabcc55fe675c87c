package scenario

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/evidence"
	"blastradius.dev/blastradius/proxy/netnsx"
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
	evidenceDir       = "evidence"
	netnsSourcePrefix = "netns."
	proxySourcePrefix = "proxy."
)

// MetricsTarget is one proxy's metrics endpoint, as a data plane lists it.
type MetricsTarget struct {
	Pod  string // the pod the proxy runs in
	Role string // node-proxy, sidecar or waypoint
	URL  string // http://<pod IP>:<admin port>/metrics
}

// metricsTargets is what a data plane offers to have its proxies sampled
// during load.
type metricsTargets interface {
	MetricsTargets() []MetricsTarget
}

// startEvidence starts sampling every pod's TCP counters and, when the data
// plane lists them, its proxies' metrics into <dir>/evidence, until ctx ends.
// The returned function stops it and waits for the files to be complete.
// Evidence explains outages but is not needed to measure them, so a sampler
// that cannot start is logged and the trial goes on without it.
func startEvidence(ctx context.Context, dir string, cl *netns.Cluster, dp DataPlane, p plan, logf func(string, ...any)) (stop func()) {
	roles := map[string]string{}
	for _, pp := range p.Pods {
		roles[pp.Name] = pp.Role
	}
	var targets []MetricsTarget
	if mt, ok := dp.(metricsTargets); ok {
		targets = mt.MetricsTargets()
	}
	if cp, ok := dp.(controlPlane); ok {
		roles[cp.ControlPlanePod()] = "control-plane"
	}
	cfg := evidence.Config{Dir: filepath.Join(dir, evidenceDir), Logf: logf}
	for _, t := range targets {
		pod, ok := cl.Pod(t.Pod)
		if !ok {
			continue
		}
		if roles[t.Pod] == "" {
			roles[t.Pod] = t.Role
		}
		cfg.Proxies = append(cfg.Proxies, evidence.Proxy{
			Source: evidence.Source{Name: proxySourcePrefix + t.Pod, Pod: t.Pod, Node: pod.Node.Name, Role: t.Role},
			URL:    t.URL, Dial: loopbackDialer(pod, t.URL),
		})
	}
	for _, pod := range cl.Pods() {
		role := roles[pod.Name]
		if role == "" {
			role = "infra"
		}
		cfg.Namespaces = append(cfg.Namespaces, evidence.Namespace{
			Source: evidence.Source{Name: netnsSourcePrefix + pod.Name, Pod: pod.Name, Node: pod.Node.Name, Role: role},
			FD:     pod.NetNSFD(),
		})
	}
	s, err := evidence.Start(ctx, cfg)
	if err != nil {
		logf("evidence sampling off: %v", err)
		return func() {}
	}
	return s.Stop
}

// loopbackDialer connects to the URL's port on 127.0.0.1 from inside the
// pod: the admin port listens on every address, loopback is never cut by a
// fault, and the redirect rules leave 127.0.0.0/8 alone. So a proxy on a
// partitioned node is still read, and the scrape adds no packets (nor
// retransmissions) to the pod's network.
func loopbackDialer(pod *netns.Pod, rawURL string) func(context.Context) (net.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Port() == "" {
		return nil // dial the URL as it is
	}
	addr := net.JoinHostPort("127.0.0.1", u.Port())
	fd := pod.NetNSFD()
	return func(ctx context.Context) (net.Conn, error) {
		return netnsx.DialTCP(ctx, fd, addr, 0, 0)
	}
}

// trialEvidence reads one trial's evidence for many intervals.
type trialEvidence struct {
	f *evidence.Folder
	m *evidence.Manifest
}

// openTrialEvidence opens <trialDir>/evidence; nil when there is none (the
// sampler did not run, or a provider without it).
func openTrialEvidence(trialDir string) *trialEvidence {
	dir := filepath.Join(trialDir, evidenceDir)
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
