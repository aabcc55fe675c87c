package istiodtest

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"blastradius.dev/blastradius/framework/cluster/kube/kubetest"
	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/node"
	"blastradius.dev/blastradius/proxy/xds"
)

// istiodName is the name istiod's serving certificate carries.
const istiodName = "istiod.istio-system.svc"

// cluster plays the kubelet and the controllers for the objects a test
// creates: it writes pod status itself.
type cluster struct {
	t  *testing.T
	cs kubernetes.Interface
}

func (c *cluster) pod(ctx context.Context, ns, name, sa, node, ip string, labels map[string]string) *corev1.Pod {
	c.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels,
			Annotations: map[string]string{"ambient.istio.io/redirection": "enabled"}},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	if sa != "default" {
		if _, err := c.cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
			c.t.Fatal(err)
		}
	}
	p, err := c.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if p, err = c.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// startEnv is where each proxy test starts: istiod on the shared API
// server, a ztunnel pod on node with ip and a token bound to it, and the
// workload namespace ns enrolled in ambient mode.
func startEnv(t *testing.T, ctx context.Context, node, ip, ns string) (*kubetest.Server, *Istiod, *cluster, *corev1.Pod, string) {
	t.Helper()
	kube := apiServer.Get(t)
	d := Start(t, kube)
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, cs: cs}
	zt := c.pod(ctx, Namespace, "ztunnel-n"+strings.TrimPrefix(node, "node-"), "ztunnel", node, ip, map[string]string{"app": "ztunnel"})
	token := c.ztunnelToken(ctx, zt)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return kube, d, c, zt, token
}

// ztunnelToken is what the kubelet projects into a ztunnel pod: a token of
// service account istio-system/ztunnel, audience istio-ca, bound to the pod.
func (c *cluster) ztunnelToken(ctx context.Context, pod *corev1.Pod) string {
	c.t.Helper()
	tr, err := c.cs.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, "ztunnel", &authv1.TokenRequest{Spec: authv1.TokenRequestSpec{
		Audiences:      []string{"istio-ca"},
		BoundObjectRef: &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("token for ztunnel: %v", err)
	}
	f := filepath.Join(c.t.TempDir(), "istio-token")
	if err := os.WriteFile(f, []byte(tr.Status.Token), 0o600); err != nil {
		c.t.Fatal(err)
	}
	return f
}

// denyPrincipal applies a security.istio.io/v1 AuthorizationPolicy that
// denies principal to the pods labelled app=app in ns.
func (c *cluster) denyPrincipal(ctx context.Context, cfg *rest.Config, ns, name, app, principal string) {
	c.t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ap := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": app}},
			"action":   "DENY",
			"rules": []any{map[string]any{"from": []any{map[string]any{"source": map[string]any{
				"principals": []any{principal}}}}}},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"}
	if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, ap, metav1.CreateOptions{}); err != nil {
		c.t.Fatalf("AuthorizationPolicy %s/%s: %v", ns, name, err)
	}
}

// waitSnapshot waits for a snapshot that satisfies ok, or fails with the
// last one seen.
func waitSnapshot(t *testing.T, c *xds.DeltaClient, what string, ok func(xds.Snapshot) bool) xds.Snapshot {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if s, have := c.Current(); have && ok(*s) {
			return *s
		}
		select {
		case <-c.Updates():
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			s, _ := c.Current()
			t.Fatalf("no snapshot with %s within 30s; last %+v; nack %q; warnings %v", what, s, c.LastNack(), c.Warnings())
		}
	}
}

func workload(s xds.Snapshot, ip string) (xds.Workload, bool) {
	for _, w := range s.Workloads {
		if w.IP == ip {
			return w, true
		}
	}
	return xds.Workload{}, false
}

func service(s xds.Snapshot, ns, name string) (xds.Service, bool) {
	for _, v := range s.Services {
		if v.Namespace == ns && v.Name == name {
			return v, true
		}
	}
	return xds.Service{}, false
}

// The node proxy's istiod clients against the real istiod, over the
// authenticated port with a bound service-account token as a ztunnel pod
// has: delta xDS delivers the workloads and services of pod and service
// objects and follows a pod added and a pod deleted; the CA issues a
// certificate for a pod's identity on the proxy's node (impersonation) and
// refuses one for an identity with no pod there.
func TestProxyClientsFollowIstiod(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	_, d, c, zt, token := startEnv(t, ctx, "node-1", "10.244.1.2", "shop")
	cs := c.cs

	svc, err := cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "cart"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.pod(ctx, "shop", "cart-1", "cart", "node-1", "10.244.1.5", map[string]string{"app": "cart"})

	client, err := xds.NewDeltaClient(xds.DeltaConfig{
		Address: d.SecureXDS, RootPEM: d.RootPEM, ServerName: istiodName, TokenFile: token, ClusterID: ClusterID,
		PodName: zt.Name, PodNamespace: Namespace, InstanceIPs: []string{"10.244.1.2"}, NodeName: "node-1",
	}, xds.WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { _ = client.Run(rctx) }()

	endpoints := func(s xds.Snapshot) []string {
		v, ok := service(s, "shop", "cart.shop.svc.cluster.local")
		if !ok {
			return nil
		}
		var names []string
		for _, uid := range v.Endpoints {
			for _, w := range s.Workloads {
				if w.UID == uid {
					names = append(names, w.Name)
				}
			}
		}
		slices.Sort(names)
		return names
	}
	s := waitSnapshot(t, client, "pod cart-1 behind service cart", func(s xds.Snapshot) bool {
		return slices.Equal(endpoints(s), []string{"cart-1"})
	})
	w, _ := workload(s, "10.244.1.5")
	if w.Name != "cart-1" || w.Namespace != "shop" || w.ServiceAccount != "cart" || w.Node != "node-1" || w.Protocol != xds.ProtocolHBONE {
		t.Fatalf("workload of cart-1: %+v", w)
	}
	v, _ := service(s, "shop", "cart.shop.svc.cluster.local")
	if v.VIP != svc.Spec.ClusterIP || !slices.Equal(v.Ports, []xds.Port{{Port: 80, TargetPort: 8080}}) {
		t.Fatalf("service cart: %+v", v)
	}
	if s.TrustDomain != "cluster.local" {
		t.Fatalf("trust domain %q", s.TrustDomain)
	}

	// A pod added joins the service; a pod deleted leaves it and the mesh.
	c.pod(ctx, "shop", "cart-2", "cart", "node-1", "10.244.1.6", map[string]string{"app": "cart"})
	waitSnapshot(t, client, "cart-2 added", func(s xds.Snapshot) bool {
		return slices.Equal(endpoints(s), []string{"cart-1", "cart-2"})
	})
	// Grace 0: the object goes at once, as when a kubelet has confirmed
	// the containers stopped (none runs here to do it).
	if err := cs.CoreV1().Pods("shop").Delete(ctx, "cart-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	s = waitSnapshot(t, client, "cart-1 deleted", func(s xds.Snapshot) bool {
		_, still := workload(s, "10.244.1.5")
		return !still && slices.Equal(endpoints(s), []string{"cart-2"})
	})

	// A pod that stops being ready leaves the service's endpoints (istiod
	// marks its workload unhealthy) but stays a workload: it still has an
	// identity and takes direct connections. Ready again, it is back.
	setReady := func(name string, ready corev1.ConditionStatus) {
		t.Helper()
		p, err := cs.CoreV1().Pods("shop").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
		if _, err := cs.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setReady("cart-2", corev1.ConditionFalse)
	waitSnapshot(t, client, "cart-2 not ready", func(s xds.Snapshot) bool {
		_, still := workload(s, "10.244.1.6")
		return still && len(endpoints(s)) == 0
	})
	setReady("cart-2", corev1.ConditionTrue)
	waitSnapshot(t, client, "cart-2 ready again", func(s xds.Snapshot) bool {
		return slices.Equal(endpoints(s), []string{"cart-2"})
	})

	// The CA: a certificate for cart's identity, whose pod cart-2 runs on
	// node-1 as the proxy does; none for an identity with no pod there.
	cac, err := ca.NewIstioCAClient(ca.IstioCAConfig{Address: d.SecureXDS, RootPEM: d.RootPEM, ServerName: istiodName,
		TokenFile: token, ClusterID: ClusterID, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer cac.Close()
	id := "spiffe://cluster.local/ns/shop/sa/cart"
	cert, root, err := cac.Certificate(ctx, id)
	if err != nil {
		t.Fatalf("certificate for %s: %v; istiod log:\n%s", id, err, tail(d.Log, 30))
	}
	if len(cert.Certificate) == 0 || len(root) == 0 || !strings.Contains(string(d.RootPEM), strings.TrimSpace(string(root))[:64]) {
		t.Fatalf("certificate for %s: %d certs, root %q", id, len(cert.Certificate), root)
	}
	other := "spiffe://cluster.local/ns/shop/sa/payments"
	c.pod(ctx, "shop", "payments-1", "payments", "node-2", "10.244.2.5", map[string]string{"app": "payments"})
	if _, _, err := cac.Certificate(ctx, other); err == nil || !strings.Contains(err.Error(), other) {
		t.Fatalf("certificate for %s (its only pod is on node-2): got %v, want a refusal naming it", other, err)
	} else {
		t.Logf("refused as it should be: %v", err)
	}
}

// An AuthorizationPolicy applied to the API server reaches the node proxy
// through istiod with Istio's semantics, and the proxy's own evaluation
// denies what it names and only that.
func TestIstioAuthorizationPolicyReachesTheProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	kube, d, c, zt, token := startEnv(t, ctx, "node-2", "10.244.2.2", "bank")
	c.pod(ctx, "bank", "ledger-1", "ledger", "node-2", "10.244.2.7", map[string]string{"app": "ledger"})

	c.denyPrincipal(ctx, kube.Config, "bank", "no-teller", "ledger", "cluster.local/ns/bank/sa/teller")

	client, err := xds.NewDeltaClient(xds.DeltaConfig{
		Address: d.SecureXDS, RootPEM: d.RootPEM, ServerName: istiodName, TokenFile: token, ClusterID: ClusterID,
		PodName: zt.Name, PodNamespace: Namespace, InstanceIPs: []string{"10.244.2.2"}, NodeName: "node-2",
	}, xds.WithLogf(t.Logf))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { _ = client.Run(rctx) }()
	s := waitSnapshot(t, client, "policy bank/no-teller selecting ledger-1", func(s xds.Snapshot) bool {
		w, ok := workload(s, "10.244.2.7")
		if !ok {
			return false
		}
		for _, p := range s.Policies {
			if p.Namespace == "bank" && p.Name == "no-teller" && p.Selects(&w) {
				return true
			}
		}
		return false
	})
	ix := node.NewIndex(s)
	ledger, _ := workload(s, "10.244.2.7")
	for peer, want := range map[string]bool{
		"spiffe://cluster.local/ns/bank/sa/teller":  false,
		"spiffe://cluster.local/ns/bank/sa/auditor": true,
		"": true, // no STRICT policy: plaintext is allowed
	} {
		if got := ix.AllowedConn(&ledger, xds.Conn{Peer: peer, DstIP: netip.MustParseAddr("10.244.2.7"), DstPort: 8080}); got != want {
			t.Errorf("peer %q to ledger-1: allowed %v, want %v (policies %+v)", peer, got, want, s.Policies)
		}
	}
}
