package netnstrial

import (
	"context"
	"net"
	"net/url"
	"path/filepath"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/evidence"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/proxy/netnsx"
)

// startEvidence starts sampling every pod's TCP counters and, when the data
// plane lists them, its proxies' metrics into <dir>/evidence (the sources
// scenario's evidence reader knows), until ctx ends. The returned function
// stops it and waits for the files to be complete. Evidence explains
// outages but is not needed to measure them, so a sampler that cannot
// start is logged and the trial goes on without it.
func startEvidence(ctx context.Context, dir string, cl *netns.Cluster, dp DataPlane, p scenario.Plan, logf func(string, ...any)) (stop func()) {
	roles := map[string]string{}
	for _, pp := range p.Pods {
		roles[pp.Name] = pp.Role
	}
	var targets []scenario.MetricsTarget
	if mt, ok := dp.(scenario.MetricsTargets); ok {
		targets = mt.MetricsTargets()
	}
	if cp, ok := dp.(interface{ ControlPlanePod() string }); ok {
		roles[cp.ControlPlanePod()] = "control-plane"
	}
	cfg := evidence.Config{Dir: filepath.Join(dir, scenario.EvidenceDir), Logf: logf}
	for _, t := range targets {
		pod, ok := cl.Pod(t.Pod)
		if !ok {
			continue
		}
		if roles[t.Pod] == "" {
			roles[t.Pod] = t.Role
		}
		cfg.Proxies = append(cfg.Proxies, evidence.Proxy{
			Source: evidence.Source{Name: scenario.ProxySourcePrefix + t.Pod, Pod: t.Pod, Node: pod.Node.Name, Role: t.Role},
			URL:    t.URL, Dial: loopbackDialer(pod, t.URL),
		})
	}
	for _, pod := range cl.Pods() {
		role := roles[pod.Name]
		if role == "" {
			role = "infra"
		}
		cfg.Namespaces = append(cfg.Namespaces, evidence.Namespace{
			Source: evidence.Source{Name: scenario.NetnsSourcePrefix + pod.Name, Pod: pod.Name, Node: pod.Node.Name, Role: role},
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
