package kube_test

// Cordon, drain and the node condition watch against the real API server
// (apiserver_test.go starts it). No kubelet runs: pods are bound by
// spec.nodeName and a pod deleted with a grace period stays terminating
// until something finalises it, which the tests use.

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/framework/cluster/kube"
)

func createNode(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createNamespace(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// podOn is a pod bound to node, as the scheduler would leave it.
func podOn(ns, name, node string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "c", Image: "blastradius:test"}},
		},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func createPods(t *testing.T, ctx context.Context, cs kubernetes.Interface, pods ...*corev1.Pod) {
	t.Helper()
	for _, p := range pods {
		if _, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s: %v", p.Name, err)
		}
	}
}

func podExists(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name string) bool {
	t.Helper()
	_, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func unschedulable(t *testing.T, ctx context.Context, cs kubernetes.Interface, node string) bool {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Spec.Unschedulable
}

func TestRealAPIServerCordonDrainUncordon(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	cs := api.cs
	const ns = "drain"
	createNamespace(t, ctx, cs, ns)
	createNode(t, ctx, cs, "drain-n1")
	createNode(t, ctx, cs, "drain-n2")
	yes := true
	createPods(t, ctx, cs,
		podOn(ns, "web", "drain-n1", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5c6d", UID: types.UID("rs-uid"), Controller: &yes}}
		}),
		podOn(ns, "scratch", "drain-n1", func(p *corev1.Pod) { // emptyDir and no controller: evicted all the same
			p.Spec.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}),
		podOn(ns, "agent", "drain-n1", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "agent", UID: types.UID("ds-uid"), Controller: &yes}}
		}),
		podOn(ns, "static", "drain-n1", func(p *corev1.Pod) {
			p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "hash"}
		}),
		podOn(ns, "elsewhere", "drain-n2"),
	)

	if err := kube.Cordon(ctx, cs, "drain-n1"); err != nil {
		t.Fatal(err)
	}
	if !unschedulable(t, ctx, cs, "drain-n1") || unschedulable(t, ctx, cs, "drain-n2") {
		t.Fatal("cordon did not set spec.unschedulable on drain-n1 alone")
	}
	if err := kube.Cordon(ctx, cs, "drain-n1"); err != nil {
		t.Fatalf("cordon twice: %v", err)
	}

	zero := int64(0)
	t0 := time.Now()
	if err := kube.Drain(ctx, cs, "drain-n1", kube.DrainOptions{Timeout: 20 * time.Second, GracePeriod: &zero, Interval: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	t.Logf("drain took %s", time.Since(t0).Round(time.Millisecond))
	for name, want := range map[string]bool{"web": false, "scratch": false, "agent": true, "static": true, "elsewhere": true} {
		if got := podExists(t, ctx, cs, ns, name); got != want {
			t.Errorf("after drain, pod %s exists: %v, want %v", name, got, want)
		}
	}
	// Nothing left to evict: a second drain is a no-op.
	if err := kube.Drain(ctx, cs, "drain-n1", kube.DrainOptions{Timeout: 5 * time.Second, GracePeriod: &zero}); err != nil {
		t.Fatalf("drain again: %v", err)
	}

	if err := kube.Uncordon(ctx, cs, "drain-n1"); err != nil {
		t.Fatal(err)
	}
	if unschedulable(t, ctx, cs, "drain-n1") {
		t.Fatal("uncordon left spec.unschedulable set")
	}
	if err := kube.Cordon(ctx, cs, "drain-missing"); err == nil || !strings.Contains(err.Error(), "cordon node drain-missing: ") || !strings.Contains(err.Error(), "not found") {
		t.Errorf("cordon of a missing node: %v", err)
	}
}

// Pods that do not go: one held by a disruption budget (the eviction is
// refused), one evicted with its own grace period, which without a kubelet
// never ends. The drain gives up at its deadline and names both. The test
// plays the kubelet (the guarded pod running and Ready: the API server lets
// a pending or unready pod go whatever the budget) and the disruption
// controller (the budget's status: no disruption allowed).
func TestRealAPIServerDrainDeadline(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	cs := api.cs
	const ns = "drain-stuck"
	createNamespace(t, ctx, cs, ns)
	createNode(t, ctx, cs, "drain-n3")
	zero := intstr.FromInt32(0)
	pdb, err := cs.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "guarded", Namespace: ns},
		Spec:       policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &zero, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "guarded"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pdb.Status = policyv1.PodDisruptionBudgetStatus{ObservedGeneration: pdb.Generation, DisruptionsAllowed: 0, CurrentHealthy: 1, DesiredHealthy: 1, ExpectedPods: 1}
	if _, err := cs.PolicyV1().PodDisruptionBudgets(ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPods(t, ctx, cs, podOn(ns, "guarded", "drain-n3"), podOn(ns, "slow", "drain-n3"))
	for _, name := range []string{"guarded", "slow"} {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	err = kube.Drain(ctx, cs, "drain-n3", kube.DrainOptions{Timeout: 3 * time.Second, Interval: 50 * time.Millisecond})
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("a 3s drain took %s", took)
	}
	if err == nil {
		t.Fatal("drain succeeded though no pod could go")
	}
	msg := err.Error()
	for _, want := range []string{"drain node drain-n3: 2 pods not gone after 3s: ", "drain-stuck/guarded (eviction refused: Cannot evict pod as it would violate the pod's disruption budget.)", "drain-stuck/slow (evicted, still terminating)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	if err := kube.Drain(ctx, cs, "drain-n3", kube.DrainOptions{}); err == nil || !strings.Contains(err.Error(), "no deadline") {
		t.Errorf("drain without a deadline: %v", err)
	}
}

// WaitNodeCondition sees a status change the node lifecycle controller
// would make (Ready True -> False) as it happens, returns at once when the
// condition already holds, and times out naming what the node showed.
func TestRealAPIServerWaitNodeCondition(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	cs := api.cs
	createNode(t, ctx, cs, "watch-n1")
	setReady(t, ctx, cs, "watch-n1", corev1.ConditionTrue, "KubeletReady")

	type result struct {
		at  time.Time
		err error
	}
	done := make(chan result, 1)
	go func() {
		at, err := kube.WaitNodeCondition(ctx, cs, "watch-n1", corev1.ConditionFalse, 20*time.Second)
		done <- result{at, err}
	}()
	time.Sleep(300 * time.Millisecond) // the watch is established by then, or lists the change
	select {
	case r := <-done:
		t.Fatalf("returned before the change: %v, %v", r.at, r.err)
	default:
	}
	changed := time.Now()
	setReady(t, ctx, cs, "watch-n1", corev1.ConditionFalse, "NodeStatusUnknown")
	r := <-done
	returned := time.Now()
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.at.Before(changed) || r.at.After(returned) {
		t.Errorf("observed at %s, want between the change (%s) and the return (%s)", r.at.Format(time.StampMicro), changed.Format(time.StampMicro), returned.Format(time.StampMicro))
	}
	t.Logf("change observed %s after the status update was sent", r.at.Sub(changed).Round(time.Microsecond))

	// Already so: at once.
	t0 := time.Now()
	at, err := kube.WaitNodeCondition(ctx, cs, "watch-n1", corev1.ConditionFalse, 5*time.Second)
	if err != nil || at.Before(t0) || time.Since(t0) > 3*time.Second {
		t.Errorf("condition already held: %s, %v after %s", at, err, time.Since(t0))
	}

	// Never comes.
	_, err = kube.WaitNodeCondition(ctx, cs, "watch-n1", corev1.ConditionUnknown, 2*time.Second)
	if err == nil || err.Error() != "node watch-n1 not Ready=Unknown after 2s (Ready=False: NodeStatusUnknown)" {
		t.Errorf("timeout: %v", err)
	}
	_, err = kube.WaitNodeCondition(ctx, cs, "watch-missing", corev1.ConditionTrue, 2*time.Second)
	if err == nil || err.Error() != "node watch-missing not Ready=True after 2s (node not found)" {
		t.Errorf("missing node: %v", err)
	}
	if _, err := kube.WaitNodeCondition(ctx, cs, "watch-n1", corev1.ConditionTrue, 0); err == nil || !strings.Contains(err.Error(), "no deadline") {
		t.Errorf("no deadline: %v", err)
	}
}

// A DaemonSet pod is recognised by its controller reference, not its name
// or labels: a pod merely labelled like one is evicted.
func TestRealAPIServerDrainKeepsOnlyDaemonSetControlled(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	cs := api.cs
	const ns = "drain-owners"
	createNamespace(t, ctx, cs, ns)
	createNode(t, ctx, cs, "drain-n4")
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "proxy", Namespace: ns}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "proxy"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "proxy"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "blastradius:test"}}}},
	}}
	ds, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	createPods(t, ctx, cs,
		podOn(ns, "proxy-abcde", "drain-n4", func(p *corev1.Pod) {
			p.Labels["app"] = "proxy"
			p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}
		}),
		podOn(ns, "lookalike", "drain-n4", func(p *corev1.Pod) {
			p.Labels["app"] = "proxy"
			// Owned by a DaemonSet but not controlled by it.
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "proxy", UID: ds.UID, Controller: &no}}
		}),
		podOn(ns, "job", "drain-n4", func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "job", UID: types.UID("job-uid"), Controller: &yes}}
		}),
	)
	zero := int64(0)
	if err := kube.Drain(ctx, cs, "drain-n4", kube.DrainOptions{Timeout: 10 * time.Second, GracePeriod: &zero}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"proxy-abcde": true, "lookalike": false, "job": false} {
		if got := podExists(t, ctx, cs, ns, name); got != want {
			t.Errorf("after drain, pod %s exists: %v, want %v", name, got, want)
		}
	}
}
