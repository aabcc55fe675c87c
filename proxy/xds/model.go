// Package xds is the workload discovery model and its streaming API: the
// control plane pushes versioned snapshots of workloads, services, waypoints
// and authorization policies; proxies ACK or NACK each version and keep the
// last accepted one in memory only.
package xds

import "fmt"

// Protocols a workload accepts inbound.
const (
	ProtocolHBONE = "HBONE" // meshed: reached over HBONE on 15008
	ProtocolTCP   = "TCP"   // not meshed: plain TCP to its IP
)

// Workload is one pod as the data plane sees it.
type Workload struct {
	UID            string `json:"uid"` // unique, e.g. "default/server-n1"
	Name           string `json:"name"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
	Node           string `json:"node"`
	IP             string `json:"ip"`
	Protocol       string `json:"protocol"`           // ProtocolHBONE or ProtocolTCP
	Waypoint       string `json:"waypoint,omitempty"` // name of the waypoint Service that serves it, if any
	// WaypointUnusable: the control plane put the workload behind a
	// waypoint this model cannot name (unknown to it, or in another
	// namespace). Traffic addressed to the workload is refused: sending it
	// straight to the pod would skip whatever the waypoint enforces.
	WaypointUnusable bool `json:"waypointUnusable,omitempty"`
}

// Identity is the workload's SPIFFE identity.
func (w Workload) Identity(trustDomain string) string {
	return SpiffeID(trustDomain, w.Namespace, w.ServiceAccount)
}

// SpiffeID formats spiffe://<td>/ns/<ns>/sa/<sa>.
func SpiffeID(trustDomain, ns, sa string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, ns, sa)
}

// Port maps a service port to the workloads' target port.
type Port struct {
	Port       int `json:"port"`
	TargetPort int `json:"targetPort"`
}

// Service is a VIP in front of workloads.
type Service struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	VIP       string   `json:"vip"`
	Ports     []Port   `json:"ports"`
	Endpoints []string `json:"endpoints"`          // workload UIDs
	Waypoint  string   `json:"waypoint,omitempty"` // name of the waypoint Service traffic to this service goes through
	// WaypointUnusable is Workload.WaypointUnusable for traffic to the VIP.
	WaypointUnusable bool `json:"waypointUnusable,omitempty"`
}

// Policy actions.
const (
	ActionAllow = "ALLOW"
	ActionDeny  = "DENY"
)

// Policy is an authorization policy enforced by the destination's proxy. A
// request is denied when any DENY policy selecting the destination matches
// it, or when ALLOW policies select it and none matches (see Selects and
// Matches in policy.go).
type Policy struct {
	Name       string   `json:"name"`
	Namespace  string   `json:"namespace"`
	Workloads  []string `json:"workloads"`  // UIDs selected; empty = every workload in Namespace
	Action     string   `json:"action"`     // ActionAllow or ActionDeny
	Principals []string `json:"principals"` // SPIFFE IDs; "*" matches any authenticated peer
	// AnyNamespace lifts the Namespace restriction: with Workloads empty
	// the policy selects every workload of every namespace, else the
	// listed workloads wherever they run. Istio needs it for mesh-wide
	// policies and for root-namespace policies attached to workloads of
	// other namespaces.
	AnyNamespace bool `json:"anyNamespace,omitempty"`
	// Rules are conditions on the whole connection (peer identity,
	// namespace, addresses, ports); the policy matches when its Principals
	// or any rule match.
	Rules []Rule `json:"rules,omitzero"`
}

// Snapshot is the whole discovery state at one version.
type Snapshot struct {
	Version     string     `json:"version"`
	TrustDomain string     `json:"trustDomain"`
	Workloads   []Workload `json:"workloads"`
	Services    []Service  `json:"services"`
	Policies    []Policy   `json:"policies"`
}
