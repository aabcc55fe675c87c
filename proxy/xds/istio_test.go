package xds

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/emptypb"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// Builders of istiod's messages, shaped as pilot/pkg/serviceregistry/ambient
// fills them.

func raw(ip string) []byte { return netip.MustParseAddr(ip).AsSlice() }

const echoKey = "default/echo.default.svc.cluster.local"

func iwl(name string, ip string, mods ...func(*workloadapi.Workload)) *workloadapi.Address {
	w := &workloadapi.Workload{
		Uid: "Kubernetes//Pod/default/" + name, Name: name, Namespace: "default", ServiceAccount: name,
		Node: "node-1", Addresses: [][]byte{raw(ip)}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
		Status: workloadapi.WorkloadStatus_HEALTHY, ClusterId: "Kubernetes",
	}
	for _, m := range mods {
		m(w)
	}
	return &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}
}

func uidOf(name string) string { return "Kubernetes//Pod/default/" + name }

// inService puts a workload in service key with service->target ports.
func inService(key string, ports ...[2]uint32) func(*workloadapi.Workload) {
	return func(w *workloadapi.Workload) {
		if w.Services == nil {
			w.Services = map[string]*workloadapi.PortList{}
		}
		pl := &workloadapi.PortList{}
		for _, p := range ports {
			pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: p[0], TargetPort: p[1]})
		}
		w.Services[key] = pl
	}
}

func isvc(ns, host, vip string, mods ...func(*workloadapi.Service)) *workloadapi.Address {
	s := &workloadapi.Service{Name: strings.Split(host, ".")[0], Namespace: ns, Hostname: host,
		Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}}
	if vip != "" {
		s.Addresses = []*workloadapi.NetworkAddress{{Address: raw(vip)}}
	}
	for _, m := range mods {
		m(s)
	}
	return &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}
}

func byHost(ns, host string) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Hostname{
		Hostname: &workloadapi.NamespacedHostname{Namespace: ns, Hostname: host}}, HboneMtlsPort: 15008}
}

func byAddr(ip string) *workloadapi.GatewayAddress {
	return &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Address{
		Address: &workloadapi.NetworkAddress{Address: raw(ip)}}, HboneMtlsPort: 15008}
}

func exact(s string) *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Exact{Exact: s}}
}

func presence() *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
}

// staticStrict is the policy istiod sends for STRICT PeerAuthentication
// (pilot/pkg/serviceregistry/ambient/policies.go).
func staticStrict() *security.Authorization {
	return &security.Authorization{
		Name: "istio_converted_static_strict", Namespace: "istio-system",
		Scope: security.Scope_WORKLOAD_SELECTOR, Action: security.Action_DENY,
		Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{NotPrincipals: []*security.StringMatch{presence()}}}}}}},
	}
}

func auth(ns, name string, scope security.Scope, action security.Action, ms ...*security.Match) *security.Authorization {
	return &security.Authorization{Name: name, Namespace: ns, Scope: scope, Action: action,
		Groups: []*security.Group{{Rules: []*security.Rules{{Matches: ms}}}}}
}

func workloadOf(t *testing.T, s Snapshot, uid string) Workload {
	t.Helper()
	for _, w := range s.Workloads {
		if w.UID == uid {
			return w
		}
	}
	t.Fatalf("no workload %q in %+v", uid, s.Workloads)
	return Workload{}
}

func serviceOf(t *testing.T, s Snapshot, ns, name string) Service {
	t.Helper()
	for _, sv := range s.Services {
		if sv.Namespace == ns && sv.Name == name {
			return sv
		}
	}
	t.Fatalf("no service %s/%s in %+v", ns, name, s.Services)
	return Service{}
}

func policyOf(t *testing.T, s Snapshot, ns, name string) Policy {
	t.Helper()
	for _, p := range s.Policies {
		if p.Namespace == ns && p.Name == name {
			return p
		}
	}
	t.Fatalf("no policy %s/%s in %+v", ns, name, s.Policies)
	return Policy{}
}

func warned(t *testing.T, warnings []string, sub string) {
	t.Helper()
	for _, w := range warnings {
		if strings.Contains(w, sub) {
			return
		}
	}
	t.Errorf("no warning containing %q in %q", sub, warnings)
}

func TestFromIstio(t *testing.T) {
	cases := []struct {
		name  string
		addrs []*workloadapi.Address
		auths []*security.Authorization
		check func(t *testing.T, s Snapshot, warnings []string)
	}{
		{
			name: "workload, service and endpoint via the services map",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", inService(echoKey, [2]uint32{80, 8080})),
				iwl("b", "10.244.1.3"), // same labels would not matter: not in the map
				isvc("default", "echo.default.svc.cluster.local", "10.96.0.10"),
			},
			check: func(t *testing.T, s Snapshot, _ []string) {
				want := Workload{UID: uidOf("a"), Name: "a", Namespace: "default", ServiceAccount: "a", Node: "node-1",
					IP: "10.244.1.2", Protocol: ProtocolHBONE}
				if got := workloadOf(t, s, uidOf("a")); got != want {
					t.Errorf("workload %+v, want %+v", got, want)
				}
				got := serviceOf(t, s, "default", "echo.default.svc.cluster.local")
				wantSvc := Service{Name: "echo.default.svc.cluster.local", Namespace: "default", VIP: "10.96.0.10",
					Ports: []Port{{80, 8080}}, Endpoints: []string{uidOf("a")}}
				if !reflect.DeepEqual(got, wantSvc) {
					t.Errorf("service %+v, want %+v", got, wantSvc)
				}
				if s.TrustDomain != "cluster.local" {
					t.Errorf("trust domain %q", s.TrustDomain)
				}
			},
		},
		{
			name: "unhealthy workload is no endpoint",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", inService(echoKey, [2]uint32{80, 8080})),
				iwl("b", "10.244.1.3", inService(echoKey, [2]uint32{80, 8080}), func(w *workloadapi.Workload) {
					w.Status = workloadapi.WorkloadStatus_UNHEALTHY
				}),
				isvc("default", "echo.default.svc.cluster.local", "10.96.0.10"),
			},
			check: func(t *testing.T, s Snapshot, _ []string) {
				workloadOf(t, s, uidOf("b")) // still reachable by its own address
				if got := serviceOf(t, s, "default", "echo.default.svc.cluster.local").Endpoints; !reflect.DeepEqual(got, []string{uidOf("a")}) {
					t.Errorf("endpoints %q, want only a", got)
				}
			},
		},
		{
			name: "HBONE and NONE",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2"),
				iwl("c", "10.244.1.4", func(w *workloadapi.Workload) { w.TunnelProtocol = workloadapi.TunnelProtocol_NONE }),
			},
			check: func(t *testing.T, s Snapshot, _ []string) {
				if p := workloadOf(t, s, uidOf("a")).Protocol; p != ProtocolHBONE {
					t.Errorf("HBONE workload: %s", p)
				}
				if p := workloadOf(t, s, uidOf("c")).Protocol; p != ProtocolTCP {
					t.Errorf("NONE workload: %s", p)
				}
			},
		},
		{
			name: "first IPv4 address; none = left out",
			addrs: []*workloadapi.Address{
				iwl("a", "fd00::1", func(w *workloadapi.Workload) {
					w.Addresses = append(w.Addresses, raw("10.244.1.2"), raw("10.244.1.9"))
				}),
				iwl("v6", "fd00::2"),
			},
			check: func(t *testing.T, s Snapshot, warnings []string) {
				if ip := workloadOf(t, s, uidOf("a")).IP; ip != "10.244.1.2" {
					t.Errorf("ip %s, want the first IPv4", ip)
				}
				if len(s.Workloads) != 1 {
					t.Errorf("IPv6-only workload kept: %+v", s.Workloads)
				}
				warned(t, warnings, uidOf("v6"))
			},
		},
		{
			name: "target port from the workload when the service's is named (0)",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", inService(echoKey, [2]uint32{80, 9090})),
				isvc("default", "echo.default.svc.cluster.local", "10.96.0.10", func(s *workloadapi.Service) { s.Ports[0].TargetPort = 0 }),
			},
			check: func(t *testing.T, s Snapshot, _ []string) {
				if p := serviceOf(t, s, "default", "echo.default.svc.cluster.local").Ports; !reflect.DeepEqual(p, []Port{{80, 9090}}) {
					t.Errorf("ports %+v", p)
				}
			},
		},
		{
			name: "endpoints mapping ports unlike the majority are left out",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", inService(echoKey, [2]uint32{80, 8080})),
				iwl("b", "10.244.1.3", inService(echoKey, [2]uint32{80, 8080})),
				iwl("c", "10.244.1.4", inService(echoKey, [2]uint32{80, 9999})),
				isvc("default", "echo.default.svc.cluster.local", "10.96.0.10", func(s *workloadapi.Service) { s.Ports[0].TargetPort = 0 }),
			},
			check: func(t *testing.T, s Snapshot, warnings []string) {
				got := serviceOf(t, s, "default", "echo.default.svc.cluster.local")
				if !reflect.DeepEqual(got.Endpoints, []string{uidOf("a"), uidOf("b")}) || got.Ports[0].TargetPort != 8080 {
					t.Errorf("service %+v", got)
				}
				warned(t, warnings, uidOf("c"))
			},
		},
		{
			name: "waypoint known, by hostname and by address",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", func(w *workloadapi.Workload) { w.Waypoint = byHost("default", "wp.default.svc.cluster.local") }),
				iwl("b", "10.244.1.3", func(w *workloadapi.Workload) { w.Waypoint = byAddr("10.96.0.20") }),
				iwl("wp", "10.244.1.9", inService("default/wp.default.svc.cluster.local", [2]uint32{15008, 15008})),
				isvc("default", "wp.default.svc.cluster.local", "10.96.0.20", func(s *workloadapi.Service) {
					s.Ports = []*workloadapi.Port{{ServicePort: 15008, TargetPort: 15008}}
				}),
				isvc("default", "echo.default.svc.cluster.local", "10.96.0.10", func(s *workloadapi.Service) {
					s.Waypoint = byHost("default", "wp.default.svc.cluster.local")
				}),
			},
			check: func(t *testing.T, s Snapshot, _ []string) {
				for _, uid := range []string{uidOf("a"), uidOf("b")} {
					if w := workloadOf(t, s, uid); w.Waypoint != "wp.default.svc.cluster.local" || w.WaypointUnusable {
						t.Errorf("%s: %+v", uid, w)
					}
				}
				if sv := serviceOf(t, s, "default", "echo.default.svc.cluster.local"); sv.Waypoint != "wp.default.svc.cluster.local" || sv.WaypointUnusable {
					t.Errorf("service %+v", sv)
				}
				if ep := serviceOf(t, s, "default", "wp.default.svc.cluster.local").Endpoints; !reflect.DeepEqual(ep, []string{uidOf("wp")}) {
					t.Errorf("waypoint endpoints %q", ep)
				}
			},
		},
		{
			name: "waypoint unknown, elsewhere or empty: fail closed",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", func(w *workloadapi.Workload) { w.Waypoint = byHost("default", "ghost.default.svc.cluster.local") }),
				iwl("b", "10.244.1.3", func(w *workloadapi.Workload) { w.Waypoint = byHost("infra", "wp.infra.svc.cluster.local") }),
				iwl("c", "10.244.1.4", func(w *workloadapi.Workload) { w.Waypoint = &workloadapi.GatewayAddress{} }),
				iwl("d", "10.244.1.5", func(w *workloadapi.Workload) { w.Waypoint = byAddr("10.96.9.9") }),
				isvc("infra", "wp.infra.svc.cluster.local", "10.96.0.20"),
				isvc("default", "echo.default.svc.cluster.local", "10.96.0.10", func(s *workloadapi.Service) {
					s.Waypoint = byHost("default", "ghost.default.svc.cluster.local")
				}),
			},
			check: func(t *testing.T, s Snapshot, warnings []string) {
				for _, n := range []string{"a", "b", "c", "d"} {
					if w := workloadOf(t, s, uidOf(n)); !w.WaypointUnusable || w.Waypoint != "" {
						t.Errorf("%s: %+v, want its waypoint unusable", n, w)
					}
				}
				if sv := serviceOf(t, s, "default", "echo.default.svc.cluster.local"); !sv.WaypointUnusable {
					t.Errorf("service %+v, want its waypoint unusable", sv)
				}
				warned(t, warnings, "another namespace")
				warned(t, warnings, "ghost")
			},
		},
		{
			name: "trust domain: empty is cluster.local, else the majority",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", func(w *workloadapi.Workload) { w.TrustDomain = "corp.example" }),
				iwl("b", "10.244.1.3", func(w *workloadapi.Workload) { w.TrustDomain = "corp.example" }),
				iwl("c", "10.244.1.4"),
			},
			check: func(t *testing.T, s Snapshot, warnings []string) {
				if s.TrustDomain != "corp.example" {
					t.Errorf("trust domain %q", s.TrustDomain)
				}
				warned(t, warnings, uidOf("c"))
			},
		},
		{
			name:  "trust domain of an empty mesh",
			addrs: nil,
			check: func(t *testing.T, s Snapshot, _ []string) {
				if s.TrustDomain != DefaultIstioTrustDomain {
					t.Errorf("trust domain %q", s.TrustDomain)
				}
			},
		},
		{
			name: "headless service left out once",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", inService("default/db.default.svc.cluster.local", [2]uint32{5432, 5432})),
				isvc("default", "db.default.svc.cluster.local", ""),
			},
			check: func(t *testing.T, s Snapshot, warnings []string) {
				if len(s.Services) != 0 {
					t.Errorf("services %+v", s.Services)
				}
				if len(warnings) != 1 {
					t.Errorf("warnings %q, want one about the headless service", warnings)
				}
			},
		},
		{
			name: "workloads sharing an address",
			addrs: []*workloadapi.Address{
				iwl("etcd", "172.18.0.2", func(w *workloadapi.Workload) {
					w.TunnelProtocol, w.NetworkMode = workloadapi.TunnelProtocol_NONE, workloadapi.NetworkMode_HOST_NETWORK
				}),
				&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
					Uid: "Kubernetes/discovery.k8s.io/EndpointSlice/default/kubernetes/172.18.0.2", Name: "kubernetes", Namespace: "default",
					Addresses: [][]byte{raw("172.18.0.2")}, Services: map[string]*workloadapi.PortList{
						"default/kubernetes.default.svc.cluster.local": {Ports: []*workloadapi.Port{{ServicePort: 443, TargetPort: 6443}}}},
				}}},
				isvc("default", "kubernetes.default.svc.cluster.local", "10.96.0.1", func(s *workloadapi.Service) {
					s.Ports = []*workloadapi.Port{{ServicePort: 443, TargetPort: 6443}}
				}),
			},
			check: func(t *testing.T, s Snapshot, warnings []string) {
				if len(s.Workloads) != 1 {
					t.Fatalf("workloads %+v, want one per address", s.Workloads)
				}
				kept := s.Workloads[0].UID
				if !strings.Contains(kept, "EndpointSlice") {
					t.Errorf("kept %q, want the pod-network one", kept)
				}
				if ep := serviceOf(t, s, "default", "kubernetes.default.svc.cluster.local").Endpoints; !reflect.DeepEqual(ep, []string{kept}) {
					t.Errorf("endpoints %q", ep)
				}
				warned(t, warnings, "share 172.18.0.2")
			},
		},
		{
			name: "authorization scopes",
			addrs: []*workloadapi.Address{
				iwl("a", "10.244.1.2", func(w *workloadapi.Workload) {
					w.AuthorizationPolicies = []string{"default/sel", "istio-system/root-sel"}
				}),
				iwl("x", "10.244.1.3", func(w *workloadapi.Workload) {
					w.Namespace, w.Uid = "prod", "Kubernetes//Pod/prod/x"
					w.AuthorizationPolicies = []string{"istio-system/root-sel"}
				}),
			},
			auths: []*security.Authorization{
				auth("istio-system", "mesh", security.Scope_GLOBAL, security.Action_DENY, &security.Match{Namespaces: []*security.StringMatch{exact("evil")}}),
				auth("default", "ns", security.Scope_NAMESPACE, security.Action_ALLOW, &security.Match{}),
				auth("default", "sel", security.Scope_WORKLOAD_SELECTOR, security.Action_ALLOW, &security.Match{}),
				auth("istio-system", "root-sel", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY, &security.Match{}),
				auth("default", "nobody", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY, &security.Match{}),
			},
			check: func(t *testing.T, s Snapshot, _ []string) {
				if p := policyOf(t, s, "istio-system", "mesh"); !p.AnyNamespace || p.Workloads != nil || p.Action != ActionDeny {
					t.Errorf("GLOBAL: %+v", p)
				}
				if p := policyOf(t, s, "default", "ns"); p.AnyNamespace || p.Workloads != nil || p.Action != ActionAllow {
					t.Errorf("NAMESPACE: %+v", p)
				}
				if p := policyOf(t, s, "default", "sel"); !reflect.DeepEqual(p.Workloads, []string{uidOf("a")}) {
					t.Errorf("WORKLOAD_SELECTOR: %+v", p)
				}
				p := policyOf(t, s, "istio-system", "root-sel")
				if !p.AnyNamespace || !reflect.DeepEqual(p.Workloads, []string{uidOf("a"), "Kubernetes//Pod/prod/x"}) {
					t.Errorf("root WORKLOAD_SELECTOR: %+v", p)
				}
				if !p.Selects(&Workload{UID: "Kubernetes//Pod/prod/x", Namespace: "prod"}) {
					t.Errorf("root WORKLOAD_SELECTOR does not select the workload of another namespace")
				}
				for _, p := range s.Policies {
					if p.Name == "nobody" {
						t.Errorf("a selector policy no workload lists was kept: %+v (it would select everything)", p)
					}
				}
			},
		},
		{
			name: "matches: principals get spiffe://, the rest as sent",
			auths: []*security.Authorization{auth("default", "m", security.Scope_NAMESPACE, security.Action_ALLOW, &security.Match{
				Principals: []*security.StringMatch{exact("cluster.local/ns/default/sa/a"),
					{MatchType: &security.StringMatch_Prefix{Prefix: "cluster.local/ns/prod/"}},
					{MatchType: &security.StringMatch_Suffix{Suffix: "/sa/b"}}, presence()},
				NotPrincipals:       []*security.StringMatch{exact("cluster.local/ns/default/sa/evil")},
				Namespaces:          []*security.StringMatch{exact("default")},
				NotNamespaces:       []*security.StringMatch{{MatchType: &security.StringMatch_Prefix{Prefix: "kube-"}}},
				ServiceAccounts:     []*security.ServiceAccountMatch{{Namespace: "default", ServiceAccount: "a"}},
				SourceIps:           []*security.Address{{Address: raw("10.244.0.0"), Length: 16}},
				NotSourceIps:        []*security.Address{{Address: raw("::ffff:192.0.2.0"), Length: 120}},
				DestinationIps:      []*security.Address{{Address: raw("10.244.1.2"), Length: 32}},
				NotDestinationIps:   []*security.Address{{Address: raw("fd00::"), Length: 8}},
				DestinationPorts:    []uint32{8080},
				NotDestinationPorts: []uint32{9090},
			})},
			check: func(t *testing.T, s Snapshot, _ []string) {
				want := Match{
					Principals: []StringMatch{{Exact: "spiffe://cluster.local/ns/default/sa/a"},
						{Prefix: "spiffe://cluster.local/ns/prod/"}, {Suffix: "/sa/b"}, {Presence: true}},
					NotPrincipals:       []StringMatch{{Exact: "spiffe://cluster.local/ns/default/sa/evil"}},
					Namespaces:          []StringMatch{{Exact: "default"}},
					NotNamespaces:       []StringMatch{{Prefix: "kube-"}},
					ServiceAccounts:     []ServiceAccountMatch{{"default", "a"}},
					SourceIPs:           []string{"10.244.0.0/16"},
					NotSourceIPs:        []string{"192.0.2.0/24"},
					DestinationIPs:      []string{"10.244.1.2/32"},
					NotDestinationIPs:   []string{"fd00::/8"},
					DestinationPorts:    []int{8080},
					NotDestinationPorts: []int{9090},
				}
				p := policyOf(t, s, "default", "m")
				if len(p.Rules) != 1 || len(p.Rules[0].Clauses) != 1 || len(p.Rules[0].Clauses[0].Matches) != 1 {
					t.Fatalf("structure %+v", p.Rules)
				}
				if got := p.Rules[0].Clauses[0].Matches[0]; !reflect.DeepEqual(got, want) {
					t.Errorf("match\n got %+v\nwant %+v", got, want)
				}
			},
		},
		{
			name: "groups, rules and matches keep their structure and meaning",
			// An AuthorizationPolicy rule "from namespace default, to port
			// 8080" arrives as one group with two rules.
			auths: []*security.Authorization{{Name: "r", Namespace: "default", Scope: security.Scope_NAMESPACE, Action: security.Action_ALLOW,
				Groups: []*security.Group{
					{Rules: []*security.Rules{
						{Matches: []*security.Match{{DestinationPorts: []uint32{8080}}}},
						{Matches: []*security.Match{{Namespaces: []*security.StringMatch{exact("default")}}, {Namespaces: []*security.StringMatch{exact("web")}}}},
					}},
					{Rules: []*security.Rules{{Matches: []*security.Match{{Principals: []*security.StringMatch{exact("cluster.local/ns/ops/sa/admin")}}}}}},
				}}},
			check: func(t *testing.T, s Snapshot, _ []string) {
				p := policyOf(t, s, "default", "r")
				for _, c := range []struct {
					conn Conn
					want bool
				}{
					{Conn{Peer: idA, DstPort: 8080}, true},
					{Conn{Peer: "spiffe://cluster.local/ns/web/sa/w", DstPort: 8080}, true},
					{Conn{Peer: idA, DstPort: 9090}, false},
					{Conn{Peer: idX, DstPort: 8080}, false},
					{Conn{Peer: "spiffe://cluster.local/ns/ops/sa/admin", DstPort: 9090}, true},
				} {
					if got := p.Matches(c.conn); got != c.want {
						t.Errorf("%+v: Matches = %v, want %v", c.conn, got, c.want)
					}
				}
			},
		},
		{
			name: "STRICT as istiod converts it denies the unauthenticated",
			addrs: []*workloadapi.Address{iwl("a", "10.244.1.2", func(w *workloadapi.Workload) {
				w.AuthorizationPolicies = []string{"istio-system/istio_converted_static_strict"}
			})},
			auths: []*security.Authorization{staticStrict()},
			check: func(t *testing.T, s Snapshot, _ []string) {
				want := Policy{Name: "istio_converted_static_strict", Namespace: "istio-system", Action: ActionDeny,
					AnyNamespace: true, Workloads: []string{uidOf("a")},
					Rules: []Rule{{Clauses: []Clause{{Matches: []Match{{NotPrincipals: []StringMatch{{Presence: true}}}}}}}}}
				p := policyOf(t, s, "istio-system", "istio_converted_static_strict")
				if !reflect.DeepEqual(p, want) {
					t.Fatalf("policy\n got %+v\nwant %+v", p, want)
				}
				w := workloadOf(t, s, uidOf("a"))
				if !p.Selects(&w) || !p.Matches(Conn{DstPort: 8080}) || p.Matches(Conn{Peer: idA, DstPort: 8080}) {
					t.Errorf("STRICT: selects %v, plaintext denied %v, mTLS denied %v", p.Selects(&w), p.Matches(Conn{}), p.Matches(Conn{Peer: idA}))
				}
			},
		},
		{
			name: "dry run and extensions",
			auths: []*security.Authorization{
				{Name: "dry", Namespace: "default", Action: security.Action_DENY, Scope: security.Scope_NAMESPACE, DryRun: true},
				{Name: "ext-allow", Namespace: "default", Action: security.Action_ALLOW, Scope: security.Scope_NAMESPACE,
					Extensions: []*workloadapi.Extension{{Name: "x"}}, Groups: []*security.Group{{}}},
				{Name: "ext-deny", Namespace: "default", Action: security.Action_DENY, Scope: security.Scope_NAMESPACE,
					Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{DestinationPorts: []uint32{22}, Extensions: []*workloadapi.Extension{{Name: "x"}}}}}}}}},
			},
			check: func(t *testing.T, s Snapshot, warnings []string) {
				for _, p := range s.Policies {
					if p.Name == "dry" {
						t.Errorf("dry-run policy enforced: %+v", p)
					}
				}
				if p := policyOf(t, s, "default", "ext-allow"); p.Matches(Conn{Peer: idA, DstPort: 80}) {
					t.Errorf("ALLOW with an unreadable extension matches: %+v", p)
				}
				if p := policyOf(t, s, "default", "ext-deny"); !p.Matches(Conn{Peer: idA, DstPort: 22}) {
					t.Errorf("DENY with an unreadable extension does not match what it names: %+v", p)
				}
				warned(t, warnings, "dry run")
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, warnings, err := FromIstio(c.addrs, c.auths)
			if err != nil {
				t.Fatalf("FromIstio: %v", err)
			}
			if err := s.Validate(); err != nil {
				t.Fatalf("result does not validate: %v", err)
			}
			c.check(t, s, warnings)
		})
	}
}

func TestFromIstioRejectsMalformedInput(t *testing.T) {
	good := func() []*workloadapi.Address {
		return []*workloadapi.Address{iwl("a", "10.244.1.2"), isvc("default", "echo.default.svc.cluster.local", "10.96.0.10")}
	}
	wmod := func(f func(*workloadapi.Workload)) []*workloadapi.Address {
		a := good()
		f(a[0].GetWorkload())
		return a
	}
	amod := func(f func(*security.Authorization)) []*security.Authorization {
		a := auth("default", "p", security.Scope_NAMESPACE, security.Action_ALLOW, &security.Match{})
		f(a)
		return []*security.Authorization{a}
	}
	match := func(m *security.Match) []*security.Authorization {
		return []*security.Authorization{auth("default", "p", security.Scope_NAMESPACE, security.Action_ALLOW, m)}
	}
	cases := []struct {
		name  string
		addrs []*workloadapi.Address
		auths []*security.Authorization
		want  string
	}{
		{"nil address", append(good(), nil), nil, "neither"},
		{"address of no type", append(good(), &workloadapi.Address{}), nil, "neither"},
		{"workload without uid", wmod(func(w *workloadapi.Workload) { w.Uid = "" }), nil, "empty uid"},
		{"duplicate uid", append(good(), iwl("a", "10.244.1.3")), nil, "duplicate uid"},
		{"address of 5 bytes", wmod(func(w *workloadapi.Workload) { w.Addresses = [][]byte{{1, 2, 3, 4, 5}} }), nil, "5 bytes"},
		{"unknown tunnel protocol", wmod(func(w *workloadapi.Workload) { w.TunnelProtocol = 7 }), nil, "tunnel protocol"},
		{"unknown status", wmod(func(w *workloadapi.Workload) { w.Status = 9 }), nil, "status"},
		{"HBONE without service account", wmod(func(w *workloadapi.Workload) { w.ServiceAccount = "" }), nil, "serviceAccount"},
		{"workload port out of range", wmod(inService(echoKey, [2]uint32{80, 70000})), nil, "port"},
		{"service without hostname", append(good(), isvc("default", "", "10.96.0.11")), nil, "hostname"},
		{"service port 0", append(good(), isvc("default", "x.default.svc.cluster.local", "10.96.0.11", func(s *workloadapi.Service) {
			s.Ports[0].ServicePort = 0
		})), nil, "port"},
		{"service address of 3 bytes", append(good(), isvc("default", "x.default.svc.cluster.local", "10.96.0.11", func(s *workloadapi.Service) {
			s.Addresses[0].Address = []byte{1, 2, 3}
		})), nil, "3 bytes"},
		{"nil authorization", good(), []*security.Authorization{nil}, "empty"},
		{"authorization without name", good(), amod(func(a *security.Authorization) { a.Name = "" }), "empty namespace or name"},
		{"unknown action", good(), amod(func(a *security.Authorization) { a.Action = 5 }), "action"},
		{"unknown scope", good(), amod(func(a *security.Authorization) { a.Scope = 5 }), "scope"},
		{"string match without kind", good(), match(&security.Match{Principals: []*security.StringMatch{{}}}), "without a kind"},
		{"empty exact namespace", good(), match(&security.Match{Namespaces: []*security.StringMatch{exact("")}}), "empty exact"},
		{"empty service account", good(), match(&security.Match{ServiceAccounts: []*security.ServiceAccountMatch{{Namespace: "default"}}}), "service account"},
		{"prefix too long", good(), match(&security.Match{SourceIps: []*security.Address{{Address: raw("10.0.0.0"), Length: 33}}}), "prefix length"},
		{"bad ip bytes", good(), match(&security.Match{DestinationIps: []*security.Address{{Address: []byte{10}, Length: 8}}}), "1 bytes"},
		{"port out of range", good(), match(&security.Match{DestinationPorts: []uint32{65536}}), "port"},
	}
	for _, c := range cases {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: panic %v", c.name, r)
				}
			}()
			_, _, err := FromIstio(c.addrs, c.auths)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("%s: err = %v, want one line containing %q", c.name, err, c.want)
			}
		}()
	}
}

// TestFromIstioIsDeterministic: the same resources in another order give
// the same snapshot and warnings, so a reconnection that resends them does
// not look like a change.
func TestFromIstioIsDeterministic(t *testing.T) {
	addrs := []*workloadapi.Address{
		iwl("a", "10.244.1.2", inService(echoKey, [2]uint32{80, 8080})),
		iwl("b", "10.244.1.3", inService(echoKey, [2]uint32{80, 8080}), func(w *workloadapi.Workload) { w.TrustDomain = "other" }),
		iwl("c", "10.244.1.4", inService(echoKey, [2]uint32{80, 8080})),
		isvc("default", "echo.default.svc.cluster.local", "10.96.0.10"),
		isvc("default", "dup.default.svc.cluster.local", "10.96.0.10"),
	}
	auths := []*security.Authorization{staticStrict(), auth("default", "x", security.Scope_NAMESPACE, security.Action_ALLOW)}
	s1, w1, err := FromIstio(addrs, auths)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(addrs)
	slices.Reverse(auths)
	s2, w2, err := FromIstio(addrs, auths)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s1, s2) || !reflect.DeepEqual(w1, w2) {
		t.Errorf("order matters:\n%+v %q\n%+v %q", s1, w1, s2, w2)
	}
}
