package xds

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

const (
	idA = "spiffe://cluster.local/ns/default/sa/a"
	idX = "spiffe://cluster.local/ns/prod/sa/x"
)

// one is a policy of a single rule of a single clause of the given matches.
func one(action string, ms ...Match) Policy {
	return Policy{Name: "p", Namespace: "default", Action: action, Rules: []Rule{{Clauses: []Clause{{Matches: ms}}}}}
}

func TestPolicyMatches(t *testing.T) {
	known := Conn{Peer: idA, SrcIP: netip.MustParseAddr("10.244.1.2"), DstIP: netip.MustParseAddr("10.244.2.2"), DstPort: 8080}
	plain := Conn{SrcIP: netip.MustParseAddr("192.0.2.7"), DstIP: netip.MustParseAddr("10.244.2.2"), DstPort: 8080}
	noSrc := Conn{Peer: idA, DstIP: netip.MustParseAddr("10.244.2.2"), DstPort: 8080}
	ports := func(p ...int) Match { return Match{DestinationPorts: p} }
	cases := []struct {
		name string
		p    Policy
		c    Conn
		want bool
	}{
		// Structure: any rule, every clause, any match.
		{"no rules", Policy{Action: ActionAllow}, known, false},
		{"empty rule matches all", Policy{Action: ActionAllow, Rules: []Rule{{}}}, plain, true},
		{"empty clause matches nothing", Policy{Action: ActionAllow, Rules: []Rule{{Clauses: []Clause{{}}}}}, known, false},
		{"empty match matches all", one(ActionAllow, Match{}), plain, true},
		{"any rule", Policy{Action: ActionAllow, Rules: []Rule{
			{Clauses: []Clause{{Matches: []Match{ports(9090)}}}},
			{Clauses: []Clause{{Matches: []Match{ports(8080)}}}},
		}}, known, true},
		{"every clause: one fails", Policy{Action: ActionAllow, Rules: []Rule{{Clauses: []Clause{
			{Matches: []Match{ports(8080)}},
			{Matches: []Match{{Namespaces: []StringMatch{{Exact: "prod"}}}}},
		}}}}, known, false},
		{"every clause: all hold", Policy{Action: ActionAllow, Rules: []Rule{{Clauses: []Clause{
			{Matches: []Match{ports(8080)}},
			{Matches: []Match{{Namespaces: []StringMatch{{Exact: "default"}}}}},
		}}}}, known, true},
		{"any match in a clause", one(ActionAllow, ports(1), ports(2), ports(8080)), known, true},
		// Within a match: kinds are ANDed, values ORed, negatives exclude.
		{"kinds ANDed", one(ActionAllow, Match{DestinationPorts: []int{8080}, Principals: []StringMatch{{Exact: idX}}}), known, false},
		{"values ORed", one(ActionAllow, Match{Principals: []StringMatch{{Exact: idX}, {Exact: idA}}}), known, true},
		{"negative excludes", one(ActionAllow, Match{DestinationPorts: []int{8080}, NotPrincipals: []StringMatch{{Exact: idA}}}), known, false},
		{"negative other", one(ActionAllow, Match{NotDestinationPorts: []int{9090}}), known, true},
		{"negative same", one(ActionAllow, Match{NotDestinationPorts: []int{8080}}), known, false},
		// String matches on the full SPIFFE ID.
		{"principal prefix", one(ActionAllow, Match{Principals: []StringMatch{{Prefix: "spiffe://cluster.local/ns/default/"}}}), known, true},
		{"principal suffix", one(ActionAllow, Match{Principals: []StringMatch{{Suffix: "/sa/a"}}}), known, true},
		{"principal suffix other", one(ActionAllow, Match{Principals: []StringMatch{{Suffix: "/sa/b"}}}), known, false},
		{"principal presence", one(ActionAllow, Match{Principals: []StringMatch{{Presence: true}}}), known, true},
		{"principal presence, plaintext", one(ActionAllow, Match{Principals: []StringMatch{{Presence: true}}}), plain, false},
		// STRICT as istiod converts it: DENY not_principals presence.
		{"strict denies plaintext", one(ActionDeny, Match{NotPrincipals: []StringMatch{{Presence: true}}}), plain, true},
		{"strict passes identity", one(ActionDeny, Match{NotPrincipals: []StringMatch{{Presence: true}}}), known, false},
		{"namespace from identity", one(ActionAllow, Match{Namespaces: []StringMatch{{Exact: "default"}}}), known, true},
		{"namespace, plaintext", one(ActionAllow, Match{Namespaces: []StringMatch{{Presence: true}}}), plain, false},
		{"not namespace, plaintext", one(ActionDeny, Match{NotNamespaces: []StringMatch{{Exact: "default"}}}), plain, true},
		{"service account", one(ActionAllow, Match{ServiceAccounts: []ServiceAccountMatch{{"default", "a"}}}), known, true},
		{"service account other ns", one(ActionAllow, Match{ServiceAccounts: []ServiceAccountMatch{{"prod", "a"}}}), known, false},
		{"source cidr", one(ActionAllow, Match{SourceIPs: []string{"10.244.0.0/16"}}), known, true},
		{"source cidr miss", one(ActionAllow, Match{SourceIPs: []string{"10.245.0.0/16"}}), known, false},
		{"destination ip", one(ActionAllow, Match{DestinationIPs: []string{"10.244.2.2/32"}}), known, true},
		{"not destination ip", one(ActionAllow, Match{NotDestinationIPs: []string{"10.244.2.2/32"}}), known, false},
		// Unknown attributes are decided against the peer.
		{"allow on unknown source", one(ActionAllow, Match{SourceIPs: []string{"10.244.0.0/16"}}), noSrc, false},
		{"allow on unknown not-source", one(ActionAllow, Match{NotSourceIPs: []string{"192.0.2.0/24"}}), noSrc, false},
		{"deny on unknown source", one(ActionDeny, Match{SourceIPs: []string{"192.0.2.0/24"}}), noSrc, true},
		{"deny on unknown not-source", one(ActionDeny, Match{NotSourceIPs: []string{"10.244.0.0/16"}}), noSrc, true},
		{"deny, known part fails", one(ActionDeny, Match{SourceIPs: []string{"192.0.2.0/24"}, DestinationPorts: []int{1}}), noSrc, false},
		{"unknown port, allow", one(ActionAllow, ports(8080)), Conn{Peer: idA}, false},
		{"unknown port, deny", one(ActionDeny, ports(8080)), Conn{Peer: idA}, true},
		// The original Principals keep their meaning, and OR with rules.
		{"legacy exact", Policy{Action: ActionAllow, Principals: []string{idA}}, known, true},
		{"legacy star, plaintext allow", Policy{Action: ActionAllow, Principals: []string{"*"}}, plain, false},
		{"legacy star, plaintext deny", Policy{Action: ActionDeny, Principals: []string{"*"}}, plain, true},
		{"legacy or rules", Policy{Action: ActionAllow, Principals: []string{idX}, Rules: []Rule{{Clauses: []Clause{{Matches: []Match{ports(8080)}}}}}}, known, true},
	}
	for _, c := range cases {
		if got := c.p.Matches(c.c); got != c.want {
			t.Errorf("%s: Matches = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestPolicySelects(t *testing.T) {
	a := &Workload{UID: "default/a", Namespace: "default"}
	x := &Workload{UID: "prod/x", Namespace: "prod"}
	cases := []struct {
		name   string
		p      Policy
		w      *Workload
		expect bool
	}{
		{"namespace", Policy{Namespace: "default"}, a, true},
		{"other namespace", Policy{Namespace: "default"}, x, false},
		{"listed, same namespace", Policy{Namespace: "default", Workloads: []string{"default/a"}}, a, true},
		{"listed, namespace bound", Policy{Namespace: "istio-system", Workloads: []string{"prod/x"}}, x, false},
		{"listed, any namespace", Policy{Namespace: "istio-system", AnyNamespace: true, Workloads: []string{"prod/x"}}, x, true},
		{"not listed, any namespace", Policy{Namespace: "istio-system", AnyNamespace: true, Workloads: []string{"prod/x"}}, a, false},
		{"global", Policy{Namespace: "istio-system", AnyNamespace: true}, a, true},
	}
	for _, c := range cases {
		if got := c.p.Selects(c.w); got != c.expect {
			t.Errorf("%s: Selects = %v, want %v", c.name, got, c.expect)
		}
	}
}

func TestValidateRules(t *testing.T) {
	good := snapshot(1)
	good.Policies = []Policy{one(ActionDeny, Match{
		NotPrincipals: []StringMatch{{Presence: true}}, Namespaces: []StringMatch{{Prefix: "d"}},
		ServiceAccounts: []ServiceAccountMatch{{"default", "a"}}, SourceIPs: []string{"10.0.0.0/8"},
		NotDestinationIPs: []string{"fd00::/8"}, DestinationPorts: []int{80},
	})}
	if err := good.Validate(); err != nil {
		t.Fatalf("good: %v", err)
	}
	for _, c := range []struct {
		name string
		m    Match
		want string
	}{
		{"string match of no kind", Match{Principals: []StringMatch{{}}}, "exactly one"},
		{"string match of two kinds", Match{Namespaces: []StringMatch{{Exact: "a", Presence: true}}}, "exactly one"},
		{"empty service account", Match{NotServiceAccounts: []ServiceAccountMatch{{Namespace: "default"}}}, "service account"},
		{"bad cidr", Match{SourceIPs: []string{"10.0.0.1"}}, "CIDR"},
		{"mapped cidr", Match{DestinationIPs: []string{"::ffff:10.0.0.0/104"}}, "IPv4-mapped"},
		{"bad port", Match{NotDestinationPorts: []int{70000}}, "port"},
	} {
		s := snapshot(1)
		s.Policies = []Policy{one(ActionAllow, c.m)}
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("%s: Validate = %v, want one line containing %q", c.name, err, c.want)
		}
	}
}

// TestRulesSurviveTheJSONProtocol: the reference control plane's protocol
// carries the new fields unchanged, empty and absent lists included (the
// client fuzzer compares re-encoded messages exactly).
func TestRulesSurviveTheJSONProtocol(t *testing.T) {
	s := snapshot(1)
	s.Workloads[0].WaypointUnusable = true
	s.Policies = append(s.Policies,
		Policy{Name: "strict", Namespace: "istio-system", Action: ActionDeny, AnyNamespace: true, Workloads: []string{"default/server-0"},
			Rules: []Rule{{Clauses: []Clause{{Matches: []Match{{NotPrincipals: []StringMatch{{Presence: true}}, DestinationPorts: []int{}}}}}}}},
		Policy{Name: "empty", Namespace: "default", Action: ActionAllow, Rules: []Rule{}},
		Policy{Name: "clauseless", Namespace: "default", Action: ActionAllow, Rules: []Rule{{}}})
	in := DiscoveryResponse{Version: "v1", Nonce: "1", Snapshot: s}
	b, err := Codec{}.Marshal(&in)
	if err != nil {
		t.Fatal(err)
	}
	var out DiscoveryResponse
	if err := (Codec{}).Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip of %s:\n got %+v\nwant %+v", b, out, in)
	}
}
