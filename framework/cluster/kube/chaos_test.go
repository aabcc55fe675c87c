package kube

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-mesh/chaos-mesh/api/v1alpha1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"blastradius.dev/blastradius/manifests"
)

var testScope = ChaosScope{Trial: "03-node-proxy-crash-ambient", Namespace: "blastradius-ambient"}

// checkMeta checks what every constructor's object carries.
func checkMeta(t *testing.T, obj Chaos, fault, target string) {
	t.Helper()
	name := obj.GetName()
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		t.Errorf("name %q is not a DNS-1123 label: %v", name, errs)
	}
	if !strings.HasPrefix(name, "br-03-node-proxy-crash-ambient-") {
		t.Errorf("name %q does not derive from the trial", name)
	}
	if obj.GetNamespace() != testScope.Namespace {
		t.Errorf("namespace %q, want %q", obj.GetNamespace(), testScope.Namespace)
	}
	want := map[string]string{LabelChaosManagedBy: ChaosManagedBy, LabelChaosTrial: "03-node-proxy-crash-ambient", LabelChaosFault: fault}
	if !reflect.DeepEqual(obj.GetLabels(), want) {
		t.Errorf("labels %v, want %v", obj.GetLabels(), want)
	}
	if got := obj.GetAnnotations()[AnnotationChaosTarget]; got != target {
		t.Errorf("target annotation %q, want %q", got, target)
	}
	// What Chaos Mesh's admission webhook would run, after its defaulting.
	cp := obj.DeepCopyObject().(Chaos)
	if err := cp.(interface {
		Default(context.Context, runtime.Object) error
	}).Default(context.Background(), cp); err != nil {
		t.Errorf("chaos-mesh defaulting: %v", err)
	}
	if err := ValidateChaos(cp); err != nil {
		t.Errorf("validation: %v", err)
	}
}

func TestChaosName(t *testing.T) {
	long := strings.Repeat("very-long-trial-name-", 6)
	cases := []struct{ trial, what, want string }{
		{"03-node-proxy-crash-ambient", "node-proxy-kill-node-3", "br-03-node-proxy-crash-ambient-node-proxy-kill-node-3"},
		{"01_Node Crash/None", "x", "br-01-node-crash-none-x"},
		{"", "", "br"},
	}
	for _, c := range cases {
		if got := ChaosName(c.trial, c.what); got != c.want {
			t.Errorf("ChaosName(%q, %q) = %q, want %q", c.trial, c.what, got, c.want)
		}
	}
	a, b := ChaosName(long, "partition-node-1-node-2"), ChaosName(long, "partition-node-1-node-3")
	for _, n := range []string{a, b} {
		if len(n) > 63 || len(validation.IsDNS1123Label(n)) > 0 {
			t.Errorf("%q (%d chars) is not a DNS-1123 label", n, len(n))
		}
	}
	if a == b {
		t.Errorf("two long names cut to the same %q", a)
	}
	if ChaosName(long, "x") != ChaosName(long, "x") {
		t.Error("ChaosName is not deterministic")
	}
}

func TestNodeProxyCrash(t *testing.T) {
	o := NodeProxyCrash(testScope, "node-3")
	checkMeta(t, o, "node-proxy-crash", "node-3")
	if o.Spec.Action != v1alpha1.PodKillAction || o.Spec.Mode != v1alpha1.OneMode || o.Spec.Duration != nil || o.Spec.GracePeriod != 0 {
		t.Errorf("action %q mode %q duration %v grace %d", o.Spec.Action, o.Spec.Mode, o.Spec.Duration, o.Spec.GracePeriod)
	}
	sel := o.Spec.Selector
	if !reflect.DeepEqual(sel.Namespaces, []string{"blastradius-ambient"}) || !reflect.DeepEqual(sel.Nodes, []string{"node-3"}) ||
		!reflect.DeepEqual(sel.LabelSelectors, NodeProxyPodLabels) || sel.Pods != nil {
		t.Errorf("selector %+v", sel)
	}
	if !o.IsOneShot() {
		t.Error("a pod-kill should be one-shot")
	}
	// The data plane may live elsewhere (Istio): the selector follows it,
	// the object stays with the trial.
	s := testScope
	s.DataPlaneNamespace = "istio-system"
	o = NodeProxyCrash(s, "node-1")
	if o.Namespace != "blastradius-ambient" || !reflect.DeepEqual(o.Spec.Selector.Namespaces, []string{"istio-system"}) {
		t.Errorf("namespace %q, selector namespaces %v", o.Namespace, o.Spec.Selector.Namespaces)
	}
}

func TestNodeAgentCrash(t *testing.T) {
	o := NodeAgentCrash(testScope, "node-2")
	checkMeta(t, o, "node-agent-crash", "node-2")
	if o.Spec.Action != v1alpha1.ContainerKillAction || o.Spec.Mode != v1alpha1.OneMode ||
		!reflect.DeepEqual(o.Spec.ContainerNames, []string{NodeAgentContainer}) || !reflect.DeepEqual(o.Spec.Selector.Nodes, []string{"node-2"}) {
		t.Errorf("spec %+v", o.Spec)
	}
}

func TestControlPlaneCrash(t *testing.T) {
	o := ControlPlaneCrash(testScope)
	checkMeta(t, o, "controlplane-crash", "controlplane")
	if o.Spec.Action != v1alpha1.PodKillAction || o.Spec.Mode != v1alpha1.OneMode ||
		!reflect.DeepEqual(o.Spec.Selector.LabelSelectors, ControlPlanePodLabels) || len(o.Spec.Selector.Nodes) != 0 ||
		!reflect.DeepEqual(o.Spec.Selector.Namespaces, []string{"blastradius-ambient"}) {
		t.Errorf("spec %+v", o.Spec)
	}
}

func TestWaypointReplicaKill(t *testing.T) {
	o := WaypointReplicaKill(testScope, "waypoint-7d9f-abcde")
	checkMeta(t, o, "waypoint-replica-kill", "waypoint-7d9f-abcde")
	if o.Spec.Action != v1alpha1.PodKillAction || o.Spec.Mode != v1alpha1.OneMode ||
		!reflect.DeepEqual(o.Spec.Selector.Pods, map[string][]string{"blastradius-ambient": {"waypoint-7d9f-abcde"}}) ||
		!reflect.DeepEqual(o.Spec.Selector.LabelSelectors, WaypointPodLabels) {
		t.Errorf("spec %+v", o.Spec)
	}
	anyOne := WaypointReplicaKill(testScope, "")
	checkMeta(t, anyOne, "waypoint-replica-kill", "waypoint")
	if anyOne.Spec.Selector.Pods != nil || anyOne.Spec.Mode != v1alpha1.OneMode {
		t.Errorf("any replica: selector %+v mode %q", anyOne.Spec.Selector, anyOne.Spec.Mode)
	}
	if anyOne.Name == o.Name {
		t.Error("a named and an unnamed replica kill share a name")
	}
}

func TestSidecarCrash(t *testing.T) {
	o := SidecarCrash(testScope, "server-n3-5c6d-xyz")
	checkMeta(t, o, "sidecar-crash", "server-n3-5c6d-xyz")
	if o.Spec.Action != v1alpha1.ContainerKillAction || o.Spec.Mode != v1alpha1.OneMode ||
		!reflect.DeepEqual(o.Spec.ContainerNames, []string{SidecarContainer}) ||
		!reflect.DeepEqual(o.Spec.Selector.Pods, map[string][]string{"blastradius-ambient": {"server-n3-5c6d-xyz"}}) {
		t.Errorf("spec %+v", o.Spec)
	}
}

func TestPodFailure(t *testing.T) {
	o := PodFailure(testScope, "waypoint-outage", "waypoint-abc", 8*time.Second)
	checkMeta(t, o, "waypoint-outage", "waypoint-abc")
	if o.Spec.Action != v1alpha1.PodFailureAction || o.Spec.Mode != v1alpha1.OneMode || o.Spec.Duration == nil || *o.Spec.Duration != "8s" {
		t.Errorf("spec %+v", o.Spec)
	}
	if d, err := o.Spec.GetDuration(); err != nil || *d != 8*time.Second {
		t.Errorf("Chaos Mesh reads duration %v, %v", d, err)
	}
	if o.IsOneShot() {
		t.Error("pod-failure lasts; it must not be one-shot")
	}
	if def := PodFailure(testScope, "", "p", time.Second); def.Labels[LabelChaosFault] != "pod-failure" {
		t.Errorf("default fault label %q", def.Labels[LabelChaosFault])
	}
	if err := ValidateChaos(PodFailure(testScope, "", "p", 0)); err == nil || !strings.Contains(err.Error(), "needs a duration") {
		t.Errorf("pod-failure without a duration: %v", err)
	}
}

func TestControlPlaneDown(t *testing.T) {
	o := ControlPlaneDown(testScope, 1500*time.Millisecond)
	checkMeta(t, o, "controlplane-down", "controlplane")
	if o.Spec.Action != v1alpha1.PodFailureAction || o.Spec.Mode != v1alpha1.AllMode || *o.Spec.Duration != "1.5s" ||
		!reflect.DeepEqual(o.Spec.Selector.LabelSelectors, ControlPlanePodLabels) {
		t.Errorf("spec %+v", o.Spec)
	}
}

func TestNodePartition(t *testing.T) {
	s := testScope
	s.DataPlaneNamespace = "istio-system"
	o := NodePartition(s, "node-2", "node-3", 10*time.Second)
	checkMeta(t, NodePartition(testScope, "node-2", "node-3", 10*time.Second), "node-partition", "node-2<->node-3")
	if o.Spec.Action != v1alpha1.PartitionAction || o.Spec.Direction != v1alpha1.Both || *o.Spec.Duration != "10s" {
		t.Errorf("action %q direction %q duration %v", o.Spec.Action, o.Spec.Direction, o.Spec.Duration)
	}
	nss := []string{"blastradius-ambient", "istio-system"}
	if o.Spec.Mode != v1alpha1.AllMode || !reflect.DeepEqual(o.Spec.Selector.Nodes, []string{"node-2"}) || !reflect.DeepEqual(o.Spec.Selector.Namespaces, nss) {
		t.Errorf("source side %+v mode %q", o.Spec.Selector, o.Spec.Mode)
	}
	if o.Spec.Target == nil || o.Spec.Target.Mode != v1alpha1.AllMode ||
		!reflect.DeepEqual(o.Spec.Target.Selector.Nodes, []string{"node-3"}) || !reflect.DeepEqual(o.Spec.Target.Selector.Namespaces, nss) {
		t.Errorf("target side %+v", o.Spec.Target)
	}
	if o.Spec.PartitionBehavior != "" || len(o.Spec.ExternalTargets) != 0 || o.Spec.Selector.LabelSelectors != nil {
		t.Errorf("unexpected extras: behavior %q external %v labels %v", o.Spec.PartitionBehavior, o.Spec.ExternalTargets, o.Spec.Selector.LabelSelectors)
	}
	if held := NodePartition(testScope, "node-1", "node-2", 0); held.Spec.Duration != nil {
		t.Errorf("d = 0 should hold the partition until Recover, got duration %q", *held.Spec.Duration)
	}
	if err := ValidateChaos(NodePartition(testScope, "node-1", "node-1", time.Second)); err == nil || !strings.Contains(err.Error(), "two different nodes") {
		t.Errorf("partition of a node with itself: %v", err)
	}
}

// The selectors are only as good as the labels and container names the
// manifests really deploy.
func TestChaosSelectorsMatchManifests(t *testing.T) {
	decoded, err := manifests.Decoded()
	if err != nil {
		t.Fatal(err)
	}
	templates := map[string]corev1.PodTemplateSpec{}
	var sidecar *corev1.Pod
	for _, objs := range decoded {
		for _, o := range objs {
			switch o := o.(type) {
			case *appsv1.DaemonSet:
				templates[o.Spec.Template.Labels["app.kubernetes.io/component"]] = o.Spec.Template
			case *appsv1.Deployment:
				templates[o.Spec.Template.Labels["app.kubernetes.io/component"]] = o.Spec.Template
			case *corev1.Pod:
				if o.Name == "sidecar" {
					sidecar = o
				}
			}
		}
	}
	hasContainer := func(spec corev1.PodSpec, name string) bool {
		for _, c := range spec.Containers {
			if c.Name == name {
				return true
			}
		}
		return false
	}
	for what, labels := range map[string]map[string]string{"node-proxy": NodeProxyPodLabels, "controlplane": ControlPlanePodLabels, "waypoint": WaypointPodLabels} {
		tpl, ok := templates[what]
		if !ok {
			t.Errorf("no %s workload in the manifests", what)
			continue
		}
		for k, v := range labels {
			if tpl.Labels[k] != v {
				t.Errorf("%s pods are labelled %v; the chaos selector wants %s=%s", what, tpl.Labels, k, v)
			}
		}
		if tpl.Spec.HostNetwork && what == "node-proxy" {
			t.Errorf("node proxy pods use hostNetwork, which Chaos Mesh's NetworkChaos refuses")
		}
	}
	if tpl, ok := templates["node-proxy"]; ok && !hasContainer(tpl.Spec, NodeAgentContainer) {
		t.Errorf("the node proxy pod has no %q container", NodeAgentContainer)
	}
	if sidecar == nil || !hasContainer(sidecar.Spec, SidecarContainer) {
		t.Errorf("the sidecar template has no %q container", SidecarContainer)
	}
}

// newFakeChaos is a fake API server holding the chaos-mesh types. No status
// subresource: Chaos Mesh's CRDs for PodChaos and NetworkChaos have none
// (its controller writes status with a plain update), and the fake follows
// the real CRD.
func newFakeChaos(t *testing.T, objs ...client.Object) (client.Client, *ChaosClient) {
	t.Helper()
	s, err := ChaosScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
	k := NewChaosClientFor(c)
	k.poll = 10 * time.Millisecond
	k.timeout = 5 * time.Second
	return c, k
}

// Timestamps Chaos Mesh "wrote": whole seconds, as metav1.Time keeps, and
// far from now so a time taken from our clock cannot pass for them.
var (
	stamp1 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	stamp2 = stamp1.Add(time.Second)
	stamp3 = stamp1.Add(9 * time.Second)
	stamp4 = stamp1.Add(11 * time.Second)
)

func event(op v1alpha1.RecordEventOperation, typ v1alpha1.RecordEventType, at time.Time, msg string) v1alpha1.RecordEvent {
	return *v1alpha1.NewRecordEvent(typ, op, msg, metav1.NewTime(at))
}

// chaosMesh plays Chaos Mesh's controller for one object: it waits until
// the object exists and when(obj) holds, sleeps delay, then applies mutate
// with a plain update, as the records controller does. It reports on done.
func chaosMesh(t *testing.T, c client.Client, obj Chaos, delay time.Duration, when func(Chaos) bool, mutate func(Chaos)) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		key := client.ObjectKeyFromObject(obj)
		for {
			cur := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(Chaos)
			if err := c.Get(ctx, key, cur); err == nil && when(cur) {
				break
			}
			select {
			case <-ctx.Done():
				done <- errors.New("fake Chaos Mesh: object never appeared")
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		time.Sleep(delay)
		done <- retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(Chaos)
			if err := c.Get(ctx, key, cur); err != nil {
				return err
			}
			mutate(cur)
			return c.Update(ctx, cur)
		})
	}()
	return done
}

func always(Chaos) bool { return true }

func TestInjectTakesTimesFromStatusRecords(t *testing.T) {
	c, k := newFakeChaos(t)
	obj := NodePartition(testScope, "node-1", "node-2", 30*time.Second)
	// Two steps: first one record injected and one still failing, then
	// both. Inject must wait for the second.
	var second atomic.Bool
	step1 := chaosMesh(t, c, obj, 50*time.Millisecond, always, func(o Chaos) {
		st := o.GetStatus()
		st.Experiment.DesiredPhase = v1alpha1.RunningPhase
		st.Experiment.Records = []*v1alpha1.Record{
			{Id: "blastradius-ambient/server-n1", SelectorKey: ".", Phase: v1alpha1.Injected, InjectedCount: 1,
				Events: []v1alpha1.RecordEvent{event(v1alpha1.Apply, v1alpha1.TypeSucceeded, stamp1, "")}},
			{Id: "blastradius-ambient/server-n2", SelectorKey: ".Target", Phase: v1alpha1.NotInjected,
				Events: []v1alpha1.RecordEvent{event(v1alpha1.Apply, v1alpha1.TypeFailed, stamp1, "ipset: busy")}},
		}
	})
	step2 := chaosMesh(t, c, obj, 0, func(o Chaos) bool { return len(o.GetStatus().Experiment.Records) == 2 }, func(o Chaos) {
		time.Sleep(100 * time.Millisecond)
		r := o.GetStatus().Experiment.Records[1]
		r.Phase = v1alpha1.Injected
		r.InjectedCount = 1
		r.Events = append(r.Events, event(v1alpha1.Apply, v1alpha1.TypeSucceeded, stamp2, ""))
		second.Store(true)
	})
	before := time.Now()
	at, err := k.Inject(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Load() {
		t.Error("Inject returned before every record was injected")
	}
	if !at.Equal(stamp1) {
		t.Errorf("inject time %s, want the earliest Apply record %s (Inject began at %s)", at, stamp1, before)
	}
	for _, ch := range []<-chan error{step1, step2} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if len(obj.GetStatus().Experiment.Records) != 2 {
		t.Errorf("obj should hold the status last read, has %d records", len(obj.GetStatus().Experiment.Records))
	}
	rec := FaultRecord(obj, at, time.Time{})
	if rec.Kind != "node-partition" || rec.Target != "node-1<->node-2" || !rec.Inject.Equal(stamp1) || rec.Recover != nil {
		t.Errorf("fault record %+v", rec)
	}
	if !strings.Contains(rec.Detail, "NetworkChaos partition") || !strings.Contains(rec.Detail, "direction both") || !strings.Contains(rec.Detail, "duration 30s") {
		t.Errorf("detail %q", rec.Detail)
	}
}

func TestInjectTimesOutWithoutChaosMesh(t *testing.T) {
	_, k := newFakeChaos(t)
	k.WithTimeout(300 * time.Millisecond)
	obj := NodeProxyCrash(testScope, "node-3")
	start := time.Now()
	_, err := k.Inject(context.Background(), obj)
	if err == nil {
		t.Fatal("Inject succeeded with no Chaos Mesh to inject")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("timed out after %s, want about 300ms", took)
	}
	msg := err.Error()
	for _, want := range []string{"PodChaos blastradius-ambient/" + obj.Name, "within 300ms", "is it installed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
}

func TestInjectTimeoutNamesChaosMeshFailure(t *testing.T) {
	c, k := newFakeChaos(t)
	k.WithTimeout(400 * time.Millisecond)
	obj := SidecarCrash(testScope, "server-n1")
	fail := chaosMesh(t, c, obj, 20*time.Millisecond, always, func(o Chaos) {
		st := o.GetStatus()
		st.Experiment.DesiredPhase = v1alpha1.RunningPhase
		st.Experiment.Records = []*v1alpha1.Record{{Id: "blastradius-ambient/server-n1/proxy", Phase: v1alpha1.NotInjected,
			Events: []v1alpha1.RecordEvent{event(v1alpha1.Apply, v1alpha1.TypeFailed, stamp1, "container proxy\nnot found")}}}
	})
	_, err := k.Inject(context.Background(), obj)
	if e := <-fail; e != nil {
		t.Fatal(e)
	}
	if err == nil || !strings.Contains(err.Error(), "last failure: Apply failed on blastradius-ambient/server-n1/proxy: container proxy not found") {
		t.Errorf("error %v should carry Chaos Mesh's failure", err)
	}
	if err != nil && strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans lines: %q", err)
	}
}

func TestInjectRefusesInvalidAndDuplicate(t *testing.T) {
	_, k := newFakeChaos(t)
	bad := NodePartition(testScope, "node-1", "", time.Second)
	if _, err := k.Inject(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Errorf("invalid object: %v", err)
	}
	var pods v1alpha1.NetworkChaosList
	if err := k.c.List(context.Background(), &pods); err != nil || len(pods.Items) != 0 {
		t.Errorf("an invalid object was created (%d, %v)", len(pods.Items), err)
	}
	existing := ControlPlaneCrash(testScope)
	_, k = newFakeChaos(t, existing.DeepCopy())
	if _, err := k.Inject(context.Background(), existing); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate: %v", err)
	}
}

func TestRecoverPausesAndTakesRecoverRecord(t *testing.T) {
	c, k := newFakeChaos(t)
	obj := PodFailure(testScope, "waypoint-outage", "waypoint-abc", time.Minute)
	inj := chaosMesh(t, c, obj, 20*time.Millisecond, always, func(o Chaos) {
		st := o.GetStatus()
		st.Experiment.DesiredPhase = v1alpha1.RunningPhase
		st.Experiment.Records = []*v1alpha1.Record{{Id: "blastradius-ambient/waypoint-abc", Phase: v1alpha1.Injected, InjectedCount: 1,
			Events: []v1alpha1.RecordEvent{event(v1alpha1.Apply, v1alpha1.TypeSucceeded, stamp1, "")}}}
	})
	at, err := k.Inject(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	if e := <-inj; e != nil {
		t.Fatal(e)
	}
	// Chaos Mesh recovers once it sees the pause annotation.
	rec := chaosMesh(t, c, obj, 50*time.Millisecond, func(o Chaos) bool { return o.GetAnnotations()[v1alpha1.PauseAnnotationKey] == "true" }, func(o Chaos) {
		st := o.GetStatus()
		st.Experiment.DesiredPhase = v1alpha1.StoppedPhase
		r := st.Experiment.Records[0]
		r.Phase = v1alpha1.NotInjected
		r.RecoveredCount = 1
		r.Events = append(r.Events, event(v1alpha1.Recover, v1alpha1.TypeSucceeded, stamp3, ""))
	})
	back, err := k.Recover(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	if e := <-rec; e != nil {
		t.Fatal(e)
	}
	if !back.Equal(stamp3) {
		t.Errorf("recover time %s, want the Recover record %s", back, stamp3)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), &v1alpha1.PodChaos{}); !apierrors.IsNotFound(err) {
		t.Errorf("object not removed after recovery: %v", err)
	}
	fr := FaultRecord(obj, at, back)
	if fr.Kind != "waypoint-outage" || fr.Target != "waypoint-abc" || fr.Recover == nil || !fr.Recover.Equal(stamp3) || !fr.Inject.Equal(stamp1) ||
		!strings.Contains(fr.Detail, "PodChaos pod-failure") || !strings.Contains(fr.Detail, "duration 1m0s") {
		t.Errorf("fault record %+v", fr)
	}
}

func TestAwaitRecoveryWaitsForChaosMeshsOwnRecovery(t *testing.T) {
	c, k := newFakeChaos(t)
	obj := NodePartition(testScope, "node-1", "node-2", 200*time.Millisecond)
	injected := func(o Chaos) {
		st := o.GetStatus()
		st.Experiment.DesiredPhase = v1alpha1.RunningPhase
		st.Experiment.Records = []*v1alpha1.Record{{Id: "a", Phase: v1alpha1.Injected, Events: []v1alpha1.RecordEvent{event(v1alpha1.Apply, v1alpha1.TypeSucceeded, stamp1, "")}}}
	}
	inj := chaosMesh(t, c, obj, 0, always, injected)
	if _, err := k.Inject(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	if e := <-inj; e != nil {
		t.Fatal(e)
	}
	// The duration runs out: Chaos Mesh stops it with no pause from us.
	var paused atomic.Bool
	rec := chaosMesh(t, c, obj, 200*time.Millisecond, always, func(o Chaos) {
		paused.Store(o.GetAnnotations()[v1alpha1.PauseAnnotationKey] != "")
		st := o.GetStatus()
		st.Experiment.DesiredPhase = v1alpha1.StoppedPhase
		st.Experiment.Records[0].Phase = v1alpha1.NotInjected
		st.Experiment.Records[0].Events = append(st.Experiment.Records[0].Events, event(v1alpha1.Recover, v1alpha1.TypeSucceeded, stamp4, ""))
	})
	back, err := k.AwaitRecovery(context.Background(), obj)
	if err != nil {
		t.Fatal(err)
	}
	if e := <-rec; e != nil {
		t.Fatal(e)
	}
	if !back.Equal(stamp4) || paused.Load() {
		t.Errorf("recover time %s (want %s), paused %v (want false)", back, stamp4, paused.Load())
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), &v1alpha1.NetworkChaos{}); !apierrors.IsNotFound(err) {
		t.Errorf("object not removed: %v", err)
	}
	// A kill has no duration for Chaos Mesh to run out.
	kill := ControlPlaneCrash(testScope)
	_, k2 := newFakeChaos(t, kill.DeepCopy())
	if _, err := k2.AwaitRecovery(context.Background(), kill); err == nil || !strings.Contains(err.Error(), "no duration") {
		t.Errorf("AwaitRecovery of a kill: %v", err)
	}
}

func TestRecoverTimesOutWhenNothingRecovers(t *testing.T) {
	obj := PodFailure(testScope, "", "p", time.Minute)
	obj.Status.Experiment.Records = []*v1alpha1.Record{{Id: "a", Phase: v1alpha1.Injected, Events: []v1alpha1.RecordEvent{event(v1alpha1.Apply, v1alpha1.TypeSucceeded, stamp1, "")}}}
	_, k := newFakeChaos(t, obj.DeepCopy())
	k.WithTimeout(200 * time.Millisecond)
	_, err := k.Recover(context.Background(), obj)
	if err == nil || !strings.Contains(err.Error(), "recover PodChaos blastradius-ambient/"+obj.Name+": no recovery recorded within 200ms") ||
		!strings.Contains(err.Error(), "1 applied, 0 recovered") {
		t.Errorf("error %v", err)
	}
}

func TestRecoverOneShotDeletes(t *testing.T) {
	obj := NodeProxyCrash(testScope, "node-3")
	c, k := newFakeChaos(t, obj.DeepCopy())
	back, err := k.Recover(context.Background(), obj)
	if err != nil || !back.IsZero() {
		t.Errorf("Recover of a kill = %s, %v; want zero time, nil", back, err)
	}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(obj), &v1alpha1.PodChaos{}); !apierrors.IsNotFound(err) {
		t.Errorf("kill not deleted: %v", err)
	}
	if fr := FaultRecord(obj, stamp1, back); fr.Recover != nil || fr.Kind != "node-proxy-crash" || fr.Target != "node-3" ||
		!strings.Contains(fr.Detail, "PodChaos pod-kill") || !strings.Contains(fr.Detail, "mode one") {
		t.Errorf("fault record %+v", fr)
	}
}

func TestCleanUpDeletesOnlyLabelled(t *testing.T) {
	other := testScope
	other.Namespace = "blastradius-sidecar"
	unlabelled := NodeProxyCrash(testScope, "node-9")
	unlabelled.Name = "someone-elses"
	unlabelled.Labels = map[string]string{"app": "theirs"}
	keep := []Chaos{unlabelled, ControlPlaneCrash(other)}
	gone := []Chaos{NodeProxyCrash(testScope, "node-1"), NodePartition(testScope, "node-1", "node-2", time.Second), PodFailure(testScope, "", "p", time.Second)}
	var objs []client.Object
	for _, o := range append(append([]Chaos{}, keep...), gone...) {
		objs = append(objs, o.DeepCopyObject().(client.Object))
	}
	c, k := newFakeChaos(t, objs...)
	if err := k.CleanUp(context.Background(), "blastradius-ambient"); err != nil {
		t.Fatal(err)
	}
	exists := func(o Chaos) bool {
		cur := reflect.New(reflect.TypeOf(o).Elem()).Interface().(client.Object)
		return c.Get(context.Background(), client.ObjectKeyFromObject(o), cur) == nil
	}
	for _, o := range gone {
		if exists(o) {
			t.Errorf("%s survived clean-up", ChaosRef(o))
		}
	}
	for _, o := range keep {
		if !exists(o) {
			t.Errorf("%s was deleted though it is not ours in that namespace", ChaosRef(o))
		}
	}
	// Every namespace: the other trial's object goes too, the unlabelled
	// one stays.
	if err := k.CleanUp(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if exists(keep[1]) || !exists(keep[0]) {
		t.Errorf("clean-up of every namespace: ours left %v, theirs left %v", exists(keep[1]), exists(keep[0]))
	}
}

func TestCleanUpTimesOutOnStuckFinalizer(t *testing.T) {
	stuck := NodePartition(testScope, "node-1", "node-2", time.Second)
	stuck.Finalizers = []string{"chaos-mesh/records"}
	_, k := newFakeChaos(t, stuck.DeepCopy())
	k.WithTimeout(200 * time.Millisecond)
	err := k.CleanUp(context.Background(), "blastradius-ambient")
	if err == nil || !strings.Contains(err.Error(), "still present after 200ms: NetworkChaos blastradius-ambient/"+stuck.Name) {
		t.Errorf("error %v", err)
	}
}

func TestStatusRecordReading(t *testing.T) {
	rec := func(evs ...v1alpha1.RecordEvent) *v1alpha1.Record { return &v1alpha1.Record{Events: evs} }
	ok := v1alpha1.TypeSucceeded
	st := &v1alpha1.ChaosStatus{Experiment: v1alpha1.ExperimentStatus{Records: []*v1alpha1.Record{
		rec(event(v1alpha1.Apply, v1alpha1.TypeFailed, stamp1, "x"), event(v1alpha1.Apply, ok, stamp2, "")),
		rec(event(v1alpha1.Apply, ok, stamp3, "")),
	}}}
	if at, done := injectedAt(st); !done || !at.Equal(stamp2) {
		t.Errorf("injectedAt = %s, %v; want %s (a failed attempt is not an injection)", at, done, stamp2)
	}
	if _, done := recoveredAt(st); done {
		t.Error("recovered with no Recover record")
	}
	st.Experiment.Records[0].Events = append(st.Experiment.Records[0].Events, event(v1alpha1.Recover, ok, stamp4, ""))
	if _, done := recoveredAt(st); done {
		t.Error("recovered while one record is still injected")
	}
	st.Experiment.Records[1].Events = append(st.Experiment.Records[1].Events, event(v1alpha1.Recover, ok, stamp3, ""))
	if at, done := recoveredAt(st); !done || !at.Equal(stamp4) {
		t.Errorf("recoveredAt = %s, %v; want the latest, %s", at, done, stamp4)
	}
	if _, done := injectedAt(&v1alpha1.ChaosStatus{}); done {
		t.Error("injected with no records")
	}
}
