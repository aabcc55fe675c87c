package kubetrial

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"blastradius.dev/blastradius/manifests"
)

// A kind node crash is a SIGKILL of the node's container and a recovery
// its start, through the container runtime's CLI; failures name the
// command and what the runtime said.
func TestContainerCrasherKillsAndStartsTheNodeContainer(t *testing.T) {
	var calls []string
	fail := false
	c := &ContainerCrasher{Runtime: "docker", run: func(ctx context.Context, name string, args ...string) ([]byte, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("runtime called without a deadline")
		}
		calls = append(calls, name+" "+strings.Join(args, " "))
		if fail {
			return []byte("Error response from daemon: No such container: kind-worker9\n"), errors.New("exit status 1")
		}
		return nil, nil
	}}
	before := time.Now()
	at, err := c.CrashNode("kind-worker2")
	if err != nil || at.Before(before) {
		t.Fatalf("crash: %v at %v", err, at)
	}
	back, err := c.RecoverNode("kind-worker2")
	if err != nil || back.Before(at) {
		t.Fatalf("recover: %v at %v", err, back)
	}
	want := []string{"docker kill --signal KILL kind-worker2", "docker start kind-worker2"}
	if strings.Join(calls, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", calls, want)
	}
	fail = true
	_, err = c.CrashNode("kind-worker9")
	if err == nil || !strings.Contains(err.Error(), "docker kill --signal KILL kind-worker9") || !strings.Contains(err.Error(), "No such container") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %q: want one line naming the command and the runtime's answer", err)
	}
}

func readyPod(name, node string, labels map[string]string, ready bool) *corev1.Pod {
	p := pod(name, node, "10.0.0.1", labels)
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
	return p
}

// Node-proxy and control-plane crashes delete the pod playing the planned
// name with grace period 0; the control plane is back when a pod is Ready.
func TestDataPlaneFaultsThroughTheAPI(t *testing.T) {
	ns := manifests.Namespace("ambient")
	cs := fake.NewSimpleClientset(
		readyPod("ztunnel-x1", "kw-a", map[string]string{manifests.LabelPod: "ztunnel"}, true),
		readyPod("ztunnel-x2", "kw-b", map[string]string{manifests.LabelPod: "ztunnel"}, true),
		readyPod("controlplane-1", "kw-a", map[string]string{manifests.LabelPod: "controlplane"}, false),
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "controlplane", Namespace: ns}},
	)
	var scaled []int32
	cs.PrependReactor("get", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		return true, &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "controlplane", Namespace: ns}}, nil
	})
	conflicts := 1
	cs.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "scale" {
			return false, nil, nil
		}
		if conflicts > 0 {
			// The Deployment controller wrote the object in between.
			conflicts--
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, "controlplane", errors.New("the object has been modified"))
		}
		s := a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale)
		scaled = append(scaled, s.Spec.Replicas)
		return true, s, nil
	})
	var deleted []string
	cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		d := a.(k8stesting.DeleteActionImpl)
		if g := d.DeleteOptions.GracePeriodSeconds; g == nil || *g != 0 {
			t.Errorf("delete of %s without grace period 0", d.Name)
		}
		deleted = append(deleted, d.Name)
		return false, nil, nil
	})
	b := &Backend{Client: cs, Nodes: []string{"kw-a", "kw-b"}}
	dp := &dataPlane{b: b, ns: ns, mode: "ambient"}
	if _, err := dp.CrashNodeProxy("node-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := dp.CrashNodeProxy("node-3"); err == nil || !strings.Contains(err.Error(), "ztunnel-n3") {
		t.Errorf("crash of a node proxy that does not exist: %v", err)
	}
	if len(deleted) != 1 || deleted[0] != "ztunnel-x2" {
		t.Errorf("deleted %v, want ztunnel-x2 (node-2 is kw-b)", deleted)
	}
	// Not Ready yet: StartControlPlane waits, and gives up at its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	if _, err := dp.StartControlPlane(ctx); err == nil || !strings.Contains(err.Error(), "no control plane pod Ready") {
		t.Errorf("start with no Ready pod: %v", err)
	}
	cancel()
	p, _ := cs.CoreV1().Pods(ns).Get(context.Background(), "controlplane-1", metav1.GetOptions{})
	p.Status.Conditions[0].Status = corev1.ConditionTrue
	cs.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dp.StartControlPlane(ctx); err != nil {
		t.Errorf("start with a Ready pod: %v", err)
	}
	if _, err := dp.StopControlPlane(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(scaled) != "[1 1 0]" {
		t.Errorf("control plane scaled to %v, want [1 1 0] (start, start, stop)", scaled)
	}
}
