package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/internal/atomicjson"
	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/controlplane"
	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/node"
	"blastradius.dev/blastradius/proxy/xds"
	"istio.io/istio/pkg/zdsapi"
)

// Names and ports of the reference data plane on the embedded cluster.
const (
	ControlPlanePod = "controlplane"
	XDSPort         = 15010
	CPAdminPort     = 15014
	ProxyAdminPort  = 15020
	TrustDomain     = "cluster.local"
	Namespace       = "default"
	InpodSocket     = "@blastradius-inpod" // abstract: scoped to the node proxy pod's namespace
)

// ZtunnelPod names the node proxy pod of node i.
func ZtunnelPod(i int) string { return fmt.Sprintf("ztunnel-n%d", i) }

// UID of an application pod.
func UID(pod string) string { return Namespace + "/" + pod }

// New builds the reference data plane for a meshed mode (ambient or
// sidecar); dir is where it keeps its files.
func New(mode, dir string, logf func(string, ...any)) (*Reference, error) {
	switch mode {
	case "ambient", "sidecar":
		return &Reference{Mode: mode, Dir: dir, CertTTL: time.Hour, Drain: 5 * time.Second, Logf: logf}, nil
	}
	return nil, fmt.Errorf("the reference data plane has no mode %q (sidecar, ambient)", mode)
}

// Reference is the reference data plane in one mode.
type Reference struct {
	Mode    string // ambient or sidecar
	Dir     string // where registry.json goes
	CertTTL time.Duration
	Drain   time.Duration
	Handoff string // node proxies' --handoff; empty: theirs
	Logf    func(string, ...any)
	// Waypoint, when WaypointFor is set, puts WaypointReplicas L7 proxies in
	// front of that service: node proxies send its traffic to them.
	WaypointFor      string
	WaypointReplicas int

	cl     *netns.Cluster
	nodes  int
	mu     sync.Mutex
	reg    xds.Snapshot
	eps    map[string][]string      // service -> endpoint pods
	agents map[string]*inpod.Server // node -> its agent; guarded by mu (faults crash and restart them)
	apps   []string                 // application pods, in Deploy's order
	gen    int
	// Proxies is every data plane process by pod, for faults that target them.
	Proxies map[string]*netns.Process
}

// Configure sets a scenario's certificate TTL and drain deadline (0 keeps
// the default).
func (r *Reference) Configure(certTTL, drain time.Duration) {
	if certTTL > 0 {
		r.CertTTL = certTTL
	}
	if drain > 0 {
		r.Drain = drain
	}
}

// ConfigureHandoff sets the node proxies' graceful-restart handoff strategy
// (their --handoff).
func (r *Reference) ConfigureHandoff(h string) { r.Handoff = h }

// Describe implements netnstrial.DataPlane.
func (r *Reference) Describe() string { return "reference " + r.Mode + " data plane" }

// InfraPods: the control plane on node 1 and, in ambient mode, a node proxy
// pod per node.
func (r *Reference) InfraPods(nodes int) []netns.PodSpec {
	r.nodes = nodes
	pods := []netns.PodSpec{{Name: ControlPlanePod, Node: 1}}
	if r.Mode == "ambient" {
		for i := 1; i <= nodes; i++ {
			pods = append(pods, netns.PodSpec{Name: ZtunnelPod(i), Node: i})
		}
		if r.WaypointFor != "" {
			for k := 0; k < r.WaypointReplicas; k++ {
				pods = append(pods, netns.PodSpec{Name: WaypointPod(k), Node: k%nodes + 1})
			}
		}
	}
	return pods
}

// WaypointPod names waypoint replica k.
func WaypointPod(k int) string { return fmt.Sprintf("waypoint-%d", k) }

// WaypointService is the service in front of the waypoint replicas.
const WaypointService = "waypoint"

func (r *Reference) registryPath() string { return filepath.Join(r.Dir, "registry.json") }

// writeRegistry publishes the registry atomically for the control plane.
func (r *Reference) writeRegistry() error {
	r.mu.Lock()
	reg := r.reg
	reg.Services = nil
	for _, s := range r.reg.Services {
		s.Endpoints = nil
		for _, p := range r.eps[s.Name] {
			s.Endpoints = append(s.Endpoints, UID(p))
		}
		reg.Services = append(reg.Services, s)
	}
	r.mu.Unlock()
	return atomicjson.Write(r.registryPath(), reg)
}

// SetPolicies replaces the authorization policies and publishes them.
func (r *Reference) SetPolicies(ps []xds.Policy) error {
	r.mu.Lock()
	r.reg.Policies = ps
	r.mu.Unlock()
	return r.writeRegistry()
}

// EndpointsChanged implements netnstrial.DataPlane.
func (r *Reference) EndpointsChanged(ch netns.EndpointChange) {
	r.mu.Lock()
	if r.eps == nil {
		r.eps = map[string][]string{}
	}
	r.eps[ch.Service] = ch.Endpoints
	known := false
	for _, s := range r.reg.Services {
		known = known || s.Name == ch.Service
	}
	r.mu.Unlock()
	if !known {
		r.syncServices()
	}
	if err := r.writeRegistry(); err != nil {
		r.Logf("registry: %v", err)
	}
}

// syncServices copies the cluster's services into the registry.
func (r *Reference) syncServices() {
	if r.cl == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reg.Services = nil
	for _, s := range r.cl.Services() {
		sv := xds.Service{Name: s.Name, Namespace: Namespace, VIP: s.VIP.String(),
			Ports: []xds.Port{{Port: s.Port, TargetPort: s.TargetPort}}}
		if s.Name == r.WaypointFor {
			sv.Waypoint = WaypointService
		}
		r.reg.Services = append(r.reg.Services, sv)
	}
}

// Deploy implements netnstrial.DataPlane.
func (r *Reference) Deploy(ctx context.Context, cl *netns.Cluster, apps []netns.PodSpec) error {
	r.cl = cl
	r.Proxies = map[string]*netns.Process{}
	r.apps = nil
	for _, a := range apps {
		r.apps = append(r.apps, a.Name)
	}
	r.reg = xds.Snapshot{TrustDomain: TrustDomain}
	for _, a := range apps {
		p, _ := cl.Pod(a.Name)
		r.reg.Workloads = append(r.reg.Workloads, xds.Workload{UID: UID(a.Name), Name: a.Name, Namespace: Namespace,
			ServiceAccount: a.Name, Node: p.Node.Name, IP: p.IP.String(), Protocol: xds.ProtocolHBONE})
	}
	var waypoints []string
	if r.Mode == "ambient" && r.WaypointFor != "" {
		for k := 0; k < r.WaypointReplicas; k++ {
			p, _ := cl.Pod(WaypointPod(k))
			waypoints = append(waypoints, p.Name)
			r.reg.Workloads = append(r.reg.Workloads, xds.Workload{UID: UID(p.Name), Name: p.Name, Namespace: Namespace,
				ServiceAccount: WaypointService, Node: p.Node.Name, IP: p.IP.String(), Protocol: xds.ProtocolHBONE})
		}
	}
	sort.Slice(r.reg.Workloads, func(i, j int) bool { return r.reg.Workloads[i].UID < r.reg.Workloads[j].UID })
	if err := r.writeRegistry(); err != nil {
		return err
	}
	cp, _ := cl.Pod(ControlPlanePod)
	// The CA root survives a control plane restart, as istiod's does in its
	// Secret; otherwise every restart would break every identity. It is
	// handed over in the control plane's environment (the same at every
	// restart), not in a key file: one in the trial's folder would outlive
	// the run wherever results are copied.
	root, err := ca.New(TrustDomain, r.CertTTL)
	if err != nil {
		return err
	}
	rootKey, err := root.RootKeyPEM()
	if err != nil {
		return err
	}
	cpProc, err := cl.Start(ControlPlanePod, netns.ProcSpec{Name: "controlplane", Args: []string{"controlplane",
		"--listen", fmt.Sprintf(":%d", XDSPort), "--admin", fmt.Sprintf(":%d", CPAdminPort),
		"--registry", r.registryPath(), "--trust-domain", TrustDomain, "--cert-ttl", r.CertTTL.String()},
		Env:       []string{controlplane.EnvCARootCert + "=" + string(root.RootPEM()), controlplane.EnvCARootKey + "=" + string(rootKey)},
		ProbePort: CPAdminPort, ProbePath: "/ready"})
	if err != nil {
		return err
	}
	r.Proxies[ControlPlanePod] = cpProc
	if err := cl.WaitProcessReady(ctx, cpProc); err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	cpAddr := fmt.Sprintf("%s:%d", cp.IP, XDSPort)
	mark := uint32(node.DefaultMark)
	var procs []*netns.Process
	switch r.Mode {
	case "ambient":
		r.mu.Lock()
		r.agents = map[string]*inpod.Server{}
		r.mu.Unlock()
		for i := 1; i <= r.nodes; i++ {
			zp, _ := cl.Pod(ZtunnelPod(i))
			var agent *inpod.Server
			// The node agent's socket is abstract, so it lives in the node
			// proxy pod's network namespace and nowhere on disk.
			if err := zp.InPod(func() (err error) { agent, err = inpod.NewServer(InpodSocket); return err }); err != nil {
				return fmt.Errorf("node agent on node-%d: %w", i, err)
			}
			r.mu.Lock()
			r.agents[zp.Node.Name] = agent
			r.mu.Unlock()
			extra := []string{"--inpod", InpodSocket}
			if r.Handoff != "" {
				extra = append(extra, "--handoff", r.Handoff)
			}
			pr, err := r.startProxy(zp, "proxy", "node", cpAddr, extra...)
			if err != nil {
				return err
			}
			procs = append(procs, pr)
		}
		for _, name := range waypoints {
			p, _ := cl.Pod(name)
			pr, err := r.startProxy(p, "waypoint", "waypoint", cpAddr, "--pod", UID(name))
			if err != nil {
				return err
			}
			procs = append(procs, pr)
		}
		if len(waypoints) > 0 {
			// Node proxies find the replicas through this service's endpoints.
			if _, err := cl.AddService(WaypointService, node.HBONEPort, node.HBONEPort, waypoints); err != nil {
				return err
			}
		}
		for _, a := range apps {
			p, _ := cl.Pod(a.Name)
			if err := redirect(p, mark); err != nil {
				return err
			}
			r.mu.Lock()
			agent := r.agents[p.Node.Name]
			r.mu.Unlock()
			if err := agent.Add(UID(a.Name), p.NetNSFD(), agentWorkload(p)); err != nil {
				r.Logf("node agent: add %s: %v (the node proxy gets it when it connects)", a.Name, err)
			}
		}
	case "sidecar":
		for _, a := range apps {
			p, _ := cl.Pod(a.Name)
			if err := redirect(p, mark); err != nil {
				return err
			}
			pr, err := r.startProxy(p, "sidecar", "sidecar", cpAddr, "--pod", UID(a.Name), "--pod-ip", p.IP.String())
			if err != nil {
				return err
			}
			procs = append(procs, pr)
		}
	}
	for _, pr := range procs {
		if err := cl.WaitProcessReady(ctx, pr); err != nil {
			return err
		}
	}
	return nil
}

// startProxy starts a proxy process (node, sidecar or waypoint mode) in pod,
// probed on its admin /ready, and records it for faults and collection.
func (r *Reference) startProxy(p *netns.Pod, name, mode, cpAddr string, extra ...string) (*netns.Process, error) {
	args := append([]string{"proxy", "--mode", mode, "--node", p.Node.Name, "--control-plane", cpAddr,
		"--admin", fmt.Sprintf(":%d", ProxyAdminPort), "--drain-deadline", r.Drain.String()}, extra...)
	pr, err := r.cl.Start(p.Name, netns.ProcSpec{Name: name, Args: args, ProbePort: ProxyAdminPort, ProbePath: "/ready"})
	if err != nil {
		return nil, err
	}
	r.Proxies[p.Name] = pr
	return pr, nil
}

// redirect installs the in-pod redirect rules (what istio-cni does).
func redirect(p *netns.Pod, mark uint32) error {
	ip, _ := netip.AddrFromSlice(p.IP.To4())
	if err := inpod.ApplyRedirect(p.NetNSFD(), ip, mark); err != nil {
		return fmt.Errorf("redirect in %s: %w", p.Name, err)
	}
	return nil
}

// agentWorkload is what the node agent tells the node proxy about a pod, as
// istio-cni does: name, namespace and service account (each pod runs as its
// own, the identity the control plane gives it).
func agentWorkload(p *netns.Pod) *zdsapi.WorkloadInfo {
	return &zdsapi.WorkloadInfo{Name: p.Name, Namespace: Namespace, ServiceAccount: p.Name}
}

// Close implements netnstrial.DataPlane: it closes every node agent that runs
// (a crashed one is already closed).
func (r *Reference) Close() {
	r.mu.Lock()
	agents := r.agents
	r.agents = nil
	r.mu.Unlock()
	for _, a := range agents {
		a.Close()
	}
}

// MetricsTargets lists every proxy's /metrics, the endpoints Collect saves
// at the end, for the runner to sample during load (the control plane has
// no HBONE counters). A proxy that a fault later replaces keeps its pod and
// port, so the list stays valid for the whole trial. Call it after Deploy
// and before any fault.
func (r *Reference) MetricsTargets() []scenario.MetricsTarget {
	var out []scenario.MetricsTarget
	for name, pr := range r.Proxies {
		p, ok := r.cl.Pod(name)
		if !ok || name == ControlPlanePod {
			continue
		}
		// startProxy names the process after its role, except a node
		// proxy's, which is plain "proxy".
		role := pr.Spec.Name
		if role == "proxy" {
			role = "node-proxy"
		}
		out = append(out, scenario.MetricsTarget{Pod: name, Role: role,
			URL: fmt.Sprintf("http://%s:%d/metrics", p.IP, ProxyAdminPort)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	return out
}

// Collect implements netnstrial.DataPlane: every proxy's /metrics and
// /config_dump, and the control plane's status, as files.
func (r *Reference) Collect(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	get := func(url, file string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, file), b, 0o644)
	}
	var errs []error
	for name := range r.Proxies {
		p, ok := r.cl.Pod(name)
		if !ok || p.Node.Crashed() {
			continue
		}
		if name == ControlPlanePod {
			errs = append(errs, get(fmt.Sprintf("http://%s:%d/debug/status", p.IP, CPAdminPort), name+".status.json"))
			continue
		}
		errs = append(errs, get(fmt.Sprintf("http://%s:%d/metrics", p.IP, ProxyAdminPort), name+".prom"),
			get(fmt.Sprintf("http://%s:%d/config_dump", p.IP, ProxyAdminPort), name+".config.json"))
	}
	return errors.Join(errs...)
}
