package istioinstall

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// Istio's ambient waypoints are Envoy deployments istiod makes from a
// Gateway API Gateway of class istio-waypoint: the Gateway API's CRDs come
// first. They are not part of Istio's charts (Istio's documentation has
// them applied from the Gateway API's release), so the tool carries the
// two it needs, GatewayClass and Gateway, from the standard channel of the
// version the pinned Istio is built against.

//go:embed gatewayapi/*.yaml
var gatewayAPIFS embed.FS

// The Gateway API's resources the tool reads and writes.
var (
	GatewayGVR      = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"}
	GatewayClassGVR = schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gatewayclasses"}
)

// GatewayAPIVersion is the Gateway API release the CRDs are from: the
// version of sigs.k8s.io/gateway-api the pinned istio.io/istio requires.
const GatewayAPIVersion = "v1.6.0"

// PartGatewayAPI is the Gateway API CRDs, applied before Istio's charts.
const PartGatewayAPI = "gateway-api"

// ManagedByLabel marks the Gateway API CRDs the tool installed: only those
// are removed on uninstall. A cluster that had them already keeps its own
// (deleting a CRD deletes every object of its kind, the users' Gateways
// too).
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "blastradius"
)

// gatewayAPICRDs returns the embedded CRDs, labelled as the tool's.
func gatewayAPICRDs() ([]*unstructured.Unstructured, error) {
	names, err := fs.Glob(gatewayAPIFS, "gatewayapi/*.yaml")
	if err != nil {
		return nil, err
	}
	slices.Sort(names) // gatewayclasses before gateways
	var out []*unstructured.Unstructured
	for _, n := range names {
		raw, err := gatewayAPIFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("gateway API CRD %s: %v", n, err)
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() != "CustomResourceDefinition" {
			return nil, fmt.Errorf("gateway API CRD %s: kind %q", n, u.GetKind())
		}
		l := u.GetLabels()
		if l == nil {
			l = map[string]string{}
		}
		l[ManagedByLabel] = ManagedByValue
		u.SetLabels(l)
		out = append(out, u)
	}
	return out, nil
}

// ours says whether a live object carries the tool's managed-by label.
func ours(u *unstructured.Unstructured) bool {
	return u.GetLabels()[ManagedByLabel] == ManagedByValue
}

// keepForeign drops from objs the Gateway API CRDs the cluster already has
// from someone else, and says which (with their bundle version): they are
// neither overwritten nor, later, deleted.
func keepForeign(ctx context.Context, c Cluster, objs []*unstructured.Unstructured) ([]*unstructured.Unstructured, []string, error) {
	var apply []*unstructured.Unstructured
	var kept []string
	for _, o := range objs {
		live, err := c.Dynamic.Resource(crdGVR).Get(ctx, o.GetName(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			apply = append(apply, o)
		case err != nil:
			return nil, nil, fmt.Errorf("get CRD %s: %v", o.GetName(), err)
		case ours(live):
			apply = append(apply, o)
		default:
			v := live.GetAnnotations()["gateway.networking.k8s.io/bundle-version"]
			if v == "" {
				v = "no bundle version"
			}
			kept = append(kept, fmt.Sprintf("%s (%s)", o.GetName(), v))
		}
	}
	return apply, kept, nil
}

// istioGatewayClasses are the classes istiod writes itself once the
// Gateway API CRDs exist. They go with the CRDs the tool installed; where
// the cluster's CRDs were kept, the uninstall deletes them by name.
var istioGatewayClasses = []string{"istio", "istio-waypoint", "istio-remote", "istio-east-west"}

// deleteIstioGatewayClasses removes the GatewayClasses istiod wrote whose
// controller is Istio's; absent ones are fine.
func deleteIstioGatewayClasses(ctx context.Context, c Cluster) error {
	gvr := GatewayClassGVR
	var errs []string
	for _, n := range istioGatewayClasses {
		u, err := c.Dynamic.Resource(gvr).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			continue // absent, or the kind is not served
		}
		ctrl, _, _ := unstructured.NestedString(u.Object, "spec", "controllerName")
		if !strings.HasPrefix(ctrl, "istio.io/") {
			continue
		}
		if err := c.Dynamic.Resource(gvr).Delete(ctx, n, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Sprintf("delete gatewayclass %s: %v", n, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
