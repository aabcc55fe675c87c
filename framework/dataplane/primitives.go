package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/proxy/inpod"
)

// Fault primitives of the reference data plane beyond those in faults.go:
// what the scenario fault catalogue calls. Each returns the instant the fault
// took effect (the ground truth the measurements are compared with).

// CrashControlPlane SIGKILLs the control plane: no graceful shutdown. Unlike
// StopControlPlane its supervisor restarts it with back-off, as the kubelet
// restarts a crashed istiod.
func (r *Reference) CrashControlPlane() (time.Time, error) {
	pr, ok := r.Proxies[ControlPlanePod]
	if !ok {
		return time.Time{}, errors.New("crash control plane: not deployed")
	}
	if !pr.Running() {
		return time.Time{}, errors.New("crash control plane: not running")
	}
	pr.Kill()
	return time.Now(), nil
}

// agentNode checks that node has a node agent (ambient mode) and returns its
// node proxy pod.
func (r *Reference) agentNode(what, node string) (*netns.Pod, error) {
	if r.Mode != "ambient" {
		return nil, fmt.Errorf("%s: no node agent in %s mode", what, r.Mode)
	}
	if r.cl == nil {
		return nil, fmt.Errorf("%s: not deployed", what)
	}
	i, err := nodeIndex(node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	zp, ok := r.cl.Pod(ZtunnelPod(i))
	if !ok {
		return nil, fmt.Errorf("%s: no node %s", what, node)
	}
	return zp, nil
}

// CrashNodeAgent kills the node agent of node (ambient only): its server
// closes, so the node proxy loses its connection and no pod can be added to
// or removed from it until RestartNodeAgent. The node proxy keeps serving the
// pods it has and retries the connection with back-off (proxy/node), as
// ztunnel does when istio-cni dies.
func (r *Reference) CrashNodeAgent(node string) (time.Time, error) {
	if _, err := r.agentNode("crash node agent", node); err != nil {
		return time.Time{}, err
	}
	r.mu.Lock()
	agent := r.agents[node]
	delete(r.agents, node)
	r.mu.Unlock()
	if agent == nil {
		return time.Time{}, fmt.Errorf("crash node agent: the agent of %s is not running", node)
	}
	at := time.Now()
	if err := agent.Close(); err != nil {
		return at, fmt.Errorf("crash node agent on %s: %w", node, err)
	}
	return at, nil
}

// RestartNodeAgent starts a new node agent on node (ambient only) on the same
// abstract socket in the node proxy pod's namespace, knowing every
// application pod of that node, as istio-cni does after a restart: it rebuilds
// its pod set first, then lets the node proxy connect, and the node proxy
// reconciles against the snapshot (an unchanged pod is kept as it is). An
// agent that still runs is closed first (a restart without a crash). It
// returns the instant the new agent accepts connections; the node proxy
// reconnects within its back-off (at most inpod.MaxBackoff).
func (r *Reference) RestartNodeAgent(node string) (time.Time, error) {
	zp, err := r.agentNode("restart node agent", node)
	if err != nil {
		return time.Time{}, err
	}
	r.mu.Lock()
	old := r.agents[node]
	delete(r.agents, node)
	r.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	var pods []inpod.Pod
	for _, name := range r.apps {
		if p, ok := r.cl.Pod(name); ok && p.Node.Name == node {
			pods = append(pods, inpod.Pod{UID: UID(name), NetNSFD: p.NetNSFD(), Workload: agentWorkload(p)})
		}
	}
	var agent *inpod.Server
	if err := zp.InPod(func() (err error) {
		agent, err = inpod.NewServer(InpodSocket, inpod.WithPods(pods...), inpod.WithLogf(r.Logf))
		return err
	}); err != nil {
		return time.Time{}, fmt.Errorf("restart node agent on %s: %w", node, err)
	}
	at := time.Now()
	r.mu.Lock()
	if r.agents == nil { // Close ran meanwhile: do not leak the new agent
		r.mu.Unlock()
		agent.Close()
		return at, errors.New("restart node agent: data plane closed")
	}
	r.agents[node] = agent
	r.mu.Unlock()
	return at, nil
}

// ConfigureWaypoint puts replicas L7 waypoint proxies in front of service
// (ambient mode). Call it before InfraPods and Deploy, which create them;
// later it has no effect on the running data plane. service "" removes the
// waypoint; replicas below 1 mean 1.
func (r *Reference) ConfigureWaypoint(service string, replicas int) {
	if service == "" {
		r.WaypointFor, r.WaypointReplicas = "", 0
		return
	}
	r.WaypointFor, r.WaypointReplicas = service, max(replicas, 1)
}

// WaypointPods names the waypoint replica pods (none in sidecar mode or
// without ConfigureWaypoint).
func (r *Reference) WaypointPods() []string {
	if r.Mode != "ambient" || r.WaypointFor == "" {
		return nil
	}
	var out []string
	for k := 0; k < r.WaypointReplicas; k++ {
		out = append(out, WaypointPod(k))
	}
	return out
}

// waypoints returns the running data plane's waypoint processes.
func (r *Reference) waypoints(what string) ([]*netns.Process, error) {
	pods := r.WaypointPods()
	if len(pods) == 0 {
		return nil, fmt.Errorf("%s: no waypoints (%s mode, waypoint for %q)", what, r.Mode, r.WaypointFor)
	}
	var out []*netns.Process
	for _, name := range pods {
		pr, ok := r.Proxies[name]
		if !ok {
			return nil, fmt.Errorf("%s: waypoint %s not deployed", what, name)
		}
		out = append(out, pr)
	}
	return out, nil
}

// CrashWaypoint SIGKILLs one waypoint replica; its supervisor restarts it
// with back-off. Until then, and until the endpoint controller notices, node
// proxies may still pick it.
func (r *Reference) CrashWaypoint(pod string) (time.Time, error) {
	if _, err := r.waypoints("crash waypoint"); err != nil {
		return time.Time{}, err
	}
	if !slices.Contains(r.WaypointPods(), pod) {
		return time.Time{}, fmt.Errorf("crash waypoint: %q is not a waypoint replica (%v)", pod, r.WaypointPods())
	}
	pr := r.Proxies[pod]
	if !pr.Running() {
		return time.Time{}, fmt.Errorf("crash waypoint: %s is not running", pod)
	}
	pr.Kill()
	return time.Now(), nil
}

// StopWaypoints stops every waypoint replica (SIGTERM, then SIGKILL after the
// drain deadline and 2 s) and keeps them stopped until StartWaypoints:
// traffic bound to the waypoint has nowhere to go. It returns the instant the
// stop began, once every replica has exited.
func (r *Reference) StopWaypoints() (time.Time, error) {
	prs, err := r.waypoints("stop waypoints")
	if err != nil {
		return time.Time{}, err
	}
	at := time.Now()
	var wg sync.WaitGroup
	for _, pr := range prs {
		wg.Go(func() { r.cl.Stop(pr, r.Drain+2*time.Second) })
	}
	wg.Wait()
	return at, nil
}

// StartWaypoints lets the supervisor start every waypoint replica again and
// waits until all are ready (or ctx ends). It returns the instant they were
// resumed.
func (r *Reference) StartWaypoints(ctx context.Context) (time.Time, error) {
	prs, err := r.waypoints("start waypoints")
	if err != nil {
		return time.Time{}, err
	}
	at := time.Now()
	for _, pr := range prs {
		pr.Resume()
	}
	for _, pr := range prs {
		if err := r.cl.WaitProcessReady(ctx, pr); err != nil {
			return at, fmt.Errorf("start waypoints: %w", err)
		}
	}
	return at, nil
}

// appPod checks that pod is an application pod of the deployed data plane.
func (r *Reference) appPod(what, pod string) error {
	if r.cl == nil {
		return fmt.Errorf("%s: not deployed", what)
	}
	if !slices.Contains(r.apps, pod) {
		return fmt.Errorf("%s: %q is not an application pod", what, pod)
	}
	return nil
}

// CrashSidecar SIGKILLs the sidecar proxy of an application pod (sidecar mode
// only); its supervisor restarts it with back-off. The pod's redirect rules
// stay, so until it is back the pod's traffic in and out fails.
func (r *Reference) CrashSidecar(pod string) (time.Time, error) {
	if r.Mode != "sidecar" {
		return time.Time{}, fmt.Errorf("crash sidecar: no sidecars in %s mode", r.Mode)
	}
	if err := r.appPod("crash sidecar", pod); err != nil {
		return time.Time{}, err
	}
	pr, ok := r.Proxies[pod]
	if !ok {
		return time.Time{}, fmt.Errorf("crash sidecar: %s has no sidecar", pod)
	}
	if !pr.Running() {
		return time.Time{}, fmt.Errorf("crash sidecar: the sidecar of %s is not running", pod)
	}
	pr.Kill()
	return time.Now(), nil
}

// RestartAppPod replaces an application pod with one of the same IP and
// network namespace (Cluster.RestartPod, grace Drain+2s): its application
// and, in sidecar mode, its sidecar get SIGTERM, and once all have exited
// they start again and the call waits until they are ready. The restarted
// sidecar is registered in Proxies again.
//
// In ambient mode the pod keeps its network namespace, so the node agent has
// nothing to tell the node proxy: the proxy keeps serving the pod throughout,
// and only the application restarts (connections to it are reset or
// refused meanwhile).
func (r *Reference) RestartAppPod(ctx context.Context, pod string) (stopped, ready time.Time, err error) {
	if err := r.appPod("restart app pod", pod); err != nil {
		return time.Time{}, time.Time{}, err
	}
	stopped, ready, err = r.cl.RestartPod(ctx, pod, r.Drain+2*time.Second)
	if r.Mode == "sidecar" {
		p, _ := r.cl.Pod(pod)
		for _, pr := range p.Processes() {
			if pr.Spec.Name == "sidecar" {
				r.Proxies[pod] = pr
			}
		}
	}
	return stopped, ready, err
}

// DrainNodeProxy stops the node proxy of node gracefully with no replacement
// (ambient only), as when its node is drained: SIGTERM, after which it stops
// accepting, lets established connections finish until the drain deadline
// and exits. It is not restarted (its process can be resumed with
// Proxies[ZtunnelPod(i)].Resume()). stopped is when SIGTERM was sent; done is
// closed once it has exited (SIGKILL if it outlives the deadline by 5 s).
func (r *Reference) DrainNodeProxy(ctx context.Context, node string) (stopped time.Time, done <-chan struct{}, err error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, nil, fmt.Errorf("drain node proxy: %w", err)
	}
	_, pr, err := r.nodeProxy(node)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("drain node proxy: %w", err)
	}
	if !pr.Running() {
		return time.Time{}, nil, fmt.Errorf("drain node proxy: the proxy of %s is not running", node)
	}
	ch := make(chan struct{})
	stopped = time.Now()
	go func() { r.cl.Stop(pr, r.Drain+5*time.Second); close(ch) }()
	return stopped, ch, nil
}

// ControlPlanePod names the control plane's pod, so faults can find its node.
func (r *Reference) ControlPlanePod() string { return ControlPlanePod }
