package istioinstall

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// An ambient waypoint, as Istio's documentation has one made (`istioctl
// waypoint apply --for service`): a Gateway of class istio-waypoint with
// an HBONE listener, from which istiod writes a Deployment and a Service
// of the same name running Envoy (the proxyv2 image, global.proxy.image);
// a Service labelled istio.io/use-waypoint sends its traffic through it.
const (
	WaypointName     = "waypoint"
	WaypointClass    = "istio-waypoint"
	UseWaypointLabel = "istio.io/use-waypoint"
	// GatewayNameLabel is on every pod istiod's Deployment makes for the
	// Gateway.
	GatewayNameLabel = "gateway.networking.k8s.io/gateway-name"
	// waypointForLabel: which traffic the waypoint takes (service-addressed).
	waypointForLabel = "istio.io/waypoint-for"
	// waypointParams names the ConfigMap with the Deployment's overlay.
	waypointParams  = "waypoint-params"
	hboneListenPort = 15008
)

// Waypoint returns the objects that have istiod make a waypoint in ns: the
// ConfigMap the Gateway's infrastructure.parametersRef names, whose
// deployment overlay (Istio's documented way to shape the Deployment it
// makes) keeps the replicas on nodes, one per node where the nodes allow;
// and the Gateway. The overlay sets no replica count: istiod then leaves
// spec.replicas to whoever scales the Deployment (an autoscaler, or here
// the trial, which scales it to the scenario's replicas and to 0 for an
// outage); with a count in the overlay istiod would undo every scale.
func Waypoint(ns string, nodes []string) ([]*unstructured.Unstructured, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("waypoint in %s: no nodes to run on", ns)
	}
	terms := make([]any, len(nodes))
	for i, n := range nodes {
		terms[i] = map[string]any{"matchFields": []any{map[string]any{
			"key": "metadata.name", "operator": "In", "values": []any{n},
		}}}
	}
	overlay := map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"affinity": map[string]any{
			// One term per node (terms are ORed): a field selector on
			// metadata.name takes a single value.
			"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
				"nodeSelectorTerms": terms,
			}},
			"podAntiAffinity": map[string]any{"preferredDuringSchedulingIgnoredDuringExecution": []any{map[string]any{
				"weight": 100,
				"podAffinityTerm": map[string]any{
					"topologyKey":   "kubernetes.io/hostname",
					"labelSelector": map[string]any{"matchLabels": map[string]any{GatewayNameLabel: WaypointName}},
				},
			}}},
		},
	}}}}
	raw, err := yaml.Marshal(overlay)
	if err != nil {
		return nil, err
	}
	cm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": waypointParams, "namespace": ns},
		"data":     map[string]any{"deployment": string(raw)},
	}}
	gw := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
		"metadata": map[string]any{
			"name": WaypointName, "namespace": ns,
			"labels": map[string]any{waypointForLabel: "service"},
		},
		"spec": map[string]any{
			"gatewayClassName": WaypointClass,
			"infrastructure": map[string]any{"parametersRef": map[string]any{
				"group": "", "kind": "ConfigMap", "name": waypointParams,
			}},
			"listeners": []any{map[string]any{"name": "mesh", "port": int64(hboneListenPort), "protocol": "HBONE"}},
		},
	}}
	return []*unstructured.Unstructured{cm, gw}, nil
}
