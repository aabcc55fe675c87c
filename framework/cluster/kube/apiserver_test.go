package kube_test

// Tests against a real etcd and kube-apiserver (kubetest): what the fakes in
// kube_test.go and chaos_test.go cannot say is whether the API server
// accepts what this package sends. Server-side apply with strict field
// validation of every object a run would apply, the Chaos Mesh CRDs as
// generated from the api types in go.mod accepting every fault object, and
// the waits' time-outs against objects no controller ever makes ready. An
// external test package so it may import the scenario catalogue, which the
// kube package itself must not.

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chaos-mesh/chaos-mesh/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/cluster/kube/kubetest"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/manifests"
)

// One API server for the package's tests: its start-up is seconds, each
// test's work milliseconds. Tests keep to their own namespaces and nodes.
var apiServer kubetest.Shared

func TestMain(m *testing.M) { os.Exit(apiServer.Run(m)) }

type apiClients struct {
	srv    *kubetest.Server
	dyn    dynamic.Interface
	mapper meta.RESTMapper
	cs     kubernetes.Interface
}

func realAPI(t *testing.T) apiClients {
	t.Helper()
	srv := apiServer.Get(t)
	// The package's own client set-up, as a run against a cluster uses it.
	// No client-side rate limit: a wait's polls must not be throttled into
	// its own deadline (client-go's default is 5 requests/s).
	srv.Config.QPS, srv.Config.Burst = 1000, 1000
	dyn, mapper, err := kube.Clients(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	return apiClients{srv: srv, dyn: dyn, mapper: mapper, cs: cs}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// workers stand in for n worker nodes, named as kind names them.
func workers(n int) []string {
	out := []string{"blastradius-worker"}
	for i := 2; i <= n; i++ {
		out = append(out, fmt.Sprintf("blastradius-worker%d", i))
	}
	return out
}

// plans renders every distinct object set a run would apply: every built-in
// scenario in every mode, as the CLI's renderPlan does, plus one hand-made
// trial per mode with every role and a waypoint, so each template is covered
// even if the catalogue stops using it.
func plans(t *testing.T) map[string][]*unstructured.Unstructured {
	t.Helper()
	out := map[string][]*unstructured.Unstructured{}
	seen := map[string]bool{}
	add := func(name string, objs []*unstructured.Unstructured) {
		var b strings.Builder
		for _, o := range objs {
			y, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(y)
		}
		if !seen[b.String()] {
			seen[b.String()] = true
			out[name] = objs
		}
	}
	for _, mode := range []string{"none", "sidecar", "ambient"} {
		p := manifests.Params{
			Mode: mode, Image: "blastradius:test", Nodes: workers(3),
			Pods: []manifests.Pod{{Name: "client-n1", Role: "client", Node: 1}, {Name: "server-n1", Role: "server", Node: 1},
				{Name: "server-n2", Role: "server", Node: 2}, {Name: "spare-n3", Role: "spare", Node: 3},
				{Name: "control-server", Role: "control-server", Node: 2}, {Name: "control-client", Role: "control-client", Node: 3}},
			Services: map[string][]string{"echo-n1": {"server-n1"}, "echo-n2": {"server-n2", "spare-n3"}, "control": {"control-server"}},
			CertTTL:  time.Minute, Drain: 2 * time.Second,
		}
		if mode == "ambient" {
			p.Waypoint = &manifests.Waypoint{Service: "echo-n2", Replicas: 2}
		}
		objs, err := manifests.Render(p)
		if err != nil {
			t.Fatalf("render %s: %v", mode, err)
		}
		add("every role in "+mode, objs)
	}
	for _, name := range scenario.Names() {
		sc, err := scenario.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, mode := range []string{"none", "sidecar", "ambient"} {
			pl, err := scenario.PlanFor(sc, mode, 600)
			if err != nil {
				t.Fatalf("plan %s in %s: %v", name, mode, err)
			}
			if pl.Skip != "" {
				continue
			}
			// As cmd/blastradius renderPlan does.
			params := manifests.Params{Mode: pl.Mode, Image: "blastradius:test", Nodes: workers(pl.Nodes), Services: pl.Services,
				CertTTL: pl.Mesh.CertTTL, Drain: pl.Mesh.Drain}
			for _, pp := range pl.Pods {
				params.Pods = append(params.Pods, manifests.Pod{Name: pp.Name, Role: pp.Role, Node: pp.Node})
			}
			if w := pl.Mesh.Waypoint; w != nil && pl.Mode == "ambient" {
				params.Waypoint = &manifests.Waypoint{Service: w.Service, Replicas: w.Replicas}
			}
			objs, err := manifests.Render(params)
			if err != nil {
				t.Fatalf("render %s in %s: %v", name, mode, err)
			}
			add(name+" in "+mode, objs)
		}
	}
	return out
}

func TestRealAPIServerAppliesEveryManifest(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	all := plans(t)
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	modes := map[string]bool{}
	objects := 0
	for _, name := range names {
		objs := all[name]
		modes[objs[0].GetLabels()[manifests.LabelMode]] = true
		if err := kube.ApplyWith(ctx, api.dyn, api.mapper, objs, kube.ApplyOptions{PerObject: 20 * time.Second}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		objects += len(objs)
		if !strings.HasPrefix(name, "every role") {
			continue
		}
		// A second apply of the same objects changes nothing: the rendered
		// objects carry no field the server rewrites, so a run re-applying
		// its trial does not restart pods. Checked on the sets with every
		// template; the scenarios' sets are the same templates again.
		before := resourceVersions(t, ctx, api, objs)
		if err := kube.Apply(ctx, api.dyn, api.mapper, objs); err != nil {
			t.Fatalf("%s, applied again: %v", name, err)
		}
		if after := resourceVersions(t, ctx, api, objs); !reflect.DeepEqual(before, after) {
			for k, v := range before {
				if after[k] != v {
					t.Errorf("%s: applying again changed %s (resourceVersion %s -> %s)", name, k, v, after[k])
				}
			}
		}
	}
	if len(modes) != 3 {
		t.Errorf("applied modes %v, want none, sidecar and ambient", modes)
	}
	t.Logf("%d distinct object sets, %d objects applied", len(all), objects)

	// What the server holds is owned by blastradius's field manager.
	u, err := api.dyn.Resource(kube.DaemonSetsGVR).Namespace("blastradius-ambient").Get(ctx, "ztunnel", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owned := false
	for _, mf := range u.GetManagedFields() {
		if mf.Manager == kube.FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply {
			owned = true
		}
	}
	if !owned {
		t.Errorf("ztunnel's managed fields %v have no apply by %q", u.GetManagedFields(), kube.FieldManager)
	}
}

func resourceVersions(t *testing.T, ctx context.Context, api apiClients, objs []*unstructured.Unstructured) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := api.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatal(err)
		}
		var ri dynamic.ResourceInterface = api.dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			ri = api.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		cur, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: %v", kube.Ref(o), err)
		}
		out[kube.Ref(o)] = cur.GetResourceVersion()
	}
	return out
}

// A field the server does not know fails the apply, with the object and the
// field named, and nothing is created: a typo in a manifest is never dropped
// in silence. For server-side apply the server refuses unknown fields at any
// field validation level (Ignore and Warn too: the patch cannot be typed
// against the schema). What Strict adds, refusing a field given twice,
// cannot arise from ApplyWith, which marshals a map; the last check shows
// this server enforces it with the options ApplyWith sends.
func TestRealAPIServerRejectsUnknownField(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	objs, err := manifests.Render(manifests.Params{Mode: "none", Image: "blastradius:test", Nodes: workers(1),
		Pods: []manifests.Pod{{Name: "server-n1", Role: "server", Node: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := kube.Apply(ctx, api.dyn, api.mapper, objs[:1]); err != nil { // the namespace
		t.Fatal(err)
	}
	var dep *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			dep = o.DeepCopy()
		}
	}
	if dep == nil {
		t.Fatal("no Deployment rendered")
	}
	for _, c := range []struct {
		name  string
		path  []string
		field string
	}{
		{"strict-spec", []string{"spec"}, "replicaz"},
		{"strict-pod", []string{"spec", "template", "spec"}, "hostNetwrok"},
	} {
		bad := dep.DeepCopy()
		bad.SetName(c.name)
		m, _, _ := unstructured.NestedMap(bad.Object, c.path...)
		m[c.field] = true
		if err := unstructured.SetNestedMap(bad.Object, m, c.path...); err != nil {
			t.Fatal(err)
		}
		err := kube.Apply(ctx, api.dyn, api.mapper, []*unstructured.Unstructured{bad})
		want := fmt.Sprintf(`.%s.%s: field not declared in schema`, strings.Join(c.path, "."), c.field)
		if err == nil || !strings.Contains(err.Error(), "apply Deployment/blastradius-none/"+c.name) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("unknown field %s: got %v, want one line naming the object and %s", c.field, err, want)
		}
		if _, err := api.dyn.Resource(kube.DeploymentsGVR).Namespace("blastradius-none").Get(ctx, c.name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the rejected Deployment %s exists (%v)", c.name, err)
		}
	}

	dup := []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup","namespace":"blastradius-none"},"data":{"a":"1","a":"2"}}`)
	force := true
	opts := metav1.PatchOptions{FieldManager: kube.FieldManager, Force: &force, FieldValidation: "Strict"}
	cms := api.cs.CoreV1().ConfigMaps("blastradius-none")
	if _, err := cms.Patch(ctx, "dup", types.ApplyPatchType, dup, opts); err == nil || !strings.Contains(err.Error(), `key "a" already set in map`) {
		t.Errorf("a duplicate field under strict validation: %v", err)
	}
	opts.FieldValidation = "Ignore"
	if _, err := cms.Patch(ctx, "dup", types.ApplyPatchType, dup, opts); err != nil {
		t.Errorf("a duplicate field with validation off should pass (the check above is strict validation's doing): %v", err)
	}
}

// Chaos Mesh's timestamps, far from now so they cannot pass for ours.
var (
	chaosApplied   = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	chaosRecovered = chaosApplied.Add(9 * time.Second)
)

// playChaosMesh stands in for Chaos Mesh's controller, which the test API
// server does not run: every chaos object in ns without records gets one
// injected record, and every paused one a Recover event, written with a plain
// update as Chaos Mesh does (its CRDs have no status subresource). It stops
// when the test ends.
func playChaosMesh(t *testing.T, c client.Client, ns string) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	step := func(obj kube.Chaos) {
		st := obj.GetStatus()
		recs := st.Experiment.Records
		switch {
		case len(recs) == 0:
			st.Experiment.DesiredPhase = v1alpha1.RunningPhase
			st.Experiment.Records = []*v1alpha1.Record{{Id: ns + "/target", SelectorKey: ".", Phase: v1alpha1.Injected, InjectedCount: 1,
				Events: []v1alpha1.RecordEvent{*v1alpha1.NewRecordEvent(v1alpha1.TypeSucceeded, v1alpha1.Apply, "", metav1.NewTime(chaosApplied))}}}
		case obj.GetAnnotations()[v1alpha1.PauseAnnotationKey] == "true" && recs[0].Phase == v1alpha1.Injected:
			st.Experiment.DesiredPhase = v1alpha1.StoppedPhase
			recs[0].Phase = v1alpha1.NotInjected
			recs[0].RecoveredCount = 1
			recs[0].Events = append(recs[0].Events, *v1alpha1.NewRecordEvent(v1alpha1.TypeSucceeded, v1alpha1.Recover, "", metav1.NewTime(chaosRecovered)))
		default:
			return
		}
		if err := c.Update(ctx, obj); err != nil && ctx.Err() == nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			t.Errorf("fake Chaos Mesh: update %s: %v", kube.ChaosRef(obj), err)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			var pods v1alpha1.PodChaosList
			var nets v1alpha1.NetworkChaosList
			if c.List(ctx, &pods, client.InNamespace(ns)) == nil && c.List(ctx, &nets, client.InNamespace(ns)) == nil {
				for i := range pods.Items {
					step(&pods.Items[i])
				}
				for i := range nets.Items {
					step(&nets.Items[i])
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
}

// The CRDs generated from the chaos-mesh api types accept every object the
// fault constructors build, with the server's schema validation; Inject and
// Recover read the status the (played) controller writes; CleanUp deletes
// what is left.
func TestRealAPIServerChaosObjects(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	scope := kube.ChaosScope{Trial: "07-chaos-crds-ambient", Namespace: "blastradius-chaos"}
	if _, err := api.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: scope.Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, crd := range []string{"podchaos.chaos-mesh.org", "networkchaos.chaos-mesh.org"} {
		if _, err := api.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).
			Get(ctx, crd, metav1.GetOptions{}); err != nil {
			t.Fatalf("CRD %s: %v", crd, err)
		}
	}
	k, err := kube.NewChaosClient(api.srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	k.WithTimeout(10 * time.Second)
	sch, err := kube.ChaosScheme()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := client.New(api.srv.Config, client.Options{Scheme: sch})
	if err != nil {
		t.Fatal(err)
	}
	playChaosMesh(t, raw, scope.Namespace)

	objs := []kube.Chaos{
		kube.NodeProxyCrash(scope, "blastradius-worker3"),
		kube.NodeAgentCrash(scope, "blastradius-worker2"),
		kube.ControlPlaneCrash(scope),
		kube.WaypointReplicaKill(scope, "waypoint-7d9f-abcde"),
		kube.WaypointReplicaKill(scope, ""),
		kube.SidecarCrash(scope, "server-n1-5c6d-xyz"),
		kube.PodFailure(scope, "waypoint-outage", "waypoint-7d9f-abcde", 8*time.Second),
		kube.ControlPlaneDown(scope, 1500*time.Millisecond),
		kube.NodePartition(scope, "blastradius-worker", "blastradius-worker2", 0),
	}
	for _, o := range objs {
		built := o.DeepCopyObject().(kube.Chaos) // Inject leaves o holding what it last read
		at, err := k.Inject(ctx, o)
		if err != nil {
			t.Fatalf("%s: %v", kube.ChaosRef(o), err)
		}
		if !at.Equal(chaosApplied) {
			t.Errorf("%s: injected at %s, want the record's %s", kube.ChaosRef(o), at, chaosApplied)
		}
		// What the server stored is what was built: no field was pruned
		// for want of a place in the CRD's schema. The one difference is
		// the CRD's default partition behaviour, drop, which chaos.go
		// relies on by leaving the field unset.
		if nc, ok := built.(*v1alpha1.NetworkChaos); ok && nc.Spec.PartitionBehavior == "" {
			nc.Spec.PartitionBehavior = v1alpha1.DropPartitionBehavior
		}
		cur := o.DeepCopyObject().(kube.Chaos)
		if err := raw.Get(ctx, client.ObjectKeyFromObject(o), cur); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(specOf(cur), specOf(built)) {
			t.Errorf("%s: the server holds spec %+v, built %+v", kube.ChaosRef(o), specOf(cur), specOf(built))
		}
	}
	// A partition held until Recover: pause, the recovery record, removal.
	part := objs[len(objs)-1]
	back, err := k.Recover(ctx, part)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(chaosRecovered) {
		t.Errorf("recovered at %s, want the record's %s", back, chaosRecovered)
	}
	if err := raw.Get(ctx, client.ObjectKeyFromObject(part), &v1alpha1.NetworkChaos{}); !apierrors.IsNotFound(err) {
		t.Errorf("%s not removed by Recover: %v", kube.ChaosRef(part), err)
	}

	// Someone else's object in the namespace survives the clean-up.
	theirs := kube.ControlPlaneCrash(scope)
	theirs.Name, theirs.Labels = "someone-elses", map[string]string{"app": "theirs"}
	if err := raw.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	if err := k.CleanUp(ctx, scope.Namespace); err != nil {
		t.Fatal(err)
	}
	var pods v1alpha1.PodChaosList
	var nets v1alpha1.NetworkChaosList
	if err := raw.List(ctx, &pods, client.InNamespace(scope.Namespace)); err != nil {
		t.Fatal(err)
	}
	if err := raw.List(ctx, &nets, client.InNamespace(scope.Namespace)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Name != "someone-elses" || len(nets.Items) != 0 {
		var left []string
		for _, p := range pods.Items {
			left = append(left, "PodChaos "+p.Name)
		}
		for _, n := range nets.Items {
			left = append(left, "NetworkChaos "+n.Name)
		}
		t.Errorf("after clean-up: %v, want only PodChaos someone-elses", left)
	}

	// The schema is enforced, not just stored: an action the CRD's enum
	// lacks is refused by the server itself (Inject's own validation is
	// bypassed here).
	bad := kube.ControlPlaneCrash(scope)
	bad.Name = "bad-action"
	bad.Spec.Action = "explode"
	if err := raw.Create(ctx, bad); err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "explode") {
		t.Errorf("PodChaos with action explode: %v, want the server's schema to refuse it", err)
	}
}

func specOf(o kube.Chaos) any {
	switch v := o.(type) {
	case *v1alpha1.PodChaos:
		return v.Spec
	case *v1alpha1.NetworkChaos:
		return v.Spec
	}
	return nil
}

// No controllers run: a Deployment's generation is never observed and a
// DaemonSet never scheduled, so the wait must time out and name each.
func TestRealAPIServerWaitWorkloadsReadyTimesOut(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	objs, err := manifests.Render(manifests.Params{Mode: "ambient", Image: "blastradius:test", Nodes: workers(2),
		Pods:     []manifests.Pod{{Name: "client-n1", Role: "client", Node: 1}, {Name: "server-n2", Role: "server", Node: 2}},
		Services: map[string][]string{"echo-n2": {"server-n2"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		o.SetNamespace(strings.Replace(o.GetNamespace(), "blastradius-ambient", "waits-ambient", 1))
		if o.GetKind() == "Namespace" {
			o.SetName("waits-ambient")
		}
	}
	if err := kube.Apply(ctx, api.dyn, api.mapper, objs); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	err = kube.WaitWorkloadsReady(ctx, api.dyn, objs, kube.WaitOptions{Timeout: 3 * time.Second, Interval: 100 * time.Millisecond})
	if took := time.Since(t0); took > 10*time.Second {
		t.Errorf("the 3s wait took %s", took)
	}
	if err == nil {
		t.Fatal("workloads ready with no controller running")
	}
	msg := err.Error()
	want := []string{"workloads not ready after 3s: "}
	for _, o := range objs {
		if o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" {
			want = append(want, kube.Ref(o)+" (generation not observed yet)")
		}
	}
	if len(want) != 5 { // controlplane, ztunnel, client, server-n2
		t.Fatalf("expected 4 workloads, rendered %d", len(want)-1)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q lacks %q", msg, w)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
}

// A node object with no Ready condition (no kubelet ever reported) keeps
// the wait pending until its deadline, with the node named; once its
// status says Ready, the wait passes.
func TestRealAPIServerWaitNodesReady(t *testing.T) {
	api := realAPI(t)
	ctx := testCtx(t)
	if _, err := api.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "waits-node"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	o := kube.WaitOptions{Timeout: 3 * time.Second, Interval: 50 * time.Millisecond}
	err := kube.WaitNodesReady(ctx, api.dyn, 1, []string{"waits-node", "waits-missing"}, o)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "nodes not ready after 3s: ") ||
		!strings.Contains(err.Error(), "node waits-node (no Ready condition yet)") || !strings.Contains(err.Error(), "node waits-missing (missing)") {
		t.Fatalf("got %v", err)
	}
	setReady(t, ctx, api.cs, "waits-node", corev1.ConditionTrue, "KubeletReady")
	if err := kube.WaitNodesReady(ctx, api.dyn, 1, []string{"waits-node"}, o); err != nil {
		t.Fatal(err)
	}
}

// setReady writes node's Ready condition as the kubelet or the node
// lifecycle controller would: through the status subresource.
func setReady(t *testing.T, ctx context.Context, cs kubernetes.Interface, node string, st corev1.ConditionStatus, reason string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		cond := corev1.NodeCondition{Type: corev1.NodeReady, Status: st, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
		found := false
		for i := range n.Status.Conditions {
			if n.Status.Conditions[i].Type == corev1.NodeReady {
				n.Status.Conditions[i], found = cond, true
			}
		}
		if !found {
			n.Status.Conditions = append(n.Status.Conditions, cond)
		}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("set node %s Ready=%s: %v", node, st, err)
	}
}
