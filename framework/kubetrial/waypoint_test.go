package kubetrial

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"

	"blastradius.dev/blastradius/framework/istio/istioinstall"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/manifests"
)

// The waypoint scenarios on Istio: the Service is labelled to use the
// waypoint, the Gateway and its overlay pin the replicas to node-1 ..
// node-N, and nothing else of the trial changes.
func TestIstioWaypointObjects(t *testing.T) {
	sc, err := scenario.Lookup("waypoint-replica-kill")
	if err != nil {
		t.Fatal(err)
	}
	pl, err := scenario.PlanFor(sc, "istio-ambient", 450)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Render(pl, []string{"w1", "w2", "w3"}, "img:1")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		kinds[o.GetKind()+"/"+o.GetName()] = o
		if o.GetNamespace() != "" && o.GetNamespace() != manifests.Namespace("istio-ambient") {
			t.Errorf("%s/%s in namespace %s", o.GetKind(), o.GetName(), o.GetNamespace())
		}
	}
	svc := kinds["Service/"+pl.Mesh.Waypoint.Service]
	if svc == nil || svc.GetLabels()[istioinstall.UseWaypointLabel] != istioinstall.WaypointName {
		t.Fatalf("service %s not labelled %s=%s: %v", pl.Mesh.Waypoint.Service, istioinstall.UseWaypointLabel, istioinstall.WaypointName, svc)
	}
	for name, o := range kinds {
		if strings.HasPrefix(name, "Service/") && o != svc && o.GetLabels()[istioinstall.UseWaypointLabel] != "" {
			t.Errorf("%s uses the waypoint too", name)
		}
	}
	if kinds["Gateway/"+istioinstall.WaypointName] == nil {
		t.Fatal("no Gateway")
	}
	cm := kinds["ConfigMap/waypoint-params"]
	if cm == nil {
		t.Fatal("no overlay ConfigMap")
	}
	ov, _, _ := unstructured.NestedString(cm.Object, "data", "deployment")
	if !strings.Contains(ov, "- w1\n") || !strings.Contains(ov, "- w2\n") || strings.Contains(ov, "w3") {
		t.Errorf("overlay pins to\n%s\nwant w1 and w2 (node-1, node-2) only", ov)
	}
	// The reference's ambient keeps its own manifests; no Istio waypoint.
	ref, _ := scenario.PlanFor(sc, "ambient", 450)
	robjs, err := Render(ref, []string{"w1", "w2", "w3"}, "img:1")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range robjs {
		if o.GetKind() == "Gateway" {
			t.Error("the reference's trial has an Istio Gateway")
		}
	}
}

// fakeWaypoint plays istiod and the Deployment controller on a fake: the
// Deployment appears after a while; then pods follow its replicas, placed
// on w2 before w1, so that plan order is not creation order.
func fakeWaypoint(ctx context.Context, cs *fake.Clientset, ns string, appear time.Duration) {
	var seq atomic.Int32
	go func() {
		time.Sleep(appear)
		one := int32(1)
		_, _ = cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: istioinstall.WaypointName, Namespace: ns},
			Spec: appsv1.DeploymentSpec{Replicas: &one}}, metav1.CreateOptions{})
		for ctx.Err() == nil {
			time.Sleep(30 * time.Millisecond)
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, istioinstall.WaypointName, metav1.GetOptions{})
			if err != nil {
				continue
			}
			list, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: waypointSelector})
			have := map[string]bool{}
			for _, p := range list.Items {
				have[p.Spec.NodeName] = true
			}
			want := int(*d.Spec.Replicas)
			switch {
			case len(list.Items) < want:
				node := "w2"
				if have["w2"] {
					node = "w1"
				}
				n := seq.Add(1)
				_, _ = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("waypoint-%d", n), Namespace: ns, UID: types.UID(fmt.Sprint(n)),
						Labels: map[string]string{istioinstall.GatewayNameLabel: istioinstall.WaypointName}, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+n), 0))},
					Spec:   corev1.PodSpec{NodeName: node},
					Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
				}, metav1.CreateOptions{})
			case len(list.Items) > want:
				_ = cs.CoreV1().Pods(ns).Delete(ctx, list.Items[0].Name, metav1.DeleteOptions{})
			}
		}
	}()
}

func TestIstioWaypointReplicasAndFaults(t *testing.T) {
	const ns = "trial"
	cs := fake.NewClientset()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fakeWaypoint(ctx, cs, ns, 300*time.Millisecond)
	b := &Backend{Client: cs, Nodes: []string{"w1", "w2", "w3"}}
	nodes, err := b.waitWaypoint(ctx, ns, 2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if nodes["waypoint-0"] != "node-1" || nodes["waypoint-1"] != "node-2" || len(nodes) != 2 {
		t.Errorf("replicas %v, want waypoint-0 on node-1, waypoint-1 on node-2 (plan order, not creation order)", nodes)
	}
	d := &istioDataPlane{b: b, trialNS: ns, waypoint: 2, logf: t.Logf}
	if got := d.WaypointPods(); strings.Join(got, ",") != "waypoint-0,waypoint-1" {
		t.Errorf("WaypointPods %v", got)
	}
	if _, err := d.CrashWaypoint("waypoint-2"); err == nil {
		t.Error("a replica the trial does not have was killed")
	}
	cs.ClearActions()
	if _, err := d.CrashWaypoint("waypoint-1"); err != nil {
		t.Fatal(err)
	}
	del := deletes(cs)
	if g, ok := del["waypoint-1"]; !ok || g == nil || *g != 0 || len(del) != 1 {
		t.Errorf("deletes %v, want the pod on w2 (waypoint-1, created first) with grace period 0", del)
	}
	stopped, err := d.StopWaypoints()
	if err != nil {
		t.Fatal(err)
	}
	left, _ := b.waypointReplicas(ctx, ns)
	dep, _ := cs.AppsV1().Deployments(ns).Get(ctx, istioinstall.WaypointName, metav1.GetOptions{})
	if len(left) != 0 || *dep.Spec.Replicas != 0 {
		t.Errorf("after the stop: %d replicas, %d pods", *dep.Spec.Replicas, len(left))
	}
	started, err := d.StartWaypoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	back, _ := b.waypointReplicas(ctx, ns)
	if len(back) != 2 || !started.After(stopped) {
		t.Errorf("after the start: %d replicas (started %v, stopped %v)", len(back), started, stopped)
	}
	// A replacement not scheduled yet shifts no running replica's name.
	cancel() // the fake controller would delete the extra pod
	time.Sleep(100 * time.Millisecond)
	pending := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "waypoint-pending", Namespace: ns, CreationTimestamp: metav1.NewTime(time.Unix(1, 0)),
		Labels: map[string]string{istioinstall.GatewayNameLabel: istioinstall.WaypointName}}}
	if _, err := cs.CoreV1().Pods(ns).Create(context.Background(), pending, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	all, _ := b.waypointReplicas(context.Background(), ns)
	if len(all) != 3 || all[2].Name != "waypoint-pending" || all[0].Spec.NodeName != "w1" || all[1].Spec.NodeName != "w2" {
		var got []string
		for _, p := range all {
			got = append(got, p.Name+"@"+p.Spec.NodeName)
		}
		t.Errorf("replicas in plan order %v, want w1's, w2's, then the unscheduled one", got)
	}
}

// Without istiod's Deployment the wait ends at its deadline and says what
// istiod wrote on the Gateway.
func TestIstioWaypointMissingSaysWhy(t *testing.T) {
	gw := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{"name": istioinstall.WaypointName, "namespace": "trial"},
		"status": map[string]any{"conditions": []any{map[string]any{
			"type": "Accepted", "status": "False", "reason": "InvalidParameters", "message": "configmap waypoint-params not found",
		}}},
	}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{istioinstall.GatewayGVR: "GatewayList"})
	if _, err := dyn.Resource(istioinstall.GatewayGVR).Namespace("trial").Create(context.Background(), gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b := &Backend{Client: fake.NewClientset(), Dynamic: dyn, Nodes: []string{"w1"}}
	_, err := b.waitWaypoint(context.Background(), "trial", 1, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "InvalidParameters") || !strings.Contains(err.Error(), "no waypoint Deployment") {
		t.Errorf("error %v, want the Deployment missing and the Gateway's condition", err)
	}
}
