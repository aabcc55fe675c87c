package kubetrial

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/dataplane"
	"blastradius.dev/blastradius/framework/istio/istioinstall"
	"blastradius.dev/blastradius/framework/scenario"
)

// An Istio waypoint in a trial: the Gateway the tool writes, the
// Deployment istiod makes from it (named as the Gateway), scaled by the
// trial. Its replicas get the reference's plan names, waypoint-0, ...,
// in the order of their planned nodes: the replicas are pinned to node-1
// .. node-N and spread one per node, as the reference places its own.
var waypointSelector = istioinstall.GatewayNameLabel + "=" + istioinstall.WaypointName

// withIstioWaypoint adds the waypoint's objects to a trial's and labels
// the service it stands in front of.
func withIstioWaypoint(objs []*unstructured.Unstructured, ns string, w *scenario.Waypoint, nodes []string) ([]*unstructured.Unstructured, error) {
	found := false
	for _, o := range objs {
		if o.GetKind() == "Service" && o.GetName() == w.Service {
			l := o.GetLabels()
			l[istioinstall.UseWaypointLabel] = istioinstall.WaypointName
			o.SetLabels(l)
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("waypoint: the trial has no service %s", w.Service)
	}
	wp, err := istioinstall.Waypoint(ns, nodes[:min(w.Replicas, len(nodes))])
	if err != nil {
		return nil, err
	}
	return append(objs, wp...), nil
}

// waypointReplicas lists the waypoint's live replicas (not deleting), in
// plan order: by planned node, then by age.
func (b *Backend) waypointReplicas(ctx context.Context, ns string) ([]corev1.Pod, error) {
	list, err := b.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: waypointSelector})
	if err != nil {
		return nil, fmt.Errorf("list waypoint pods in %s: %w", ns, err)
	}
	planned := b.plannedNames()
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	// A replica not scheduled yet (a kill's replacement) sorts last, so
	// that it never shifts the names of those that run.
	node := func(p corev1.Pod) string {
		if n, ok := planned[p.Spec.NodeName]; ok {
			return n
		}
		return "~"
	}
	slices.SortFunc(out, func(x, y corev1.Pod) int {
		return cmp.Or(cmp.Compare(node(x), node(y)),
			x.CreationTimestamp.Compare(y.CreationTimestamp.Time), cmp.Compare(x.Name, y.Name))
	})
	return out, nil
}

// scaleWaypoint sets the replicas of istiod's waypoint Deployment: istiod
// leaves the count to its users (its overlay sets none).
func (b *Backend) scaleWaypoint(ctx context.Context, ns string, n int) error {
	return patchReplicas(ctx, b.Client, ns, istioinstall.WaypointName, int32(n))
}

// waitWaypoint waits until istiod has made the waypoint's Deployment,
// scales it to n, and waits until n replicas are Ready. It returns the
// replicas' plan names with their planned nodes. An error says what was
// missing: the Deployment (istiod has not made it: its Gateway's status
// says why), or the replicas (their pods' states).
func (b *Backend) waitWaypoint(ctx context.Context, ns string, n int, timeout time.Duration) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := b.Client.AppsV1().Deployments(ns).Get(ctx, istioinstall.WaypointName, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("istiod made no waypoint Deployment %s/%s from the Gateway within %s%s", ns, istioinstall.WaypointName, timeout, b.gatewayStatus(ns))
	}
	if err := b.scaleWaypoint(ctx, ns, n); err != nil {
		return nil, err
	}
	pods, err := b.waitWaypointReady(ctx, ns, n)
	if err != nil {
		// The wait's context is spent: the pods' states get their own.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if why := kube.PodProblems(pctx, b.Client, ns); why != "" {
			err = fmt.Errorf("%w; %s", err, why)
		}
		return nil, err
	}
	planned := b.plannedNames()
	out := map[string]string{}
	for k, p := range pods {
		out[dataplane.WaypointPod(k)] = planned[p.Spec.NodeName]
	}
	return out, nil
}

// waitWaypointReady waits until n replicas are Ready and no other is
// left (a scale down drains), and returns them in plan order.
func (b *Backend) waitWaypointReady(ctx context.Context, ns string, n int) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	var last string
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		all, err := b.waypointReplicas(ctx, ns)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		ready := 0
		for i := range all {
			if kube.PodReady(&all[i]) {
				ready++
			}
		}
		pods, last = all, fmt.Sprintf("%d of %d replicas Ready, %d pods", ready, n, len(all))
		return ready == n && len(all) == n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waypoint %s/%s: %s: %w", ns, istioinstall.WaypointName, last, err)
	}
	return pods, nil
}

// gatewayStatus is what istiod wrote on the Gateway's conditions, as a
// suffix for an error ("" if nothing).
func (b *Backend) gatewayStatus(ns string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := b.Dynamic.Resource(istioinstall.GatewayGVR).Namespace(ns).Get(ctx, istioinstall.WaypointName, metav1.GetOptions{})
	if err != nil {
		return fmt.Sprintf(" (Gateway: %v)", err)
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	var out []string
	for _, c := range conds {
		m, _ := c.(map[string]any)
		out = append(out, fmt.Sprintf("%v=%v %v: %v", m["type"], m["status"], m["reason"], m["message"]))
	}
	if len(out) == 0 {
		return " (the Gateway has no status: no istiod took it)"
	}
	return " (Gateway: " + strings.Join(out, "; ") + ")"
}

// WaypointPods names the trial's waypoint replicas by plan.
func (d *istioDataPlane) WaypointPods() []string {
	var out []string
	for k := range d.waypoint {
		out = append(out, dataplane.WaypointPod(k))
	}
	return out
}

// CrashWaypoint SIGKILLs one replica: its pod deleted with grace period
// 0; the Deployment makes a new one.
func (d *istioDataPlane) CrashWaypoint(pod string) (time.Time, error) {
	k := slices.Index(d.WaypointPods(), pod)
	if k < 0 {
		return time.Time{}, fmt.Errorf("crash waypoint: %q is not a waypoint replica (%v)", pod, d.WaypointPods())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods, err := d.b.waypointReplicas(ctx, d.trialNS)
	if err != nil {
		return time.Time{}, err
	}
	if k >= len(pods) {
		return time.Time{}, fmt.Errorf("crash waypoint %s: %d replicas running", pod, len(pods))
	}
	p := pods[k]
	zero := int64(0)
	at := time.Now()
	if err := d.b.Client.CoreV1().Pods(d.trialNS).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero,
		Preconditions: &metav1.Preconditions{UID: &p.UID}}); err != nil {
		return time.Time{}, fmt.Errorf("delete waypoint pod %s/%s: %w", d.trialNS, p.Name, err)
	}
	d.logf("istio: waypoint %s (%s on %s) deleted (grace period 0)", pod, p.Name, p.Spec.NodeName)
	return at, nil
}

// waypointStopTimeout bounds a stop: each replica drains for its grace
// period (Envoy's), then the kubelet kills it.
const waypointStopTimeout = 2 * time.Minute

// StopWaypoints scales the waypoint to 0 and returns when its replicas
// are gone (they drain for their grace period), with the instant the stop
// began.
func (d *istioDataPlane) StopWaypoints() (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waypointStopTimeout)
	defer cancel()
	at := time.Now()
	if err := d.b.scaleWaypoint(ctx, d.trialNS, 0); err != nil {
		return time.Time{}, err
	}
	if _, err := d.b.waitWaypointReady(ctx, d.trialNS, 0); err != nil {
		return time.Time{}, err
	}
	d.logf("istio: waypoint scaled to 0, its replicas gone after %s", time.Since(at).Round(time.Millisecond))
	return at, nil
}

// StartWaypoints scales the waypoint back to the scenario's replicas and
// waits until they are Ready; it returns when the scale was made.
func (d *istioDataPlane) StartWaypoints(ctx context.Context) (time.Time, error) {
	at := time.Now()
	if err := d.b.scaleWaypoint(ctx, d.trialNS, d.waypoint); err != nil {
		return time.Time{}, err
	}
	if _, err := d.b.waitWaypointReady(ctx, d.trialNS, d.waypoint); err != nil {
		return at, err
	}
	d.logf("istio: waypoint back to %d Ready replicas after %s", d.waypoint, time.Since(at).Round(time.Millisecond))
	return at, nil
}
