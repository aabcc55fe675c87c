package kube

// The API side of node faults: cordon, drain and watching a node's Ready
// condition. A node crash on Kubernetes is the node's container or VM going
// away; what the cluster then does (the node lifecycle controller marking the
// node NotReady, then Unknown, evicting its pods) is observed here, and a
// planned drain is done here, as `kubectl drain` would.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"blastradius.dev/blastradius/internal/oneline"
)

// Cordon marks node unschedulable (spec.unschedulable), as `kubectl cordon`:
// the scheduler places no new pod there; pods already there stay.
func Cordon(ctx context.Context, cs kubernetes.Interface, node string) error {
	return setUnschedulable(ctx, cs, node, true)
}

// Uncordon makes node schedulable again, as `kubectl uncordon`.
func Uncordon(ctx context.Context, cs kubernetes.Interface, node string) error {
	return setUnschedulable(ctx, cs, node, false)
}

func setUnschedulable(ctx context.Context, cs kubernetes.Interface, node string, on bool) error {
	verb := "cordon"
	// A merge patch of the one field: the kubelet and the node controllers
	// write the node's status and other fields at the same time, and an
	// update would race them.
	patch := []byte(`{"spec":{"unschedulable":true}}`)
	if !on {
		verb = "uncordon"
		patch = []byte(`{"spec":{"unschedulable":null}}`)
	}
	if _, err := cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
		return fmt.Errorf("%s node %s: %s", verb, node, oneline.Lines(err.Error()))
	}
	return nil
}

// DrainOptions bound a drain.
type DrainOptions struct {
	// Timeout is the deadline for every pod to be gone (required).
	Timeout time.Duration
	// GracePeriod overrides each pod's termination grace period, in
	// seconds, through the eviction's delete options; nil keeps the pod's
	// own. 0 deletes at once, with no kubelet confirming the containers
	// stopped (as `kubectl drain --grace-period 0` does not allow without
	// --force).
	GracePeriod *int64
	// Interval is the pause between retries of an eviction the API server
	// refused for now (a pod disruption budget) and between checks that the
	// evicted pods are gone; 0: 200ms.
	Interval time.Duration
}

// Drain evicts every pod on node through the Eviction API, so pod
// disruption budgets are honoured, and waits until they are gone. As
// `kubectl drain --ignore-daemonsets --delete-emptydir-data --force` does, it
// leaves DaemonSet pods (their controller would put them straight back, and
// a node's own agents must survive a drain) and mirror pods (the kubelet's
// static pods, which the API cannot remove), and it evicts pods with
// emptyDir volumes or no controller: a drain fault must empty the node. It
// does not cordon: callers Cordon first so nothing is scheduled back.
//
// Evictions the server refuses with 429 (a disruption budget) are retried
// until the deadline. The error, on one line, names every pod that did not
// go and why.
func Drain(ctx context.Context, cs kubernetes.Interface, node string, opts DrainOptions) error {
	if opts.Timeout <= 0 {
		return fmt.Errorf("drain node %s: no deadline given", node)
	}
	every := opts.Interval
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	dctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()

	list, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(dctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return fmt.Errorf("drain node %s: list pods: %s", node, oneline.Lines(err.Error()))
	}
	// Each pod to go, and why it has not gone yet ("" once gone).
	type target struct {
		pod     corev1.Pod
		evicted bool
		why     string
	}
	var targets []*target
	for _, p := range list.Items {
		if skipOnDrain(&p) {
			continue
		}
		targets = append(targets, &target{pod: p, why: "not evicted yet"})
	}
	for {
		left := 0
		for _, tg := range targets {
			if tg.why == "" {
				continue
			}
			if !tg.evicted {
				ev := &policyv1.Eviction{
					ObjectMeta: metav1.ObjectMeta{Name: tg.pod.Name, Namespace: tg.pod.Namespace},
					DeleteOptions: &metav1.DeleteOptions{
						GracePeriodSeconds: opts.GracePeriod,
						// Only this pod: a pod of the same name created in
						// the meantime (a StatefulSet's) is not ours.
						Preconditions: &metav1.Preconditions{UID: &tg.pod.UID},
					},
				}
				err := cs.PolicyV1().Evictions(tg.pod.Namespace).Evict(dctx, ev)
				switch {
				case err == nil:
					tg.evicted, tg.why = true, "evicted, still terminating"
				case apierrors.IsNotFound(err), apierrors.IsConflict(err):
					// Gone already, or replaced by another pod of the
					// same name (the UID precondition).
					tg.why = ""
					continue
				case apierrors.IsTooManyRequests(err):
					tg.why = "eviction refused: " + oneline.Lines(err.Error())
				case dctx.Err() != nil:
				case !isAPIStatus(err):
					// No answer from the server: the client's own rate
					// limiter refusing to wait past the deadline, or the
					// connection. Retried until the deadline; the pod
					// keeps the last reason the server gave.
					if tg.why == "not evicted yet" {
						tg.why = "eviction not answered: " + oneline.Lines(err.Error())
					}
				default:
					return fmt.Errorf("drain node %s: evict %s/%s: %s", node, tg.pod.Namespace, tg.pod.Name, oneline.Lines(err.Error()))
				}
			}
			if tg.evicted {
				cur, err := cs.CoreV1().Pods(tg.pod.Namespace).Get(dctx, tg.pod.Name, metav1.GetOptions{})
				switch {
				case apierrors.IsNotFound(err), err == nil && cur.UID != tg.pod.UID:
					tg.why = ""
					continue
				case err == nil && cur.DeletionTimestamp != nil:
					tg.why = "evicted, still terminating"
				}
			}
			left++
		}
		if left == 0 {
			return nil
		}
		select {
		case <-dctx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("drain node %s: %w", node, ctx.Err())
			}
			var names []string
			for _, tg := range targets {
				if tg.why != "" {
					names = append(names, tg.pod.Namespace+"/"+tg.pod.Name+" ("+tg.why+")")
				}
			}
			sort.Strings(names)
			return fmt.Errorf("drain node %s: %d pods not gone after %s: %s", node, len(names), opts.Timeout, strings.Join(names, ", "))
		case <-time.After(every):
		}
	}
}

// isAPIStatus says whether err is the API server's answer (a Status), as
// opposed to a request that never got one.
func isAPIStatus(err error) bool {
	var st apierrors.APIStatus
	return errors.As(err, &st)
}

// skipOnDrain says whether a drain leaves the pod: DaemonSet pods, mirror
// pods, and pods already terminated (they hold no workload; kubectl deletes
// them, but they do not keep a node busy).
func skipOnDrain(p *corev1.Pod) bool {
	if _, mirror := p.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return true
	}
	if c := metav1.GetControllerOf(p); c != nil && c.Kind == "DaemonSet" && strings.HasPrefix(c.APIVersion, "apps/") {
		return true
	}
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// WaitNodeCondition watches node until its Ready condition has status want
// (True, False or Unknown: a node with no Ready condition yet matches none)
// and returns when this process saw it: at the start if it already holds,
// else on the watch event that brought it. A watch, not a poll, so the time
// is the change's arrival, not the next tick; the watch is re-established
// if the server closes it. The error on timeout, on one line, says what the
// condition was instead.
func WaitNodeCondition(ctx context.Context, cs kubernetes.Interface, node string, want corev1.ConditionStatus, timeout time.Duration) (time.Time, error) {
	if timeout <= 0 {
		return time.Time{}, fmt.Errorf("wait for node %s Ready=%s: no deadline given", node, want)
	}
	sel := fields.OneTermEqualSelector("metadata.name", node).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return cs.CoreV1().Nodes().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return cs.CoreV1().Nodes().Watch(ctx, o)
		},
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var at time.Time
	last := "node not found"
	_, err := watchtools.UntilWithSync(wctx, lw, &corev1.Node{}, nil, func(ev watch.Event) (bool, error) {
		n, ok := ev.Object.(*corev1.Node)
		if !ok {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			last = "node deleted"
			return false, nil
		}
		last = nodeReason(n)
		if c := readyCondition(n); c != nil && c.Status == want {
			at = time.Now()
			return true, nil
		}
		return false, nil
	})
	if err == nil {
		return at, nil
	}
	if ctx.Err() != nil {
		return time.Time{}, fmt.Errorf("wait for node %s Ready=%s: %w", node, want, ctx.Err())
	}
	if wctx.Err() != nil {
		return time.Time{}, fmt.Errorf("node %s not Ready=%s after %s (%s)", node, want, timeout, last)
	}
	return time.Time{}, fmt.Errorf("wait for node %s Ready=%s: %s", node, want, oneline.Lines(err.Error()))
}

func readyCondition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}
