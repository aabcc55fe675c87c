package kubetrial

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/scenario"
)

// With Backend.Chaos set (--faults chaos-mesh), the faults Chaos Mesh can
// inject go through its objects (framework/cluster/kube/chaos.go): a node
// proxy or control plane pod killed (pod-kill), a sidecar container killed
// (container-kill), the control plane held down (pod-failure) and two nodes'
// pods partitioned (NetworkChaos). Each fault's inject and recover instants
// are the ones Chaos Mesh records in the object's status, not the instant
// the object was created. What Chaos Mesh cannot do here (a node crash, a
// drain, a segment-wide cut) stays with the provider and the API.

// chaosOp bounds one chaos object's inject or recover wait.
const chaosOp = 2 * time.Minute

// chaosHold is the duration a held fault (the control plane's pod-failure,
// which Chaos Mesh refuses without one) is given: longer than any trial's
// load window, so StartControlPlane ends it, and Chaos Mesh itself would if
// the run died first.
const chaosHold = 15 * time.Minute

// chaosCapabilities are what Chaos Mesh adds in a mode.
func chaosCapabilities(mode string) scenario.Capabilities {
	caps := scenario.Capabilities{
		scenario.CapPartitionNodes: "Chaos Mesh NetworkChaos partition (both directions) between the two nodes' pods of the trial and its data plane",
	}
	if mode != "none" {
		caps[scenario.CapCrashControlPlane] = "Chaos Mesh PodChaos pod-kill of the control plane pod; its Deployment makes a new one"
		caps[scenario.CapStopControlPlane] = "Chaos Mesh PodChaos pod-failure of the control plane pod, paused to recover it"
	}
	switch mode {
	case "ambient":
		caps[scenario.CapCrashNodeProxy] = "Chaos Mesh PodChaos pod-kill of the node's proxy pod; its DaemonSet makes a new one"
	case "sidecar":
		caps[scenario.CapCrashSidecar] = "Chaos Mesh PodChaos container-kill of the pod's sidecar proxy container"
	}
	return caps
}

// chaosScope is where a trial's chaos objects go and what they select.
func chaosScope(t *scenario.TrialRun, ns string) kube.ChaosScope {
	return kube.ChaosScope{Trial: filepath.Base(t.Dir), Namespace: ns}
}

// inject creates obj and returns when Chaos Mesh recorded its injection.
func inject(k *kube.ChaosClient, obj kube.Chaos) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), chaosOp)
	defer cancel()
	return k.Inject(ctx, obj)
}

// kill injects a one-shot object (a pod or container kill) and removes it:
// the controller brings the pod or container back by itself.
func kill(k *kube.ChaosClient, obj kube.Chaos) (time.Time, error) {
	at, err := inject(k, obj)
	if err != nil {
		return at, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), chaosOp)
	defer cancel()
	if _, err := k.Recover(ctx, obj); err != nil {
		return at, err
	}
	return at, nil
}

// chaosDataPlane is the reference data plane on Kubernetes with its faults
// injected by Chaos Mesh.
type chaosDataPlane struct {
	*dataPlane
	k     *kube.ChaosClient
	scope kube.ChaosScope
	nodes *nodes
	down  kube.Chaos // the control plane's pod-failure while it is held down
}

// CrashNodeProxy kills the node's proxy pod (node is a planned name).
func (c *chaosDataPlane) CrashNodeProxy(node string) (time.Time, error) {
	r, err := c.nodes.real(node)
	if err != nil {
		return time.Time{}, err
	}
	return kill(c.k, kube.NodeProxyCrash(c.scope, r))
}

// CrashControlPlane kills the control plane's pod.
func (c *chaosDataPlane) CrashControlPlane() (time.Time, error) {
	return kill(c.k, kube.ControlPlaneCrash(c.scope))
}

// CrashSidecar kills the sidecar container of a pod (a planned name).
func (c *chaosDataPlane) CrashSidecar(pod string) (time.Time, error) {
	ps, err := c.b.playing(c.ns, pod)
	if err != nil {
		return time.Time{}, err
	}
	return kill(c.k, kube.SidecarCrash(c.scope, ps[0].Name))
}

// StopControlPlane makes the control plane pod fail until
// StartControlPlane.
func (c *chaosDataPlane) StopControlPlane() (time.Time, error) {
	if c.down != nil {
		return time.Time{}, fmt.Errorf("the control plane is already held down")
	}
	obj := kube.ControlPlaneDown(c.scope, chaosHold)
	at, err := inject(c.k, obj)
	if err != nil {
		return at, err
	}
	c.down = obj
	return at, nil
}

// StartControlPlane recovers the pod-failure and returns when Chaos Mesh
// recorded the recovery.
func (c *chaosDataPlane) StartControlPlane(ctx context.Context) (time.Time, error) {
	if c.down == nil {
		return time.Time{}, fmt.Errorf("the control plane is not held down")
	}
	ctx, cancel := context.WithTimeout(ctx, chaosOp)
	defer cancel()
	at, err := c.k.Recover(ctx, c.down)
	if err == nil {
		c.down = nil
	}
	return at, err
}

// chaosNodes is the cluster with its pair partitions made by Chaos Mesh.
type chaosNodes struct {
	*nodes
	k     *kube.ChaosClient
	scope kube.ChaosScope
}

// Partition implements scenario.Partitioner with a NetworkChaos held until
// heal, which pauses it so that Chaos Mesh recovers and records it.
func (c *chaosNodes) Partition(a, b string) (time.Time, func() (time.Time, error), error) {
	r, err := c.reals(a, b)
	if err != nil {
		return time.Time{}, nil, err
	}
	obj := kube.NodePartition(c.scope, r[0], r[1], 0)
	at, err := inject(c.k, obj)
	if err != nil {
		return at, nil, err
	}
	return at, sync.OnceValues(func() (time.Time, error) {
		ctx, cancel := context.WithTimeout(context.Background(), chaosOp)
		defer cancel()
		return c.k.Recover(ctx, obj)
	}), nil
}
