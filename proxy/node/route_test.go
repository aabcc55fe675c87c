package node

import (
	"net/netip"
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
