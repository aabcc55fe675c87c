package node

import (
	"net/netip"
	"strings"
	"testing"

	"blastradius.dev/blastradius/proxy/xds"
)

func snap() xds.Snapshot {
	return xds.Snapshot{
		TrustDomain: "cluster.local",
		Workloads: []xds.Workload{
			{UID: "default/a", Name: "a", Namespace: "default", ServiceAccount: "a", IP: "10.244.1.2", Protocol: xds.ProtocolHBONE},
			{UID: "default/b", Name: "b", Namespace: "default", ServiceAccount: "b", IP: "10.244.2.2", Protocol: xds.ProtocolHBONE},
			{UID: "default/c", Name: "c", Namespace: "default", ServiceAccount: "c", IP: "10.244.3.2", Protocol: xds.ProtocolTCP},
			{UID: "default/wp-0", Name: "wp-0", Namespace: "default", ServiceAccount: "waypoint", IP: "10.244.1.9", Protocol: xds.ProtocolHBONE},
			{UID: "default/d", Name: "d", Namespace: "default", ServiceAccount: "d", IP: "10.244.3.3", Protocol: xds.ProtocolHBONE, Waypoint: "wp"},
		},
		Services: []xds.Service{
			{Name: "svc-b", Namespace: "default", VIP: "10.96.0.10", Ports: []xds.Port{{Port: 80, TargetPort: 8080}}, Endpoints: []string{"default/b"}},
			{Name: "svc-c", Namespace: "default", VIP: "10.96.0.11", Ports: []xds.Port{{Port: 80, TargetPort: 8080}}, Endpoints: []string{"default/c"}},
			{Name: "svc-w", Namespace: "default", VIP: "10.96.0.12", Ports: []xds.Port{{Port: 80, TargetPort: 8080}}, Endpoints: []string{"default/b"}, Waypoint: "wp"},
			{Name: "wp", Namespace: "default", VIP: "10.96.0.13", Ports: []xds.Port{{Port: 15008, TargetPort: 15008}}, Endpoints: []string{"default/wp-0"}},
			{Name: "empty", Namespace: "default", VIP: "10.96.0.14", Ports: []xds.Port{{Port: 80, TargetPort: 8080}}},
		},
	}
}

func TestResolve(t *testing.T) {
	ix := NewIndex(snap())
	src, _ := ix.Workload("default/a")
	first := func(int) int { return 0 }
	cases := []struct {
		dst                         string
		kind, dial, authority, peer string
		err                         bool
	}{
		{"10.96.0.10:80", RouteHBONE, "10.244.2.2:15008", "10.244.2.2:8080", "spiffe://cluster.local/ns/default/sa/b", false},
		{"10.244.2.2:8080", RouteHBONE, "10.244.2.2:15008", "10.244.2.2:8080", "spiffe://cluster.local/ns/default/sa/b", false},
		{"10.96.0.11:80", RoutePlain, "10.244.3.2:8080", "", "", false},
		{"10.96.0.12:80", RouteWaypoint, "10.244.1.9:15008", "10.96.0.12:80", "spiffe://cluster.local/ns/default/sa/waypoint", false},
		{"10.244.3.3:8080", RouteWaypoint, "10.244.1.9:15008", "10.244.3.3:8080", "spiffe://cluster.local/ns/default/sa/waypoint", false},
		{"192.0.2.1:443", RoutePassthrough, "192.0.2.1:443", "", "", false},
		{"10.96.0.10:81", "", "", "", "", true},
		{"10.96.0.14:80", "", "", "", "", true},
	}
	for _, c := range cases {
		r, err := ix.Resolve(src, netip.MustParseAddrPort(c.dst), first)
		if (err != nil) != c.err {
			t.Errorf("%s: err %v", c.dst, err)
			continue
		}
		if r.Kind != c.kind || r.Dial != c.dial || r.Authority != c.authority || r.DstIdentity != c.peer {
			t.Errorf("%s: got %+v", c.dst, r)
		}
	}
}

func TestAllowed(t *testing.T) {
	s := snap()
	a := "spiffe://cluster.local/ns/default/sa/a"
	x := "spiffe://cluster.local/ns/default/sa/x"
	cases := []struct {
		name     string
		policies []xds.Policy
		peer     string
		want     bool
	}{
		{"no policy", nil, x, true},
		{"deny matching", []xds.Policy{{Namespace: "default", Workloads: []string{"default/b"}, Action: xds.ActionDeny, Principals: []string{x}}}, x, false},
		{"deny other", []xds.Policy{{Namespace: "default", Workloads: []string{"default/b"}, Action: xds.ActionDeny, Principals: []string{x}}}, a, true},
		{"allow list", []xds.Policy{{Namespace: "default", Action: xds.ActionAllow, Principals: []string{a}}}, x, false},
		{"allow list hit", []xds.Policy{{Namespace: "default", Action: xds.ActionAllow, Principals: []string{a}}}, a, true},
		{"other namespace", []xds.Policy{{Namespace: "prod", Action: xds.ActionDeny, Principals: []string{"*"}}}, a, true},
		{"deny all beats allow", []xds.Policy{{Namespace: "default", Action: xds.ActionAllow, Principals: []string{a}}, {Namespace: "default", Action: xds.ActionDeny, Principals: []string{"*"}}}, a, false},
		// "*" means any authenticated peer: plaintext ("") is not one.
		{"plaintext, no policy", nil, "", true},
		{"plaintext, allow any identity", []xds.Policy{{Namespace: "default", Action: xds.ActionAllow, Principals: []string{"*"}}}, "", false},
		{"identity, allow any identity", []xds.Policy{{Namespace: "default", Action: xds.ActionAllow, Principals: []string{"*"}}}, a, true},
		{"plaintext, deny all", []xds.Policy{{Namespace: "default", Action: xds.ActionDeny, Principals: []string{"*"}}}, "", false},
	}
	for _, c := range cases {
		s.Policies = c.policies
		ix := NewIndex(s)
		b, _ := ix.Workload("default/b")
		if got := ix.Allowed(b, c.peer); got != c.want {
			t.Errorf("%s: Allowed = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestAllowedConnRules: policies with Rules (as translated from istiod)
// are enforced with their full meaning next to the Principals-only ones.
func TestAllowedConnRules(t *testing.T) {
	s := snap()
	a := "spiffe://cluster.local/ns/default/sa/a"
	x := "spiffe://cluster.local/ns/prod/sa/x"
	rule := func(ms ...xds.Match) []xds.Rule {
		return []xds.Rule{{Clauses: []xds.Clause{{Matches: ms}}}}
	}
	strict := xds.Policy{Name: "istio_converted_static_strict", Namespace: "istio-system", Action: xds.ActionDeny,
		AnyNamespace: true, Workloads: []string{"default/b"},
		Rules: rule(xds.Match{NotPrincipals: []xds.StringMatch{{Presence: true}}})}
	onPort := func(action string, ports ...int) xds.Policy {
		return xds.Policy{Name: "ports", Namespace: "default", Action: action, Rules: rule(xds.Match{DestinationPorts: ports})}
	}
	dst := netip.MustParseAddr("10.244.2.2")
	conn := func(peer string, port int) xds.Conn { return xds.Conn{Peer: peer, DstIP: dst, DstPort: port} }
	cases := []struct {
		name     string
		policies []xds.Policy
		c        xds.Conn
		want     bool
	}{
		{"strict, plaintext", []xds.Policy{strict}, conn("", 8080), false},
		{"strict, mTLS", []xds.Policy{strict}, conn(a, 8080), true},
		{"strict elsewhere", []xds.Policy{{Name: "s", Namespace: "istio-system", Action: xds.ActionDeny, AnyNamespace: true,
			Workloads: []string{"default/c"}, Rules: strict.Rules}}, conn("", 8080), true},
		{"allow port, hit", []xds.Policy{onPort(xds.ActionAllow, 8080)}, conn(a, 8080), true},
		{"allow port, miss", []xds.Policy{onPort(xds.ActionAllow, 8080)}, conn(a, 9090), false},
		{"deny port", []xds.Policy{onPort(xds.ActionDeny, 9090)}, conn(a, 9090), false},
		{"deny port, other", []xds.Policy{onPort(xds.ActionDeny, 9090)}, conn(a, 8080), true},
		{"deny namespace", []xds.Policy{{Name: "ns", Namespace: "default", Action: xds.ActionDeny,
			Rules: rule(xds.Match{Namespaces: []xds.StringMatch{{Exact: "prod"}}})}}, conn(x, 8080), false},
		{"global deny from istio-system", []xds.Policy{{Name: "g", Namespace: "istio-system", Action: xds.ActionDeny, AnyNamespace: true,
			Rules: rule(xds.Match{Principals: []xds.StringMatch{{Exact: x}}})}}, conn(x, 8080), false},
		{"namespace-bound policy of istio-system", []xds.Policy{{Name: "g", Namespace: "istio-system", Action: xds.ActionDeny,
			Rules: rule(xds.Match{Principals: []xds.StringMatch{{Exact: x}}})}}, conn(x, 8080), true},
		{"allow not from prod", []xds.Policy{{Name: "np", Namespace: "default", Action: xds.ActionAllow,
			Rules: rule(xds.Match{NotNamespaces: []xds.StringMatch{{Exact: "prod"}}})}}, conn(x, 8080), false},
		{"allow rules or legacy principals", []xds.Policy{onPort(xds.ActionAllow, 1), {Name: "l", Namespace: "default",
			Action: xds.ActionAllow, Principals: []string{a}}}, conn(a, 8080), true},
		{"deny source range, source unknown", []xds.Policy{{Name: "src", Namespace: "default", Action: xds.ActionDeny,
			Rules: rule(xds.Match{SourceIPs: []string{"192.0.2.0/24"}})}}, conn(a, 8080), false},
		{"deny source range, source known", []xds.Policy{{Name: "src", Namespace: "default", Action: xds.ActionDeny,
			Rules: rule(xds.Match{SourceIPs: []string{"192.0.2.0/24"}})}}, xds.Conn{SrcIP: netip.MustParseAddr("10.244.1.2"), DstIP: dst, DstPort: 8080}, true},
	}
	for _, c := range cases {
		s.Policies = c.policies
		if err := s.Validate(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		ix := NewIndex(s)
		b, _ := ix.Workload("default/b")
		if got := ix.AllowedConn(b, c.c); got != c.want {
			t.Errorf("%s: AllowedConn = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestResolveRefusesUnusableWaypoint: a workload or service whose waypoint
// the control plane could not name is not reached around the waypoint.
func TestResolveRefusesUnusableWaypoint(t *testing.T) {
	s := snap()
	s.Workloads[1].WaypointUnusable = true // b
	s.Services[1].WaypointUnusable = true  // svc-c
	ix := NewIndex(s)
	src, _ := ix.Workload("default/a")
	first := func(int) int { return 0 }
	for _, dst := range []string{"10.244.2.2:8080", "10.96.0.11:80"} {
		if r, err := ix.Resolve(src, netip.MustParseAddrPort(dst), first); err == nil || !strings.Contains(err.Error(), "waypoint is unusable") {
			t.Errorf("%s: route %+v, err %v; want refused", dst, r, err)
		}
	}
	// Other destinations are untouched; svc-b's endpoint is b, which is
	// reached through svc-b as before (a workload waypoint governs traffic
	// addressed to the workload).
	for _, dst := range []string{"10.244.3.2:8080", "10.96.0.10:80"} {
		if _, err := ix.Resolve(src, netip.MustParseAddrPort(dst), first); err != nil {
			t.Errorf("%s: %v", dst, err)
		}
	}
}
