package kubetrial

import (
	"context"
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/manifests"
	"blastradius.dev/blastradius/proxy/xds"
)

func slice(svc string, ready map[string]bool) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: svc + "-abc", Namespace: manifests.Namespace("ambient"),
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}}, AddressType: discoveryv1.AddressTypeIPv4}
	for ip, r := range ready {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &r}})
	}
	return es
}

// The registry follows Kubernetes' endpoints: a pod that stops being ready
// leaves the service, a drain's replacement joins it, and each change is
// recorded once with its time.
func TestKeeperFollowsEndpointSlices(t *testing.T) {
	ns := manifests.Namespace("ambient")
	ctx := context.Background()
	cs := fake.NewSimpleClientset(
		pod("server-n3-x", "kw-c", "10.0.3.5", map[string]string{manifests.LabelPod: "server-n3"}),
		pod("server-n1-x", "kw-a", "10.0.1.5", map[string]string{manifests.LabelPod: "server-n1"}),
		pod("controlplane-x", "kw-a", "10.0.1.9", map[string]string{manifests.LabelPod: "controlplane"}),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "registry", Namespace: ns}},
		slice("svc-n3", map[string]bool{"10.0.3.5": true}),
	)
	b := &Backend{Client: cs, Nodes: []string{"kw-a", "kw-b", "kw-c"}}
	k := &keeper{b: b, ns: ns, services: []string{"svc-n3"}, meshed: true, cpPod: "controlplane-x", logf: t.Logf}
	topo := results.Topology{
		Pods:     []results.PodInfo{{Name: "server-n1", Node: "node-1"}, {Name: "server-n3", Node: "node-3"}},
		Services: []results.SvcInfo{{Name: "svc-n3", VIP: "10.96.0.3", Pods: []string{"server-n3"}}},
	}
	registered := func() []string {
		cm, _ := cs.CoreV1().ConfigMaps(ns).Get(ctx, "registry", metav1.GetOptions{})
		var snap xds.Snapshot
		if err := json.Unmarshal([]byte(cm.Data["registry.json"]), &snap); err != nil {
			t.Fatalf("registry: %v", err)
		}
		return snap.Services[0].Endpoints
	}
	if err := k.step(ctx, topo); err != nil {
		t.Fatal(err)
	}
	if got := registered(); len(got) != 1 || got[0] != ns+"/server-n3-x" {
		t.Fatalf("first registry endpoints %v", got)
	}
	// Node crash: the endpoint controller marks the pod not ready; the
	// drain's replacement on node-1 becomes ready.
	cs.CoreV1().Pods(ns).Create(ctx, pod("server-n3-moved-y", "kw-a", "10.0.1.7", map[string]string{manifests.LabelPod: "server-n3-moved"}), metav1.CreateOptions{})
	cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("svc-n3", map[string]bool{"10.0.3.5": false, "10.0.1.7": true}), metav1.UpdateOptions{})
	if err := k.step(ctx, topo); err != nil {
		t.Fatal(err)
	}
	if got := registered(); len(got) != 1 || got[0] != ns+"/server-n3-moved-y" {
		t.Errorf("registry endpoints after the change %v, want the replacement only", got)
	}
	if err := k.step(ctx, topo); err != nil { // no change: nothing recorded
		t.Fatal(err)
	}
	ch := k.Changes()
	if len(ch) != 1 || ch[0].Service != "svc-n3" || len(ch[0].Endpoints) != 1 || ch[0].Endpoints[0] != "server-n3-moved" {
		t.Errorf("changes %+v, want one: svc-n3 -> [server-n3-moved]", ch)
	}
	cp, _ := cs.CoreV1().Pods(ns).Get(ctx, "controlplane-x", metav1.GetOptions{})
	if cp.Annotations["blastradius.dev/registry"] == "" {
		t.Error("the control plane pod was not nudged to refresh its registry file")
	}
}
