package kubetrial

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chaos-mesh/chaos-mesh/api/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crfake "sigs.k8s.io/controller-runtime/pkg/client/fake"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/scenario"
)

// Instants the fake Chaos Mesh records: whole seconds, far from now, so a
// time taken from the test's clock cannot pass for them.
var (
	applied   = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	recovered = applied.Add(9 * time.Second)
)

// fakeChaosMesh plays Chaos Mesh's controller on a fake API server: every
// chaos object gets one record applied at `applied`; a paused one gets its
// recovery at `recovered`. It returns what it saw, by object name.
func fakeChaosMesh(t *testing.T, c client.Client) (seen func() map[string]kube.Chaos, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	objs := map[string]kube.Chaos{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var pods v1alpha1.PodChaosList
			var nets v1alpha1.NetworkChaosList
			var all []kube.Chaos
			if c.List(ctx, &pods) == nil {
				for i := range pods.Items {
					all = append(all, &pods.Items[i])
				}
			}
			if c.List(ctx, &nets) == nil {
				for i := range nets.Items {
					all = append(all, &nets.Items[i])
				}
			}
			for _, o := range all {
				mu.Lock()
				objs[o.GetName()] = o.DeepCopyObject().(kube.Chaos)
				mu.Unlock()
				_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
					cur := o.DeepCopyObject().(kube.Chaos)
					if err := c.Get(ctx, client.ObjectKeyFromObject(o), cur); err != nil {
						return err
					}
					st := cur.GetStatus()
					switch {
					case len(st.Experiment.Records) == 0:
						st.Experiment.Records = []*v1alpha1.Record{{Id: "pod", Phase: v1alpha1.Injected, InjectedCount: 1,
							Events: []v1alpha1.RecordEvent{*v1alpha1.NewRecordEvent(v1alpha1.TypeSucceeded, v1alpha1.Apply, "", metav1.NewTime(applied))}}}
					case cur.GetAnnotations()[v1alpha1.PauseAnnotationKey] == "true" && len(st.Experiment.Records[0].Events) == 1:
						r := st.Experiment.Records[0]
						r.Phase = v1alpha1.NotInjected
						r.Events = append(r.Events, *v1alpha1.NewRecordEvent(v1alpha1.TypeSucceeded, v1alpha1.Recover, "", metav1.NewTime(recovered)))
					default:
						return nil
					}
					return c.Update(ctx, cur)
				})
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return func() map[string]kube.Chaos {
			mu.Lock()
			defer mu.Unlock()
			return objs
		}, func() {
			cancel()
			<-done
		}
}

// With Chaos Mesh, the faults it can do are injected as its objects aimed
// at the cluster's real nodes, and the fault times are the ones its status
// records hold, not the instants the objects were made.
func TestFaultsThroughChaosMesh(t *testing.T) {
	s, err := kube.ChaosScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := crfake.NewClientBuilder().WithScheme(s).Build()
	k := kube.NewChaosClientFor(c).WithTimeout(5 * time.Second)
	seen, stop := fakeChaosMesh(t, c)
	defer stop()
	b := &Backend{Nodes: []string{"kw-a", "kw-b", "kw-c"}, Chaos: k}
	scope := kube.ChaosScope{Trial: "03-node-proxy-crash-ambient", Namespace: "blastradius-ambient"}
	in := &nodes{b: b, planned: 3}
	dp := &chaosDataPlane{dataPlane: &dataPlane{b: b, ns: scope.Namespace, mode: "ambient"}, k: k, scope: scope, nodes: in}

	at, err := dp.CrashNodeProxy("node-3")
	if err != nil || !at.Equal(applied) {
		t.Fatalf("node proxy crash at %v (%v), want the recorded %v", at, err, applied)
	}
	var kill *v1alpha1.PodChaos
	for _, o := range seen() {
		if p, ok := o.(*v1alpha1.PodChaos); ok && p.Spec.Action == v1alpha1.PodKillAction {
			kill = p
		}
	}
	if kill == nil || !slices.Equal(kill.Spec.Selector.Nodes, []string{"kw-c"}) || kill.Namespace != scope.Namespace {
		t.Fatalf("pod-kill object %+v, want one selecting node kw-c in %s", kill, scope.Namespace)
	}
	var left v1alpha1.PodChaosList
	if err := c.List(context.Background(), &left); err != nil || len(left.Items) != 0 {
		t.Errorf("the one-shot kill was left behind: %d objects (%v)", len(left.Items), err)
	}

	if at, err := dp.StopControlPlane(); err != nil || !at.Equal(applied) {
		t.Fatalf("control plane held down at %v (%v)", at, err)
	}
	if _, err := dp.StopControlPlane(); err == nil {
		t.Error("the control plane was held down twice")
	}
	if back, err := dp.StartControlPlane(context.Background()); err != nil || !back.Equal(recovered) {
		t.Fatalf("control plane back at %v (%v), want the recorded %v", back, err, recovered)
	}

	cn := &chaosNodes{nodes: in, k: k, scope: scope}
	at, heal, err := cn.Partition("node-1", "node-3")
	if err != nil || !at.Equal(applied) {
		t.Fatalf("partition at %v (%v)", at, err)
	}
	var part *v1alpha1.NetworkChaos
	for _, o := range seen() {
		if n, ok := o.(*v1alpha1.NetworkChaos); ok {
			part = n
		}
	}
	if part == nil || !slices.Equal(part.Spec.Selector.Nodes, []string{"kw-a"}) || !slices.Equal(part.Spec.Target.Selector.Nodes, []string{"kw-c"}) {
		t.Fatalf("partition object %+v, want kw-a <-> kw-c", part)
	}
	for range 2 {
		if back, err := heal(); err != nil || !back.Equal(recovered) {
			t.Fatalf("partition healed at %v (%v), want the recorded %v", back, err, recovered)
		}
	}

	for mode, want := range map[string]scenario.Capability{"sidecar": scenario.CapCrashSidecar, "ambient": scenario.CapCrashNodeProxy, "none": scenario.CapPartitionNodes} {
		if b.Capabilities(mode)[want] == "" {
			t.Errorf("with Chaos Mesh, mode %s lacks %s", mode, want)
		}
	}
	if (&Backend{}).Capabilities("sidecar")[scenario.CapCrashSidecar] != "" {
		t.Error("without Chaos Mesh, sidecar-crash is offered")
	}
}
