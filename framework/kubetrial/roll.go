package kubetrial

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/manifests"
)

// rollAnnotation is what a roll changes in a DaemonSet's pod template, as
// `kubectl rollout restart` changes kubectl.kubernetes.io/restartedAt.
const rollAnnotation = "blastradius.dev/restarted-at"

// rollDaemonSet rolls a DaemonSet's pods as an upgrade does, through its
// controller: the pod template changes and, with the update strategy's
// surge (maxSurge 1, maxUnavailable 0), the controller starts each node's
// new pod and deletes the old one once the new one is Ready. It watches the
// pods of the planned nodes (real name → planned name) and calls stopped
// when a node's old pod is deleted (the kubelet sends SIGTERM) and gone
// when it no longer exists; it returns once every planned node's old pod
// is gone and a new one Ready, or at ctx's end.
func rollDaemonSet(ctx context.Context, cs kubernetes.Interface, ns, name, selector string, planned map[string]string,
	stopped func(node string, at, newReady time.Time), gone func(node string, at time.Time), logf func(string, ...any)) error {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("roll %s/%s: list pods: %w", ns, name, err)
	}
	type nodeState struct {
		old                    map[types.UID]string // old pod UIDs → names
		ready, stopped, goneAt time.Time
	}
	nodes := map[string]*nodeState{}
	for real := range planned {
		nodes[real] = &nodeState{old: map[types.UID]string{}}
	}
	for _, p := range list.Items {
		if st, ok := nodes[p.Spec.NodeName]; ok && p.DeletionTimestamp == nil {
			st.old[p.UID] = p.Name
		}
	}
	for real, st := range nodes {
		if len(st.old) == 0 {
			return fmt.Errorf("roll %s/%s: no pod on %s (%s) to roll", ns, name, real, planned[real])
		}
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, rollAnnotation, time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := cs.AppsV1().DaemonSets(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "blastradius"}); err != nil {
		return fmt.Errorf("roll %s/%s: %w", ns, name, err)
	}
	logf("rolling DaemonSet %s/%s", ns, name)
	for {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		now := time.Now()
		if err == nil {
			seen := map[types.UID]corev1.Pod{}
			for _, p := range list.Items {
				seen[p.UID] = p
			}
			for real, st := range nodes {
				for _, p := range list.Items {
					if _, old := st.old[p.UID]; !old && p.Spec.NodeName == real && p.DeletionTimestamp == nil && kube.PodReady(&p) && st.ready.IsZero() {
						st.ready = now
					}
				}
				deleting, present := false, false
				for uid := range st.old {
					if p, ok := seen[uid]; ok {
						present = true
						deleting = deleting || p.DeletionTimestamp != nil
					}
				}
				if (deleting || !present) && st.stopped.IsZero() {
					st.stopped = now
					ready := st.ready
					if ready.IsZero() {
						ready = now
					}
					stopped(planned[real], now, ready)
				}
				if !present && st.goneAt.IsZero() {
					st.goneAt = now
					gone(planned[real], now)
				}
			}
		}
		var pending []string
		for real, st := range nodes {
			if st.goneAt.IsZero() || st.ready.IsZero() {
				pending = append(pending, planned[real])
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			sort.Strings(pending)
			return fmt.Errorf("roll %s/%s: not done on %s: %w", ns, name, strings.Join(pending, ", "), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rollDeadline bounds a roll of n nodes' pods whose grace period is grace:
// each node's new pod starting and the old one draining, one node after
// another.
func rollDeadline(n int, grace time.Duration) time.Duration {
	return time.Duration(n) * (grace + time.Minute)
}

// RollNodeProxies implements the scenario's roller for the reference data
// plane: its node-proxy DaemonSet rolled (maxSurge 1, maxUnavailable 0),
// each node's new proxy pod (proxy and node agent) Ready before the old one
// is stopped.
func (d *dataPlane) RollNodeProxies(ctx context.Context, nodes []string, stopped func(string, time.Time, time.Time), gone func(string, time.Time)) error {
	planned := map[string]string{}
	for i, real := range d.b.Nodes {
		if i < len(nodes) {
			planned[real] = fmt.Sprintf("node-%d", i+1)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, rollDeadline(len(nodes), 30*time.Second))
	defer cancel()
	return rollDaemonSet(ctx, d.b.Client, d.ns, "ztunnel", manifests.LabelPod+"=ztunnel", planned, stopped, gone, d.logf)
}

// RollNodeProxies implements the scenario's roller for Istio: the ztunnel
// DaemonSet rolled, as an upgrade of Istio does.
func (d *istioDataPlane) RollNodeProxies(ctx context.Context, nodes []string, stopped func(string, time.Time, time.Time), gone func(string, time.Time)) error {
	planned := map[string]string{}
	for _, n := range nodes {
		real, err := d.realNode(n)
		if err != nil {
			return err
		}
		planned[real] = n
	}
	ctx, cancel := context.WithTimeout(ctx, rollDeadline(len(nodes), 30*time.Second))
	defer cancel()
	return rollDaemonSet(ctx, d.b.Client, d.ns, ztunnelName, ztunnelSelector, planned, stopped, gone, d.logf)
}
