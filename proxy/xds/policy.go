package xds

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Rule is one alternative of a policy: it matches when every one of its
// Clauses matches. A policy matches when any of its Rules does (or its
// Principals do, see Policy). A Rule without clauses matches every
// connection: it is how "rules: [{}]" (allow or deny everything selected)
// arrives.
type Rule struct {
	Clauses []Clause `json:"clauses"`
}

// Clause matches when any of its Matches does; a clause without matches
// matches nothing.
type Clause struct {
	Matches []Match `json:"matches"`
}

// Match is one condition on a connection. Each kind of attribute it lists
// is a separate requirement: the attribute must match one of the positive
// values (when there are any) and none of the negative ones. A Match that
// lists nothing matches every connection.
type Match struct {
	// Principals are matched against the peer's full SPIFFE ID
	// (spiffe://<td>/ns/<ns>/sa/<sa>). A plaintext peer has no principal:
	// it matches no positive value and no negative one, so
	// NotPrincipals [{presence}] is "deny the unauthenticated".
	Principals    []StringMatch `json:"principals,omitzero"`
	NotPrincipals []StringMatch `json:"notPrincipals,omitzero"`
	// Namespaces are matched against the namespace in the peer's identity.
	Namespaces    []StringMatch `json:"namespaces,omitzero"`
	NotNamespaces []StringMatch `json:"notNamespaces,omitzero"`
	// ServiceAccounts match the namespace and service account of the peer's
	// identity, both exactly.
	ServiceAccounts    []ServiceAccountMatch `json:"serviceAccounts,omitzero"`
	NotServiceAccounts []ServiceAccountMatch `json:"notServiceAccounts,omitzero"`
	// SourceIPs and DestinationIPs are CIDR prefixes ("10.0.0.0/8",
	// "10.0.0.1/32").
	SourceIPs         []string `json:"sourceIPs,omitzero"`
	NotSourceIPs      []string `json:"notSourceIPs,omitzero"`
	DestinationIPs    []string `json:"destinationIPs,omitzero"`
	NotDestinationIPs []string `json:"notDestinationIPs,omitzero"`
	// DestinationPorts are the ports the destination workload is reached
	// on (after a service's port mapping).
	DestinationPorts    []int `json:"destinationPorts,omitzero"`
	NotDestinationPorts []int `json:"notDestinationPorts,omitzero"`
}

// StringMatch matches a string in exactly one way.
type StringMatch struct {
	Exact    string `json:"exact,omitempty"`
	Prefix   string `json:"prefix,omitempty"`
	Suffix   string `json:"suffix,omitempty"`
	Presence bool   `json:"presence,omitempty"` // any non-empty value
}

// ServiceAccountMatch names one service account.
type ServiceAccountMatch struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"serviceAccount"`
}

// Conn is what a policy is evaluated against. Attributes the enforcing
// proxy cannot know at that point are left zero (see Policy.Matches).
type Conn struct {
	Peer    string     // verified SPIFFE ID of the source; "" = plaintext
	SrcIP   netip.Addr // source address; zero = unknown
	DstIP   netip.Addr // destination workload address; zero = unknown
	DstPort int        // destination workload port; 0 = unknown
}

// Selects reports whether p applies to workload w.
func (p *Policy) Selects(w *Workload) bool {
	if !p.AnyNamespace && p.Namespace != w.Namespace {
		return false
	}
	return len(p.Workloads) == 0 || slices.Contains(p.Workloads, w.UID)
}

// Matches reports whether p matches c: its Principals do (the original
// form, kept with its exact meaning) or any of its Rules does.
//
// An attribute c lacks (an HBONE proxy does not learn the client's source
// address, for instance) is resolved against the policy, never in the
// peer's favour: a DENY matches when it could match whatever the value
// is, an ALLOW only when it matches whatever the value is.
func (p *Policy) Matches(c Conn) bool {
	for _, pr := range p.Principals {
		// "*" is any authenticated peer: a plaintext peer ("") must not
		// pass an ALLOW "*" (that would make mTLS optional wherever a
		// policy says "any mesh identity"). A DENY "*" still stops it:
		// failing closed, a deny-all policy denies everyone.
		if pr == c.Peer || pr == "*" && (c.Peer != "" || p.Action == ActionDeny) {
			return true
		}
	}
	assume := p.Action == ActionDeny
	for i := range p.Rules {
		if p.Rules[i].matches(c, assume) {
			return true
		}
	}
	return false
}

func (r *Rule) matches(c Conn, assume bool) bool {
	for i := range r.Clauses {
		if !r.Clauses[i].matches(c, assume) {
			return false
		}
	}
	return true
}

func (cl *Clause) matches(c Conn, assume bool) bool {
	for i := range cl.Matches {
		if cl.Matches[i].matches(c, assume) {
			return true
		}
	}
	return false
}

// matches evaluates m; assume is the answer for an unknown attribute in a
// positive list (and its negation the answer in a negative list), which
// makes the result an upper bound (assume = true) or a lower bound
// (assume = false) over the attribute's possible values.
func (m *Match) matches(c Conn, assume bool) bool {
	ns, sa := identityParts(c.Peer)
	str := func(v string) func(StringMatch) bool {
		return func(s StringMatch) bool { return v != "" && s.matches(v) }
	}
	return attr(m.Principals, m.NotPrincipals, true, assume, str(c.Peer)) &&
		attr(m.Namespaces, m.NotNamespaces, true, assume, str(ns)) &&
		attr(m.ServiceAccounts, m.NotServiceAccounts, true, assume, func(s ServiceAccountMatch) bool {
			return ns != "" && s.Namespace == ns && s.ServiceAccount == sa
		}) &&
		attr(m.SourceIPs, m.NotSourceIPs, c.SrcIP.IsValid(), assume, func(p string) bool { return prefixContains(p, c.SrcIP) }) &&
		attr(m.DestinationIPs, m.NotDestinationIPs, c.DstIP.IsValid(), assume, func(p string) bool { return prefixContains(p, c.DstIP) }) &&
		attr(m.DestinationPorts, m.NotDestinationPorts, c.DstPort > 0, assume, func(p int) bool { return p == c.DstPort })
}

// attr is one attribute's requirement: a positive value matches (or there
// are none) and no negative one does.
func attr[T any](pos, neg []T, known, assume bool, f func(T) bool) bool {
	if !known {
		return (len(pos) == 0 || assume) && (len(neg) == 0 || assume)
	}
	return (len(pos) == 0 || slices.ContainsFunc(pos, f)) && !slices.ContainsFunc(neg, f)
}

func (s StringMatch) matches(v string) bool {
	switch {
	case s.Presence:
		return v != ""
	case s.Prefix != "":
		return strings.HasPrefix(v, s.Prefix)
	case s.Suffix != "":
		return strings.HasSuffix(v, s.Suffix)
	default:
		return v == s.Exact
	}
}

func prefixContains(s string, ip netip.Addr) bool {
	p, err := netip.ParsePrefix(s)
	return err == nil && p.Contains(ip.Unmap())
}

// identityParts returns the namespace and service account of a SPIFFE ID
// spiffe://<td>/ns/<ns>/sa/<sa>, or empty strings for anything else.
func identityParts(id string) (ns, sa string) {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", ""
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" || parts[2] == "" || parts[4] == "" {
		return "", ""
	}
	return parts[2], parts[4]
}

// validateRules reports the first malformed condition: a proxy that
// cannot read a condition must not guess what it meant.
func validateRules(rules []Rule) error {
	for i, r := range rules {
		for j, cl := range r.Clauses {
			for k, m := range cl.Matches {
				if err := m.validate(); err != nil {
					return fmt.Errorf("rule %d clause %d match %d: %v", i, j, k, err)
				}
			}
		}
	}
	return nil
}

func (m *Match) validate() error {
	for _, l := range []struct {
		name string
		v    []StringMatch
	}{{"principals", m.Principals}, {"notPrincipals", m.NotPrincipals}, {"namespaces", m.Namespaces}, {"notNamespaces", m.NotNamespaces}} {
		for _, s := range l.v {
			n := 0
			for _, set := range []bool{s.Exact != "", s.Prefix != "", s.Suffix != "", s.Presence} {
				if set {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("%s: a string match needs exactly one of exact, prefix, suffix, presence (%d set)", l.name, n)
			}
		}
	}
	for _, sa := range slices.Concat(m.ServiceAccounts, m.NotServiceAccounts) {
		if sa.Namespace == "" || sa.ServiceAccount == "" {
			return fmt.Errorf("service account match %q/%q: empty namespace or service account", sa.Namespace, sa.ServiceAccount)
		}
	}
	for _, s := range slices.Concat(m.SourceIPs, m.NotSourceIPs, m.DestinationIPs, m.NotDestinationIPs) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("bad CIDR %q: %v", s, err)
		}
		// A packet's address is never an IPv4-mapped one (see parseIP):
		// such a prefix could never match.
		if p.Addr().Is4In6() {
			return fmt.Errorf("CIDR %q is IPv4-mapped: write it as IPv4", s)
		}
	}
	for _, p := range slices.Concat(m.DestinationPorts, m.NotDestinationPorts) {
		if p < 0 || p > 65535 {
			return fmt.Errorf("bad port %d", p)
		}
	}
	return nil
}
