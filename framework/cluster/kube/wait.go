package kube

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/internal/oneline"
)

// Resources the waits read.
var (
	NodesGVR       = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	DeploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	DaemonSetsGVR  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
)

// WaitOptions bound a wait. Every wait has a deadline: a cluster that never
// becomes ready fails the run with what was not ready.
type WaitOptions struct {
	Timeout  time.Duration // required
	Interval time.Duration // between polls; 0: 1s
}

func (o WaitOptions) interval() time.Duration {
	if o.Interval <= 0 {
		return time.Second
	}
	return o.Interval
}

// poll calls check until it reports nothing pending, the deadline passes
// (an error listing what is still pending, on one line) or ctx ends.
func poll(ctx context.Context, o WaitOptions, what string, check func(ctx context.Context) ([]string, error)) error {
	if o.Timeout <= 0 {
		return fmt.Errorf("wait for %s: no deadline given", what)
	}
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var pending []string
	var lastErr error
	completed := false // a check has run to completion
	errAfter := false  // lastErr came after the last completed check
	for {
		p, err := check(dctx)
		if err == nil && len(p) == 0 {
			return nil
		}
		// A check cut short by the deadline reports "context deadline
		// exceeded" for whatever it had not fetched yet, and client-go's
		// rate limiter refuses a request early when its wait would cross
		// the deadline: neither says why things were pending. The last
		// check that finished does.
		switch {
		case err == nil && (dctx.Err() == nil || !completed):
			pending, completed, errAfter = p, true, false
		case err == nil:
		case !deadlineEffect(dctx, err):
			lastErr, errAfter = err, true
		case !completed && lastErr == nil:
			lastErr = err
		}
		select {
		case <-dctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !completed {
				return fmt.Errorf("%s not ready after %s: %v", what, o.Timeout, oneline.Lines(lastErr.Error()))
			}
			msg := fmt.Sprintf("%s not ready after %s: %s", what, o.Timeout, strings.Join(pending, ", "))
			if errAfter {
				msg += fmt.Sprintf(" (then: %v)", oneline.Lines(lastErr.Error()))
			}
			return errors.New(msg)
		case <-time.After(o.interval()):
		}
	}
}

// deadlineEffect reports whether err is the wait's own deadline showing
// through a check: the context expired, or the client's rate limiter
// declined to wait past it.
func deadlineEffect(dctx context.Context, err error) bool {
	return dctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "would exceed context deadline")
}

// WaitNodesReady waits until at least want nodes exist and every node
// (or, if names is set, every named node) has condition Ready=True.
func WaitNodesReady(ctx context.Context, dyn dynamic.Interface, want int, names []string, o WaitOptions) error {
	return poll(ctx, o, "nodes", func(ctx context.Context) ([]string, error) {
		list, err := dyn.Resource(NodesGVR).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		var pending []string
		for i := range list.Items {
			var n corev1.Node
			if err := fromUnstructured(&list.Items[i], &n); err != nil {
				return nil, err
			}
			if len(names) > 0 && !contains(names, n.Name) {
				continue
			}
			seen[n.Name] = true
			if !NodeReady(&n) {
				pending = append(pending, "node "+n.Name+" ("+nodeReason(&n)+")")
			}
		}
		for _, n := range names {
			if !seen[n] {
				pending = append(pending, "node "+n+" (missing)")
			}
		}
		if len(seen) < want {
			pending = append(pending, fmt.Sprintf("%d of %d nodes registered", len(seen), want))
		}
		sort.Strings(pending)
		return pending, nil
	})
}

func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func nodeReason(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Reason != "" {
				return "Ready=" + string(c.Status) + ": " + c.Reason
			}
			return "Ready=" + string(c.Status)
		}
	}
	return "no Ready condition yet"
}

// WaitWorkloadsReady waits until every Deployment and DaemonSet among objs
// has rolled out its current generation and has all its pods available
// (other kinds are ignored).
func WaitWorkloadsReady(ctx context.Context, dyn dynamic.Interface, objs []*unstructured.Unstructured, o WaitOptions) error {
	var work []*unstructured.Unstructured
	for _, obj := range objs {
		if obj.GroupVersionKind().Group == "apps" && (obj.GetKind() == "Deployment" || obj.GetKind() == "DaemonSet") {
			work = append(work, obj)
		}
	}
	return poll(ctx, o, "workloads", func(ctx context.Context) ([]string, error) {
		var pending []string
		for _, obj := range work {
			gvr := DeploymentsGVR
			if obj.GetKind() == "DaemonSet" {
				gvr = DaemonSetsGVR
			}
			cur, err := dyn.Resource(gvr).Namespace(obj.GetNamespace()).Get(ctx, obj.GetName(), metav1.GetOptions{})
			if err != nil {
				pending = append(pending, Ref(obj)+" ("+oneline.Lines(err.Error())+")")
				continue
			}
			if why := workloadPending(cur); why != "" {
				pending = append(pending, Ref(obj)+" ("+why+")")
			}
		}
		return pending, nil
	})
}

// workloadPending says why a Deployment or DaemonSet is not ready, or "".
func workloadPending(u *unstructured.Unstructured) string {
	switch u.GetKind() {
	case "Deployment":
		var d appsv1.Deployment
		if err := fromUnstructured(u, &d); err != nil {
			return err.Error()
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		switch {
		case d.Status.ObservedGeneration < d.Generation:
			return "generation not observed yet"
		case d.Status.UpdatedReplicas < want:
			return fmt.Sprintf("%d/%d updated", d.Status.UpdatedReplicas, want)
		case d.Status.AvailableReplicas < want:
			return fmt.Sprintf("%d/%d available", d.Status.AvailableReplicas, want)
		}
	case "DaemonSet":
		var d appsv1.DaemonSet
		if err := fromUnstructured(u, &d); err != nil {
			return err.Error()
		}
		want := d.Status.DesiredNumberScheduled
		switch {
		case d.Status.ObservedGeneration < d.Generation:
			return "generation not observed yet"
		case want == 0:
			// No node matches yet (or the controller has not counted):
			// an empty DaemonSet is never what a trial wants.
			return "no pod scheduled"
		case d.Status.UpdatedNumberScheduled < want:
			return fmt.Sprintf("%d/%d updated", d.Status.UpdatedNumberScheduled, want)
		case d.Status.NumberAvailable < want:
			return fmt.Sprintf("%d/%d available", d.Status.NumberAvailable, want)
		}
	}
	return ""
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// PodProblems says why the namespace's pods are not ready, from their
// containers' states (image missing, spec refused, crash loop), on one
// line: the kubelet knows, and a user should not need kubectl to find out.
func PodProblems(ctx context.Context, client kubernetes.Interface, ns string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return ""
	}
	var out []string
	for _, p := range list.Items {
		if PodReady(&p) {
			continue
		}
		for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			switch {
			case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "PodInitializing" && cs.State.Waiting.Reason != "ContainerCreating":
				out = append(out, fmt.Sprintf("pod %s container %s: %s: %s", p.Name, cs.Name, cs.State.Waiting.Reason, oneline.Fold(cs.State.Waiting.Message, 240)))
			case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
				out = append(out, fmt.Sprintf("pod %s container %s: exited %d: %s", p.Name, cs.Name, cs.State.Terminated.ExitCode, oneline.Fold(cs.State.Terminated.Message, 240)))
			}
		}
		if len(p.Status.ContainerStatuses) == 0 {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
					out = append(out, fmt.Sprintf("pod %s: not scheduled: %s", p.Name, oneline.Fold(c.Message, 240)))
				}
			}
		}
	}
	if len(out) > 3 {
		out = append(out[:3], fmt.Sprintf("and %d more", len(out)-3))
	}
	return strings.Join(out, "; ")
}

// PodReady reports whether the pod's Ready condition is true.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
