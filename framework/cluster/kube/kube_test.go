package kube

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"blastradius.dev/blastradius/framework/cluster"
	"blastradius.dev/blastradius/manifests"
)

// testMapper knows the kinds the manifests use, as discovery would.
func testMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	for _, k := range []struct {
		gvk   schema.GroupVersionKind
		scope meta.RESTScope
	}{
		{schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Version: "v1", Kind: "Node"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Version: "v1", Kind: "Service"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Version: "v1", Kind: "ServiceAccount"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DaemonSet"}, meta.RESTScopeNamespace},
	} {
		m.Add(k.gvk, k.scope)
	}
	return m
}

// fakeClient is the dynamic fake with server-side apply as create-or-
// replace: the fake's own tracker applies only to existing objects.
func fakeApplyClient(objs ...runtime.Object) *dynfake.FakeDynamicClient {
	c := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		NodesGVR: "NodeList", DeploymentsGVR: "DeploymentList", DaemonSetsGVR: "DaemonSetList",
		{Version: "v1", Resource: "namespaces"}: "NamespaceList", {Version: "v1", Resource: "services"}: "ServiceList",
		{Version: "v1", Resource: "configmaps"}: "ConfigMapList",
	}, objs...)
	c.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchActionImpl)
		if pa.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		u := &unstructured.Unstructured{}
		if err := json.Unmarshal(pa.GetPatch(), &u.Object); err != nil {
			return true, nil, err
		}
		tr := c.Tracker()
		if _, err := tr.Get(pa.GetResource(), pa.GetNamespace(), pa.GetName()); err != nil {
			return true, u, tr.Create(pa.GetResource(), u, pa.GetNamespace())
		}
		return true, u, tr.Update(pa.GetResource(), u, pa.GetNamespace())
	})
	return c
}

func renderAmbient(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifests.Render(manifests.Params{
		Mode: "ambient", Image: "blastradius:test", Nodes: []string{"w1", "w2", "w3"},
		Pods: []manifests.Pod{{Name: "client-n1", Role: "client", Node: 1}, {Name: "server-n1", Role: "server", Node: 1},
			{Name: "server-n2", Role: "server", Node: 2}},
		Services: map[string][]string{"echo-n1": {"server-n1"}, "echo-n2": {"server-n2"}},
		Waypoint: &manifests.Waypoint{Service: "echo-n2", Replicas: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestApplyRecordsServerSideApplyPatches(t *testing.T) {
	objs := renderAmbient(t)
	c := fakeApplyClient()
	var events []ApplyEvent
	err := ApplyWith(context.Background(), c, testMapper(), objs, ApplyOptions{PerObject: time.Second, Progress: func(e ApplyEvent) { events = append(events, e) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != len(objs) || events[len(events)-1].Index != len(objs) || events[0].Total != len(objs) {
		t.Fatalf("progress: %d events for %d objects", len(events), len(objs))
	}
	var patches []k8stesting.PatchActionImpl
	for _, a := range c.Actions() {
		if pa, ok := a.(k8stesting.PatchActionImpl); ok {
			patches = append(patches, pa)
		}
	}
	if len(patches) != len(objs) {
		t.Fatalf("%d patches for %d objects", len(patches), len(objs))
	}
	for i, pa := range patches {
		o := objs[i]
		if pa.GetPatchType() != types.ApplyPatchType {
			t.Errorf("%s: patch type %s", Ref(o), pa.GetPatchType())
		}
		opt := pa.PatchOptions
		if opt.FieldManager != "blastradius" || opt.Force == nil || !*opt.Force || opt.FieldValidation != "Strict" {
			t.Errorf("%s: options %+v, want field manager blastradius, force, strict", Ref(o), opt)
		}
		if pa.GetName() != o.GetName() || pa.GetNamespace() != o.GetNamespace() {
			t.Errorf("patch %d went to %s/%s, want %s", i, pa.GetNamespace(), pa.GetName(), Ref(o))
		}
		var body map[string]any
		if err := json.Unmarshal(pa.GetPatch(), &body); err != nil || body["kind"] != o.GetKind() {
			t.Errorf("%s: patch body kind %v (%v)", Ref(o), body["kind"], err)
		}
	}
	// The namespace comes first: everything else lives in it.
	if patches[0].GetResource().Resource != "namespaces" || patches[0].GetNamespace() != "" {
		t.Errorf("first apply is %v, want the namespace", patches[0].GetResource())
	}
	// Applied objects are there afterwards.
	if _, err := c.Resource(DaemonSetsGVR).Namespace("blastradius-ambient").Get(context.Background(), "ztunnel", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestApplyErrorNamesTheObject(t *testing.T) {
	c := fakeApplyClient()
	c.PrependReactor("patch", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, &apiError{"Service \"echo-n1\" is invalid:\nspec.ports: Required value"}
	})
	err := Apply(context.Background(), c, testMapper(), renderAmbient(t))
	if err == nil || !strings.Contains(err.Error(), "apply Service/blastradius-ambient/controlplane") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v, want one line naming the service", err)
	}
	// Unknown kinds fail at the mapper, before any request.
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": map[string]any{"name": "w"}}}
	if err := Apply(context.Background(), fakeApplyClient(), testMapper(), []*unstructured.Unstructured{u}); err == nil || !strings.Contains(err.Error(), "Widget/w") {
		t.Fatalf("unknown kind: %v", err)
	}
}

type apiError struct{ s string }

func (e *apiError) Error() string { return e.s }

func TestApplyPerObjectDeadline(t *testing.T) {
	c := fakeApplyClient()
	c.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		time.Sleep(300 * time.Millisecond)
		return true, nil, context.DeadlineExceeded
	})
	t0 := time.Now()
	err := ApplyWith(context.Background(), c, testMapper(), renderAmbient(t)[:2], ApplyOptions{PerObject: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "Namespace/blastradius-ambient") {
		t.Fatalf("got %v", err)
	}
	if time.Since(t0) > 2*time.Second {
		t.Fatalf("took %s", time.Since(t0))
	}
}

func testNode(name string, ready bool) *unstructured.Unstructured {
	st := "False"
	if ready {
		st = "True"
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": name},
		"status": map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": st, "reason": "KubeletNotReady"}}},
	}}
}

func TestWaitNodesReady(t *testing.T) {
	ctx := context.Background()
	c := fakeApplyClient(testNode("w1", true), testNode("w2", true))
	if err := WaitNodesReady(ctx, c, 2, nil, WaitOptions{Timeout: time.Second, Interval: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	c = fakeApplyClient(testNode("w1", true), testNode("w2", false))
	err := WaitNodesReady(ctx, c, 3, nil, WaitOptions{Timeout: 100 * time.Millisecond, Interval: 10 * time.Millisecond})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "node w2 (Ready=False: KubeletNotReady)") ||
		!strings.Contains(err.Error(), "2 of 3 nodes registered") || !strings.Contains(err.Error(), "not ready after 100ms") {
		t.Fatalf("got %v", err)
	}
	// A node that turns Ready while we wait.
	c = fakeApplyClient(testNode("w1", false))
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = c.Tracker().Update(NodesGVR, testNode("w1", true), "")
	}()
	if err := WaitNodesReady(ctx, c, 1, []string{"w1"}, WaitOptions{Timeout: 2 * time.Second, Interval: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := WaitNodesReady(ctx, c, 1, nil, WaitOptions{}); err == nil || !strings.Contains(err.Error(), "no deadline") {
		t.Fatalf("no deadline: %v", err)
	}
}

func TestWaitWorkloadsReady(t *testing.T) {
	ctx := context.Background()
	objs := renderAmbient(t)
	c := fakeApplyClient()
	if err := Apply(ctx, c, testMapper(), objs); err != nil {
		t.Fatal(err)
	}
	// Nothing has a status: nothing is ready, and the error lists them.
	err := WaitWorkloadsReady(ctx, c, objs, WaitOptions{Timeout: 50 * time.Millisecond, Interval: 10 * time.Millisecond})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "DaemonSet/blastradius-ambient/ztunnel (no pod scheduled)") ||
		!strings.Contains(err.Error(), "Deployment/blastradius-ambient/server-n1 (0/1 updated)") {
		t.Fatalf("got %v", err)
	}
	// Give every workload a ready status.
	for _, o := range objs {
		gvr := DeploymentsGVR
		var st map[string]any
		switch o.GetKind() {
		case "Deployment":
			n, _, _ := unstructured.NestedInt64(o.Object, "spec", "replicas")
			st = map[string]any{"updatedReplicas": n, "availableReplicas": n, "readyReplicas": n}
		case "DaemonSet":
			gvr = DaemonSetsGVR
			st = map[string]any{"desiredNumberScheduled": int64(3), "updatedNumberScheduled": int64(3), "numberAvailable": int64(3)}
		default:
			continue
		}
		u := o.DeepCopy()
		u.Object["status"] = st
		if err := c.Tracker().Update(gvr, u, u.GetNamespace()); err != nil {
			t.Fatal(err)
		}
	}
	if err := WaitWorkloadsReady(ctx, c, objs, WaitOptions{Timeout: time.Second, Interval: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
}

func TestLoadKubeconfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config")
	kc := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ctx
`
	if err := os.WriteFile(p, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadKubeconfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if k.Context != "ctx" || k.Server != "https://127.0.0.1:6443" || k.Source != p {
		t.Fatalf("%+v", k)
	}
	t.Setenv("KUBECONFIG", p)
	if k, err := LoadKubeconfig(""); err != nil || k.Source != "$KUBECONFIG="+p {
		t.Fatalf("$KUBECONFIG: %+v %v", k, err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), writeTestFile(t, dir, "garbage", "\t: [")} {
		if _, err := LoadKubeconfig(bad); err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", dir)
	if _, err := LoadKubeconfig(""); err == nil || !strings.Contains(err.Error(), "no kubeconfig") {
		t.Errorf("nothing: %v", err)
	}
}

func writeTestFile(t *testing.T, dir, name, body string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKindNodeNames(t *testing.T) {
	cfg, err := cluster.LoadKindConfig("../../../kind-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cps, workers := KindNodeNames(cfg)
	if strings.Join(cps, ",") != "blastradius-control-plane" || strings.Join(workers, ",") != "blastradius-worker,blastradius-worker2,blastradius-worker3" {
		t.Fatalf("%v %v", cps, workers)
	}
}

// Without docker, podman or nerdctl on PATH (this machine, and any CI
// without a container runtime) creating a kind cluster is one clear line,
// before anything is attempted.
func TestKindWithoutContainerRuntime(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "")
	cfg, err := cluster.LoadKindConfig("../../../kind-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	_, err = CreateKind(context.Background(), KindOptions{Config: cfg, Kubeconfig: kubeconfig})
	if err == nil {
		t.Fatal("created a kind cluster without a container runtime")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "kind needs docker, podman or nerdctl: ") || strings.Contains(msg, "\n") {
		t.Fatalf("got %q", msg)
	}
	if _, err := os.Stat(kubeconfig); !os.IsNotExist(err) {
		t.Fatalf("kubeconfig written: %v", err)
	}
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "podman")
	if _, _, err := KindProvider(nil); err == nil || !strings.Contains(err.Error(), "podman is not on PATH") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("podman: %v", err)
	}
}

// A check that the deadline cuts short knows only "context deadline
// exceeded"; the error must carry the last finished check's reasons.
func TestPollReportsTheLastFinishedCheck(t *testing.T) {
	calls := 0
	err := poll(context.Background(), WaitOptions{Timeout: time.Second, Interval: 10 * time.Millisecond}, "workloads",
		func(ctx context.Context) ([]string, error) {
			calls++
			if calls == 1 {
				return []string{"Deployment/ns/a (generation not observed yet)"}, nil
			}
			<-ctx.Done()
			return []string{"Deployment/ns/a (" + ctx.Err().Error() + ")"}, nil
		})
	if err == nil {
		t.Fatal("poll succeeded with a check that never passes")
	}
	if want := "workloads not ready after 1s: Deployment/ns/a (generation not observed yet)"; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

// client-go's rate limiter refuses a request before the deadline when its
// wait would cross it; that refusal is the wait's own deadline, not why
// things were pending, and a real error after the last finished check is
// named after its reasons.
func TestPollIgnoresTheRateLimitersEarlyRefusal(t *testing.T) {
	calls := 0
	err := poll(context.Background(), WaitOptions{Timeout: 300 * time.Millisecond, Interval: 10 * time.Millisecond}, "nodes",
		func(ctx context.Context) ([]string, error) {
			calls++
			if calls == 1 {
				return []string{"node a (no Ready condition yet)"}, nil
			}
			return nil, errors.New("client rate limiter Wait returned an error: rate: Wait(n=1) would exceed context deadline")
		})
	if want := "nodes not ready after 300ms: node a (no Ready condition yet)"; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
	calls = 0
	err = poll(context.Background(), WaitOptions{Timeout: 300 * time.Millisecond, Interval: 10 * time.Millisecond}, "nodes",
		func(ctx context.Context) ([]string, error) {
			calls++
			if calls == 1 {
				return []string{"node a (no Ready condition yet)"}, nil
			}
			return nil, errors.New("connection refused")
		})
	if want := "nodes not ready after 300ms: node a (no Ready condition yet) (then: connection refused)"; err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}
