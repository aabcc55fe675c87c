package istioinstall

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/cluster/kube/kubetest"
)

// The charts, rendered with what each provider sets, applied to a real
// kube-apiserver with strict field validation: every object must be
// accepted as rendered (a field the server does not know fails the apply).
// Then uninstalled: nothing of Istio's may be left.
func TestRenderedChartsApplyStrictlyAndUninstallLeavesNothing(t *testing.T) {
	c, ctx := testCluster(t)
	cs, dyn, mapper := c.Client, c.Dynamic, c.Mapper

	for _, tc := range []struct {
		name  string
		opt   Options
		noDNS bool
	}{
		{"kind (the charts' images and CNI folders)", Options{}, false},
		{"local-k8s", localOptions, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts, err := Render(tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, p := range parts {
				n += len(p.Objects)
			}
			io := InstallOptions{NoWait: true, ReadyTimeout: time.Minute, NoClusterDNS: tc.noDNS}
			if err := Install(ctx, c, parts, io); err != nil {
				t.Fatalf("install: %v", err)
			}
			// Without cluster DNS, ztunnel finds istiod by its Service's
			// address in /etc/hosts; with it, by DNS.
			ds, err := cs.AppsV1().DaemonSets(Namespace).Get(ctx, "ztunnel", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			svc, err := cs.CoreV1().Services(Namespace).Get(ctx, "istiod", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ha := ds.Spec.Template.Spec.HostAliases
			switch {
			case !tc.noDNS && len(ha) != 0:
				t.Errorf("hostAliases %+v with cluster DNS", ha)
			case tc.noDNS && (len(ha) != 1 || ha[0].IP != svc.Spec.ClusterIP || !slices.Contains(ha[0].Hostnames, "istiod.istio-system.svc")):
				t.Errorf("hostAliases %+v, want istiod.istio-system.svc at %s", ha, svc.Spec.ClusterIP)
			}
			// Every object is there as applied.
			for _, p := range parts {
				for _, o := range p.Objects {
					ri, err := resource(c, o)
					if err != nil {
						t.Fatalf("%s: %v", kube.Ref(o), err)
					}
					if _, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{}); err != nil {
						t.Errorf("%s after install: %v", kube.Ref(o), err)
					}
				}
			}
			// A trial's waypoint (istiod makes its Deployment; no istiod
			// runs here) is accepted as the tool writes it.
			trial := "trial-waypoint"
			if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: trial}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			wp, err := Waypoint(trial, []string{"node-a", "node-b"})
			if err != nil {
				t.Fatal(err)
			}
			if err := kube.ApplyWith(ctx, dyn, mapper, wp, kube.ApplyOptions{}); err != nil {
				t.Fatalf("waypoint: %v", err)
			}
			for _, o := range wp {
				ri, err := resource(c, o)
				if err != nil {
					t.Fatal(err)
				}
				if err := ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{}); err != nil {
					t.Errorf("delete %s: %v", kube.Ref(o), err)
				}
			}
			// A second install (a run after an interrupted one) applies
			// over the first.
			if err := Install(ctx, c, parts, io); err != nil {
				t.Fatalf("second install: %v", err)
			}
			t.Logf("%d objects applied strictly, twice", n)

			uninstallAll(ctx, t, c, parts)
		})
	}
}

// testCluster is a fresh test API server as an install sees it, with a
// context that ends with the test (5 minutes at most).
func testCluster(t *testing.T) (Cluster, context.Context) {
	srv := kubetest.Start(t)
	dyn, mapper, err := kube.Clients(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(srv.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return Cluster{Client: cs, Dynamic: dyn, Mapper: mapper, Logf: t.Logf}, ctx
}

// uninstallAll uninstalls the parts and checks nothing of Istio's is left.
// Two minutes is far more than the deletion takes (seconds) and less than
// the API server's CRD finalizer can stall without the uninstall's nudge
// (up to its 5-minute resync). No namespace controller runs with the test
// API server: it is played, finalizing the namespace once its deletion
// starts.
func uninstallAll(ctx context.Context, t *testing.T, c Cluster, parts []Part) {
	t.Helper()
	stop := finalizeNamespace(ctx, t, c.Client, Namespace)
	err := Uninstall(ctx, c, parts, 2*time.Minute)
	stop()
	if err != nil {
		t.Fatalf("uninstall: %v", err)
	}
	assertNothingLeft(ctx, t, c)
}

func finalizeNamespace(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			ns, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if err == nil && ns.DeletionTimestamp != nil && len(ns.Spec.Finalizers) > 0 {
				ns.Spec.Finalizers = []corev1.FinalizerName{}
				if _, err := cs.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
					t.Logf("finalize namespace %s: %v", name, err)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }
}

func assertNothingLeft(ctx context.Context, t *testing.T, c Cluster) {
	t.Helper()
	crds, err := c.Dynamic.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range crds.Items {
		if strings.HasSuffix(u.GetName(), ".istio.io") || (strings.HasSuffix(u.GetName(), ".gateway.networking.k8s.io") && ours(&u)) {
			t.Errorf("CRD %s left after uninstall", u.GetName())
		}
	}
	for _, res := range []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"} {
		l, err := c.Dynamic.Resource(schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: res}).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range l.Items {
			if strings.Contains(u.GetName(), "istio") {
				t.Errorf("%s %s left after uninstall", res, u.GetName())
			}
		}
	}
	for _, res := range []string{"clusterroles", "clusterrolebindings"} {
		l, err := c.Dynamic.Resource(schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: res}).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range l.Items {
			if strings.Contains(u.GetName(), "istio") {
				t.Errorf("%s %s left after uninstall", res, u.GetName())
			}
		}
	}
	if _, err := c.Client.CoreV1().Namespaces().Get(ctx, Namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace %s after uninstall: %v, want not found", Namespace, err)
	}
}

// A cluster with Gateway API CRDs of its own keeps them: the install
// neither changes them nor the uninstall removes them; only the classes
// istiod wrote on them go.
func TestTheClustersOwnGatewayAPICRDsAreKept(t *testing.T) {
	c, ctx := testCluster(t)
	dyn, mapper := c.Dynamic, c.Mapper
	theirs, err := gatewayAPICRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range theirs {
		delete(o.Object["metadata"].(map[string]any), "labels")
		a := o.GetAnnotations()
		a["gateway.networking.k8s.io/bundle-version"] = "v9.9.9-theirs"
		o.SetAnnotations(a)
	}
	if err := kube.ApplyWith(ctx, dyn, mapper, theirs, kube.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := waitCRDs(ctx, c, theirs, time.Minute); err != nil {
		t.Fatal(err)
	}
	parts, err := Render(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Install(ctx, c, parts, InstallOptions{NoWait: true}); err != nil {
		t.Fatalf("install: %v", err)
	}
	// What istiod writes once the CRDs exist: its classes, and one that
	// is not Istio's.
	classes := GatewayClassGVR
	for name, ctrl := range map[string]string{"istio-waypoint": "istio.io/mesh-controller", "istio": "istio.io/gateway-controller", "other": "example.com/gateway"} {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
			"metadata": map[string]any{"name": name}, "spec": map[string]any{"controllerName": ctrl},
		}}
		if _, err := dyn.Resource(classes).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	uninstallAll(ctx, t, c, parts)
	for _, o := range theirs {
		u, err := dyn.Resource(crdGVR).Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the cluster's CRD %s after uninstall: %v", o.GetName(), err)
		}
		if v := u.GetAnnotations()["gateway.networking.k8s.io/bundle-version"]; v != "v9.9.9-theirs" || ours(u) {
			t.Errorf("the cluster's CRD %s was changed: bundle-version %q, labels %v", o.GetName(), v, u.GetLabels())
		}
	}
	l, err := dyn.Resource(classes).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, u := range l.Items {
		left = append(left, u.GetName())
	}
	if !slices.Equal(left, []string{"other"}) {
		t.Errorf("gateway classes after uninstall: %v, want only the one that is not Istio's", left)
	}
}
