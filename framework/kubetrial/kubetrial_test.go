package kubetrial

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/load"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/manifests"
	"blastradius.dev/blastradius/proxy/xds"
)

func testMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	for _, k := range []struct {
		gvk   schema.GroupVersionKind
		scope meta.RESTScope
	}{
		{schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, meta.RESTScopeRoot},
		{schema.GroupVersionKind{Version: "v1", Kind: "Service"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace},
		{schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, meta.RESTScopeNamespace},
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

// readyDynamic is a dynamic fake where server-side apply creates or
// replaces, and every applied workload reports itself rolled out, as the
// controllers would once the pods below run.
func readyDynamic() *dynfake.FakeDynamicClient {
	c := dynfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		{Group: "apps", Version: "v1", Resource: "deployments"}: "DeploymentList",
		{Group: "apps", Version: "v1", Resource: "daemonsets"}:  "DaemonSetList",
		{Version: "v1", Resource: "namespaces"}:                 "NamespaceList",
		{Version: "v1", Resource: "services"}:                   "ServiceList",
		{Version: "v1", Resource: "configmaps"}:                 "ConfigMapList",
		{Version: "v1", Resource: "secrets"}:                    "SecretList",
	})
	c.PrependReactor("patch", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pa := a.(k8stesting.PatchActionImpl)
		if pa.GetPatchType() != types.ApplyPatchType {
			return false, nil, nil
		}
		u := &unstructured.Unstructured{}
		if err := json.Unmarshal(pa.GetPatch(), &u.Object); err != nil {
			return true, nil, err
		}
		switch u.GetKind() {
		case "Deployment":
			n, ok, _ := unstructured.NestedInt64(u.Object, "spec", "replicas")
			if !ok {
				n = 1
			}
			unstructured.SetNestedField(u.Object, map[string]any{"updatedReplicas": n, "availableReplicas": n}, "status")
		case "DaemonSet":
			unstructured.SetNestedField(u.Object, map[string]any{"desiredNumberScheduled": int64(3),
				"updatedNumberScheduled": int64(3), "numberAvailable": int64(3)}, "status")
		}
		tr := c.Tracker()
		if _, err := tr.Get(pa.GetResource(), pa.GetNamespace(), pa.GetName()); err != nil {
			return true, u, tr.Create(pa.GetResource(), u, pa.GetNamespace())
		}
		return true, u, tr.Update(pa.GetResource(), u, pa.GetNamespace())
	})
	return c
}

// server is a planned server pod: a real HTTP listener on a loopback
// address, which a "node proxy crash" takes away for a while.
type server struct {
	addr string
	mu   sync.Mutex
	ln   net.Listener
	srv  *http.Server
}

func (s *server) start(t *testing.T) {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		t.Fatalf("listen %s: %v", s.addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })}
	go srv.Serve(ln)
	s.mu.Lock()
	s.ln, s.srv = ln, srv
	s.mu.Unlock()
}

func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

// fakeExec plays pods/exec: `agent` runs the real load agent in-process
// with its event files in a folder per pod, `events` streams that folder
// back, as the image's binary does.
type fakeExec struct {
	root string
	mu   sync.Mutex
	cmds []string
}

func (f *fakeExec) podDir(pod string) string { return filepath.Join(f.root, pod) }

func (f *fakeExec) Exec(ctx context.Context, ns, pod, container string, cmd []string, stdout, stderr io.Writer) error {
	f.mu.Lock()
	f.cmds = append(f.cmds, pod+"/"+container+": "+strings.Join(cmd, " "))
	f.mu.Unlock()
	if len(cmd) < 2 || cmd[0] != manifests.Binary {
		return fmt.Errorf("command %v is not the image's binary", cmd)
	}
	dir := f.podDir(pod)
	os.MkdirAll(dir, 0o755)
	switch cmd[1] {
	case "agent":
		args := make([]string, len(cmd)-2)
		for i, a := range cmd[2:] {
			args[i] = strings.ReplaceAll(a, "events="+EventsDir+"/", "events="+dir+"/")
		}
		if code := load.AgentMain(args, stdout, stderr); code != 0 {
			return fmt.Errorf("agent exit %d", code)
		}
		return nil
	case "events":
		if len(cmd) != 3 || cmd[2] != EventsDir {
			return fmt.Errorf("events of %v", cmd)
		}
		return events.WriteArchive(dir, stdout)
	}
	return fmt.Errorf("unknown subcommand %q", cmd[1])
}

func pod(name, node, ip string, labels map[string]string) *corev1.Pod {
	labels[manifests.LabelPartOf] = "blastradius"
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: manifests.Namespace("ambient"), Labels: labels,
			CreationTimestamp: metav1.Now()},
		Spec:   corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "agent"}, {Name: "proxy"}}},
		Status: corev1.PodStatus{PodIP: ip, Phase: corev1.PodRunning},
	}
}

// A whole ambient trial on a fake cluster: objects applied, pods placed by
// plan name, the registry published, agents started through exec, the
// node proxy of node-3 "crashed" through the API (its servers stop
// answering for 1.5 s, as if their node proxy were gone), events pulled
// back and measured. The verdict and outage come from the pulled events.
func TestTrialOnFakeCluster(t *testing.T) {
	sc := scenario.Scenario{Name: "fake-npc", Nodes: 3, Duration: 5 * time.Second,
		Custom: []scenario.CustomFlow{
			{ClientNode: 1, ServerNode: 3, Kind: scenario.FlowKind{Via: "pod", Profile: scenario.ProfileNewConn}, QPS: 40},
			{ClientNode: 2, ServerNode: 3, Kind: scenario.FlowKind{Via: "pod", Profile: scenario.ProfileNewConn}, QPS: 40},
			{ClientNode: 2, ServerNode: 1, Kind: scenario.FlowKind{Via: "pod", Profile: scenario.ProfileNewConn}, QPS: 40},
		},
		Fault: scenario.Fault{Kind: scenario.FaultNodeProxyCrash, At: 1500 * time.Millisecond}}
	pl, err := scenario.PlanFor(sc, "ambient", 500)
	if err != nil {
		t.Fatal(err)
	}
	ns := manifests.Namespace("ambient")
	nodes := []string{"kw-a", "kw-b", "kw-c"}
	var objs []runtime.Object
	servers := map[string]*server{} // by node index
	ip := 20
	next := func() string { ip++; return fmt.Sprintf("127.0.0.%d", ip) }
	for _, pp := range pl.Pods {
		node := nodes[pp.Node-1]
		switch pp.Role {
		case "client":
			objs = append(objs, pod("client-"+node, node, next(), map[string]string{manifests.LabelPod: "client"}))
		case "server", "control-server":
			addr := next()
			objs = append(objs, pod(pp.Name+"-7d9f", node, addr, map[string]string{manifests.LabelPod: pp.Name}))
			s := &server{addr: fmt.Sprintf("%s:%d", addr, scenario.HTTPPort)}
			s.start(t)
			t.Cleanup(s.stop)
			servers[fmt.Sprint(pp.Node)] = s
		case "control-client":
			objs = append(objs, pod(pp.Name+"-5c4b", node, next(), map[string]string{manifests.LabelPod: pp.Name}))
		}
	}
	objs = append(objs, pod("controlplane-6f5d", nodes[0], next(), map[string]string{manifests.LabelPod: "controlplane"}))
	for _, n := range nodes {
		objs = append(objs, pod("ztunnel-"+n, n, next(), map[string]string{manifests.LabelPod: "ztunnel"}))
	}
	objs = append(objs, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "registry", Namespace: ns}})
	for s := range pl.Services {
		objs = append(objs, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s, Namespace: ns}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10"}})
	}
	cs := fake.NewSimpleClientset(objs...)
	var crashed []string
	cs.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		name := a.(k8stesting.DeleteAction).GetName()
		crashed = append(crashed, name)
		if name == "ztunnel-kw-c" {
			s := servers["3"]
			s.stop()
			time.AfterFunc(1500*time.Millisecond, func() { s.start(t) })
		}
		return false, nil, nil
	})
	ex := &fakeExec{root: t.TempDir()}
	b := &Backend{Client: cs, Dynamic: readyDynamic(), Mapper: testMapper(), Exec: ex, Nodes: nodes, Image: "blastradius:test",
		ReadyTimeout: 5 * time.Second, Logf: t.Logf}

	dir := filepath.Join(t.TempDir(), "run")
	r, err := scenario.NewRunner(scenario.Options{Dir: dir, Bucket: 100 * time.Millisecond, BudgetRPS: 500, Timeout: 500 * time.Millisecond,
		Backend: b, Logf: t.Logf}, results.Environment{Provider: "kubeconfig"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := r.TrialIn(context.Background(), sc, "ambient", 1)
	if err != nil {
		t.Fatalf("trial: %v", err)
	}
	if tr.Status != results.StatusDone && tr.Status != results.StatusFailed {
		t.Fatalf("trial status %s: %s", tr.Status, tr.Error)
	}
	if len(crashed) != 1 || crashed[0] != "ztunnel-kw-c" {
		t.Errorf("pods deleted: %v, want the node proxy on node-3's node (kw-c)", crashed)
	}
	if len(tr.Faults) != 1 || tr.Faults[0].Target != "node-3" {
		t.Fatalf("fault records %+v", tr.Faults)
	}
	// The registry the control plane got names real nodes and pod IPs.
	cm, _ := cs.CoreV1().ConfigMaps(ns).Get(context.Background(), "registry", metav1.GetOptions{})
	var snap xds.Snapshot
	if err := json.Unmarshal([]byte(cm.Data["registry.json"]), &snap); err != nil {
		t.Fatalf("registry: %v", err)
	}
	if len(snap.Workloads) != len(tr.Topology.Pods) {
		t.Errorf("registry has %d workloads, topology %d pods", len(snap.Workloads), len(tr.Topology.Pods))
	}
	for _, w := range snap.Workloads {
		if !strings.HasPrefix(w.Node, "kw-") || !strings.HasPrefix(w.IP, "127.0.0.") {
			t.Errorf("workload %+v: want a real node name and the pod's IP", w)
		}
	}
	// Every flow's events came back through exec and were measured.
	if tr.Summary == nil || len(tr.Flows) != len(pl.Flows) {
		t.Fatalf("summary present %v, flows %d, planned %d", tr.Summary != nil, len(tr.Flows), len(pl.Flows))
	}
	for _, f := range tr.Flows {
		if st, err := os.Stat(filepath.Join(dir, f.Events)); err != nil || st.Size() == 0 {
			t.Errorf("flow %s: events not pulled back (%v)", f.ID, err)
		}
	}
	if tr.Verdict == nil {
		t.Fatal("no verdict")
	}
	if tr.Verdict.Value != "contained" {
		t.Errorf("verdict %s (%+v), want contained: only flows to node-3 lost their server", tr.Verdict.Value, tr.Verdict)
	}
	var toNode3, other float64
	for _, f := range tr.Summary.Flows {
		if f.Flow.ServerNode == "node-3" {
			toNode3 += f.DisruptionSeconds
		} else {
			other += f.DisruptionSeconds
		}
	}
	if toNode3 < 1 || toNode3 > 6 || other > 0.3 {
		t.Errorf("disruption: %.2fs on the two flows to node-3 (want ≈ 2 × 1.5 s), %.2fs elsewhere (want 0)", toNode3, other)
	}
	var agents int
	for _, c := range ex.cmds {
		if strings.Contains(c, " agent ") {
			agents++
			if !strings.Contains(c, "/agent: ") {
				t.Errorf("agent started in the wrong container: %s", c)
			}
		}
	}
	clients := map[string]bool{}
	for _, f := range pl.Flows {
		clients[f.Client] = true
	}
	if agents != len(clients) {
		t.Errorf("%d agent sessions, want one per client pod (%d): %v", agents, len(clients), ex.cmds)
	}
}
