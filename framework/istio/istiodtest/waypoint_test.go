package istiodtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	clusterkube "blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/istio/istioinstall"
)

// The waypoint the tool writes is made by the real istiod: from the
// Gateway and its overlay, istiod writes a Deployment running the sidecar
// image (Envoy) on the nodes asked for, and a Service with the HBONE port;
// it leaves the replica count to the trial, so a scale (to the scenario's
// replicas, or to 0 for an outage) stays when istiod reconciles again.
func TestIstiodMakesTheToolsWaypoint(t *testing.T) {
	kube := apiServer.Get(t)
	d := StartWithGateways(t, kube)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, mapper, err := clusterkube.Clients(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "waypoint-trial"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
		Labels: map[string]string{istioinstall.DataplaneModeLabel: istioinstall.DataplaneModeAmbient}}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	objs, err := istioinstall.Waypoint(ns, []string{"node-1", "node-2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := clusterkube.ApplyWith(ctx, dyn, mapper, objs, clusterkube.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	var dep *appsv1.Deployment
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		dep, err = cs.AppsV1().Deployments(ns).Get(ctx, istioinstall.WaypointName, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("istiod wrote no waypoint Deployment: %v; log %s:\n%s", err, d.Log, tail(d.Log, 40))
	}
	imgs, err := istioinstall.Options{}.Images()
	if err != nil {
		t.Fatal(err)
	}
	spec := dep.Spec.Template.Spec
	if len(spec.Containers) == 0 || spec.Containers[0].Image != imgs[istioinstall.Sidecar] {
		t.Errorf("waypoint containers %+v, want the sidecar image %s", spec.Containers, imgs[istioinstall.Sidecar])
	}
	var overlay appsv1.Deployment
	if err := yaml.Unmarshal([]byte(objs[0].Object["data"].(map[string]any)["deployment"].(string)), &overlay); err != nil {
		t.Fatal(err)
	}
	if want := overlay.Spec.Template.Spec.Affinity; want == nil || !equality.Semantic.DeepEqual(spec.Affinity, want) {
		t.Errorf("affinity on istiod's Deployment %+v, want the overlay's %+v", spec.Affinity, want)
	}
	if dep.Spec.Template.Labels[istioinstall.GatewayNameLabel] != istioinstall.WaypointName {
		t.Errorf("pod labels %v, want %s=%s (the trial finds the replicas by it)", dep.Spec.Template.Labels, istioinstall.GatewayNameLabel, istioinstall.WaypointName)
	}
	for _, mf := range dep.ManagedFields {
		if mf.FieldsV1 != nil && strings.Contains(string(mf.FieldsV1.Raw), `"f:replicas"`) {
			t.Errorf("manager %s owns spec.replicas: a scale would be undone", mf.Manager)
		}
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, istioinstall.WaypointName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("waypoint Service: %v", err)
	}
	hbone := false
	for _, p := range svc.Spec.Ports {
		hbone = hbone || p.Port == 15008
	}
	if !hbone {
		t.Errorf("waypoint Service ports %+v, want 15008 (HBONE)", svc.Spec.Ports)
	}

	// The trial scales the Deployment; istiod, reconciling the Gateway
	// again (an annotation changed), keeps the count.
	if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, istioinstall.WaypointName, types.MergePatchType,
		[]byte(`{"spec":{"replicas":2}}`), metav1.PatchOptions{FieldManager: "blastradius"}); err != nil {
		t.Fatal(err)
	}
	gen := dep.Generation
	for i := range 2 {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"blastradius.dev/touch":"%d"}}}`, i)
		if _, err := dyn.Resource(istioinstall.GatewayGVR).Namespace(ns).Patch(ctx, istioinstall.WaypointName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
	}
	dep, err = cs.AppsV1().Deployments(ns).Get(ctx, istioinstall.WaypointName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %v after istiod reconciled, want the trial's 2", dep.Spec.Replicas)
	}
	t.Logf("istiod's waypoint: image %s, generation %d → %d, replicas %d", spec.Containers[0].Image, gen, dep.Generation, *dep.Spec.Replicas)
}
