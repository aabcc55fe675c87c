package xds

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/workloadapi/security"
)

// Resource types istiod serves to ztunnel over Delta ADS.
const (
	IstioAddressType       = "type.googleapis.com/istio.workload.Address"
	IstioAuthorizationType = "type.googleapis.com/istio.security.Authorization"
)

// DefaultIstioTrustDomain is the trust domain of a workload whose
// trust_domain is empty.
const DefaultIstioTrustDomain = "cluster.local"

// FromIstio translates istiod's ambient discovery state (every Address and
// Authorization resource currently held) into a Snapshot; Version is left
// to the caller. The rules, and where the model falls short of Istio's:
//
//   - A Workload becomes a Workload with its first IPv4 address; one without
//     an IPv4 address is left out. HBONE is ProtocolHBONE, NONE ProtocolTCP
//     (LEGACY_ISTIO_MTLS too: the proxy does not speak sidecar mTLS).
//   - Workloads sharing an IPv4 address (host-network pods, an API server's
//     EndpointSlice workload next to its static pod) cannot all be indexed
//     by it: one is kept, preferring pod-network ones, then the smallest
//     uid. When all of them are plain TCP the kept one becomes an endpoint
//     of the others' services too (a plain TCP destination is its address);
//     otherwise the others are left out.
//   - A Service is named by its hostname in its namespace, so the model's
//     namespace/name is Istio's own resource name ns/hostname and is unique
//     by construction; waypoints are named the same way. Its VIP is its
//     first IPv4 address: a service without one (headless, IPv6 only), or
//     whose VIP is already taken, is left out.
//   - Endpoints come only from workloads' services maps, and only healthy
//     workloads are endpoints. The model has one target port per service
//     port: endpoints whose resolved target ports (the workload's port
//     list, else the service's target port, else the service port) differ
//     from the majority's are left out of that service.
//   - A waypoint (of a workload or a service) must be a Service this
//     snapshot holds, in the same namespace (the model names waypoints by
//     name within the namespace). Otherwise the workload or service is
//     marked WaypointUnusable and proxies refuse traffic to it.
//   - The snapshot has one trust domain: the one most workloads have (ties:
//     the smallest). Workloads of another one keep their place but proxies
//     will expect the wrong identity of them, so connections to them fail.
//   - Authorization: GLOBAL selects every workload, NAMESPACE its namespace,
//     WORKLOAD_SELECTOR the workloads whose authorization_policies list
//     ns/name, in any namespace (istiod attaches root-namespace policies and
//     its converted STRICT policy that way); a selector policy no workload
//     lists is left out. Groups become Rules, each group's rules Clauses,
//     their matches Matches, with principals given the spiffe:// prefix
//     Istio leaves off. Dry-run policies are left out (they are not
//     enforced). Extensions the proxy cannot read make an ALLOW match
//     nothing and are ignored in a DENY: either way stricter, never looser.
//
// Input the model cannot carry in a well-defined way is an error; choices
// the translation made that an operator should know about are warnings.
// The result passes Validate.
func FromIstio(addrs []*workloadapi.Address, auths []*security.Authorization) (Snapshot, []string, error) {
	t := &istioTranslator{leftOut: map[string]bool{}}
	s, err := t.translate(addrs, auths)
	if err != nil {
		return Snapshot{}, nil, err
	}
	if err := s.Validate(); err != nil {
		return Snapshot{}, nil, fmt.Errorf("translated snapshot invalid: %v", err)
	}
	return s, t.warnings, nil
}

type istioTranslator struct {
	warnings []string
	leftOut  map[string]bool // services left out (and reported), by ns/hostname
}

func (t *istioTranslator) warnf(format string, args ...any) {
	t.warnings = append(t.warnings, fmt.Sprintf(format, args...))
}

// istioService is one Service being translated.
type istioService struct {
	key      string // ns/hostname
	src      *workloadapi.Service
	vip      netip.Addr
	declared []Port // service port -> the Service's target port (0: per endpoint)
	out      Service
}

// istioWorkload is one Workload being translated.
type istioWorkload struct {
	src     *workloadapi.Workload
	ip      netip.Addr
	td      string
	healthy bool
	hostNet bool
	out     Workload
	// members are the workloads whose service memberships this one
	// carries: itself, and same-address TCP workloads merged into it.
	members []*workloadapi.Workload
}

func (t *istioTranslator) translate(addrs []*workloadapi.Address, auths []*security.Authorization) (Snapshot, error) {
	var wsrc []*workloadapi.Workload
	var ssrc []*workloadapi.Service
	for i, a := range addrs {
		switch {
		case a.GetWorkload() != nil:
			wsrc = append(wsrc, a.GetWorkload())
		case a.GetService() != nil:
			ssrc = append(ssrc, a.GetService())
		default:
			return Snapshot{}, fmt.Errorf("address #%d holds neither a workload nor a service", i)
		}
	}

	services, err := t.services(ssrc)
	if err != nil {
		return Snapshot{}, err
	}
	workloads, err := t.workloads(wsrc)
	if err != nil {
		return Snapshot{}, err
	}
	services = t.dedupeVIPs(services, workloads)
	byKey := make(map[string]*istioService, len(services))
	byVIP := make(map[netip.Addr]*istioService, len(services))
	for _, s := range services {
		byKey[s.key], byVIP[s.vip] = s, s
	}
	for _, s := range services {
		s.out.Waypoint, s.out.WaypointUnusable = t.waypoint("service "+quote(s.key), s.src.GetWaypoint(), s.src.GetNamespace(), byKey, byVIP)
	}
	for _, w := range workloads {
		w.out.Waypoint, w.out.WaypointUnusable = t.waypoint("workload "+quote(w.out.UID), w.src.GetWaypoint(), w.out.Namespace, byKey, byVIP)
	}
	t.endpoints(services, workloads, byKey)

	snap := Snapshot{TrustDomain: t.trustDomain(workloads)}
	for _, w := range workloads {
		snap.Workloads = append(snap.Workloads, w.out)
	}
	for _, s := range services {
		snap.Services = append(snap.Services, s.out)
	}
	snap.Policies, err = t.policies(auths, workloads)
	if err != nil {
		return Snapshot{}, err
	}
	return snap, nil
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// istioIP reads a raw address; IPv4-mapped IPv6 is the IPv4 address.
func istioIP(b []byte) (netip.Addr, error) {
	if len(b) != 4 && len(b) != 16 {
		return netip.Addr{}, fmt.Errorf("address of %d bytes, want 4 or 16", len(b))
	}
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap(), nil
}

func (t *istioTranslator) services(src []*workloadapi.Service) ([]*istioService, error) {
	seen := map[string]bool{}
	var out []*istioService
	for _, s := range src {
		if s.GetHostname() == "" || s.GetNamespace() == "" {
			return nil, fmt.Errorf("service %q/%q: empty namespace or hostname", s.GetNamespace(), s.GetHostname())
		}
		key := s.GetNamespace() + "/" + s.GetHostname()
		if seen[key] {
			return nil, fmt.Errorf("service %q: duplicate", key)
		}
		seen[key] = true
		is := &istioService{key: key, src: s}
		for _, a := range s.GetAddresses() {
			ip, err := istioIP(a.GetAddress())
			if err != nil {
				return nil, fmt.Errorf("service %q: %v", key, err)
			}
			if ip.Is4() && !is.vip.IsValid() {
				is.vip = ip
			}
		}
		ports := map[int]bool{}
		for _, p := range s.GetPorts() {
			sp, tp := p.GetServicePort(), p.GetTargetPort()
			if sp < 1 || sp > 65535 || tp > 65535 {
				return nil, fmt.Errorf("service %q: bad port mapping %d->%d", key, sp, tp)
			}
			if ports[int(sp)] {
				t.warnf("service %q: port %d listed twice, the first mapping is kept", key, sp)
				continue
			}
			ports[int(sp)] = true
			is.declared = append(is.declared, Port{Port: int(sp), TargetPort: int(tp)})
		}
		slices.SortFunc(is.declared, func(a, b Port) int { return a.Port - b.Port })
		if !is.vip.IsValid() {
			t.warnf("service %q has no IPv4 address (headless or IPv6 only): left out", key)
			t.leftOut[key] = true
			continue
		}
		is.out = Service{Name: s.GetHostname(), Namespace: s.GetNamespace(), VIP: is.vip.String(), Endpoints: []string{}}
		out = append(out, is)
	}
	slices.SortFunc(out, func(a, b *istioService) int { return strings.Compare(a.key, b.key) })
	return out, nil
}

func (t *istioTranslator) workloads(src []*workloadapi.Workload) ([]*istioWorkload, error) {
	seen := map[string]bool{}
	var all []*istioWorkload
	for _, w := range src {
		uid := w.GetUid()
		if uid == "" {
			return nil, fmt.Errorf("workload %q/%q: empty uid", w.GetNamespace(), w.GetName())
		}
		if seen[uid] {
			return nil, fmt.Errorf("workload %q: duplicate uid", uid)
		}
		seen[uid] = true
		iw := &istioWorkload{src: w, td: cmp.Or(w.GetTrustDomain(), DefaultIstioTrustDomain), members: []*workloadapi.Workload{w}}
		for _, b := range w.GetAddresses() {
			ip, err := istioIP(b)
			if err != nil {
				return nil, fmt.Errorf("workload %q: %v", uid, err)
			}
			if ip.Is4() && !iw.ip.IsValid() {
				iw.ip = ip
			}
		}
		proto := ""
		switch w.GetTunnelProtocol() {
		case workloadapi.TunnelProtocol_HBONE:
			proto = ProtocolHBONE
		case workloadapi.TunnelProtocol_NONE:
			proto = ProtocolTCP
		case workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS:
			// Its sidecar accepts Istio mTLS, which this proxy does not
			// speak; plaintext reaches it, and its own policies judge that.
			t.warnf("workload %q: tunnel protocol LEGACY_ISTIO_MTLS is reached as plain TCP", uid)
			proto = ProtocolTCP
		default:
			return nil, fmt.Errorf("workload %q: unknown tunnel protocol %d", uid, w.GetTunnelProtocol())
		}
		switch w.GetStatus() {
		case workloadapi.WorkloadStatus_HEALTHY:
			iw.healthy = true
		case workloadapi.WorkloadStatus_UNHEALTHY:
		default:
			return nil, fmt.Errorf("workload %q: unknown status %d", uid, w.GetStatus())
		}
		for key, pl := range w.GetServices() {
			for _, p := range pl.GetPorts() {
				if sp, tp := p.GetServicePort(), p.GetTargetPort(); sp < 1 || sp > 65535 || tp > 65535 {
					return nil, fmt.Errorf("workload %q: service %q: bad port mapping %d->%d", uid, key, sp, tp)
				}
			}
		}
		if !iw.ip.IsValid() {
			t.warnf("workload %q has no IPv4 address: left out", uid)
			continue
		}
		iw.hostNet = w.GetNetworkMode() == workloadapi.NetworkMode_HOST_NETWORK
		iw.out = Workload{UID: uid, Name: w.GetName(), Namespace: w.GetNamespace(), ServiceAccount: w.GetServiceAccount(),
			Node: w.GetNode(), IP: iw.ip.String(), Protocol: proto}
		all = append(all, iw)
	}
	// One workload per address (see FromIstio).
	byIP := map[netip.Addr][]*istioWorkload{}
	for _, w := range all {
		byIP[w.ip] = append(byIP[w.ip], w)
	}
	var out []*istioWorkload
	for _, ip := range slices.SortedFunc(maps.Keys(byIP), netip.Addr.Compare) {
		group := byIP[ip]
		slices.SortFunc(group, func(a, b *istioWorkload) int {
			if a.hostNet != b.hostNet {
				if a.hostNet {
					return 1
				}
				return -1
			}
			return strings.Compare(a.out.UID, b.out.UID)
		})
		keep := group[0]
		out = append(out, keep)
		if len(group) == 1 {
			continue
		}
		allTCP := true
		var others []string
		for _, w := range group {
			allTCP = allTCP && w.out.Protocol == ProtocolTCP
			if w != keep {
				others = append(others, w.out.UID)
			}
		}
		if allTCP {
			for _, w := range group[1:] {
				keep.members = append(keep.members, w.src)
			}
			t.warnf("workloads %q share %s with %q: %q stands for them (their services point to it)", others, ip, keep.out.UID, keep.out.UID)
		} else {
			t.warnf("workloads %q share %s with %q: left out", others, ip, keep.out.UID)
		}
	}
	slices.SortFunc(out, func(a, b *istioWorkload) int { return strings.Compare(a.out.UID, b.out.UID) })
	return out, nil
}

// dedupeVIPs leaves out services whose VIP an earlier service (by key) or a
// workload already has: the proxy finds a service by its VIP.
func (t *istioTranslator) dedupeVIPs(services []*istioService, workloads []*istioWorkload) []*istioService {
	owner := map[netip.Addr]string{}
	for _, w := range workloads {
		owner[w.ip] = "workload " + quote(w.out.UID)
	}
	var out []*istioService
	for _, s := range services {
		if o, taken := owner[s.vip]; taken {
			t.warnf("service %q: VIP %s is also %s's: left out", s.key, s.vip, o)
			t.leftOut[s.key] = true
			continue
		}
		owner[s.vip] = "service " + quote(s.key)
		out = append(out, s)
	}
	return out
}

// waypoint resolves a waypoint reference to the name of a Service of this
// snapshot in namespace ns, or reports it unusable.
func (t *istioTranslator) waypoint(who string, ga *workloadapi.GatewayAddress, ns string,
	byKey map[string]*istioService, byVIP map[netip.Addr]*istioService) (string, bool) {
	if ga == nil {
		return "", false
	}
	var s *istioService
	var ref string
	switch d := ga.GetDestination().(type) {
	case *workloadapi.GatewayAddress_Hostname:
		ref = d.Hostname.GetNamespace() + "/" + d.Hostname.GetHostname()
		s = byKey[ref]
	case *workloadapi.GatewayAddress_Address:
		ip, err := istioIP(d.Address.GetAddress())
		ref = fmt.Sprintf("address %x", d.Address.GetAddress())
		if err == nil {
			ref = ip.String()
			s = byVIP[ip]
		}
	default:
		ref = "(empty)"
	}
	switch {
	case s == nil:
		t.warnf("%s: waypoint %q is not a known service: traffic to it is refused", who, ref)
		return "", true
	case s.out.Namespace != ns:
		t.warnf("%s: waypoint %q is in another namespace, which the model cannot name: traffic to it is refused", who, s.key)
		return "", true
	}
	return s.out.Name, false
}

// endpoints fills the services' ports and endpoints from the workloads'
// services maps.
func (t *istioTranslator) endpoints(services []*istioService, workloads []*istioWorkload, byKey map[string]*istioService) {
	type endpoint struct {
		uid     string
		targets []int // per declared port
	}
	eps := map[string][]endpoint{}
	member := map[string]bool{} // ns/hostname + " " + uid
	unknown := map[string]bool{}
	for _, w := range workloads {
		if !w.healthy {
			continue
		}
		for _, m := range w.members {
			for key, pl := range m.GetServices() {
				s, ok := byKey[key]
				if !ok {
					unknown[key] = !t.leftOut[key]
					continue
				}
				if member[key+" "+w.out.UID] {
					continue // two merged workloads in one service
				}
				member[key+" "+w.out.UID] = true
				e := endpoint{uid: w.out.UID}
				for _, d := range s.declared {
					target := 0
					for _, p := range pl.GetPorts() {
						if int(p.GetServicePort()) == d.Port && p.GetTargetPort() != 0 {
							target = int(p.GetTargetPort())
							break
						}
					}
					e.targets = append(e.targets, cmp.Or(target, d.TargetPort, d.Port))
				}
				eps[key] = append(eps[key], e)
			}
		}
	}
	for _, key := range sortedKeys(unknown) {
		if !unknown[key] {
			continue // left out, and reported, already
		}
		t.warnf("service %q, named in workloads' services, is not in the snapshot: no endpoints there", key)
	}
	for _, s := range services {
		list := eps[s.key]
		// The mapping most endpoints share; ties go to the smallest.
		count := map[string]int{}
		best := ""
		for _, e := range list {
			k := fmt.Sprint(e.targets)
			count[k]++
			if c := count[k]; best == "" || c > count[best] || c == count[best] && k < best {
				best = k
			}
		}
		var targets []int
		var odd []string
		for _, e := range list {
			if fmt.Sprint(e.targets) != best {
				odd = append(odd, e.uid)
				continue
			}
			targets = e.targets
			s.out.Endpoints = append(s.out.Endpoints, e.uid)
		}
		if len(odd) > 0 {
			t.warnf("service %q: endpoints %q map ports unlike the others %s: left out of it", s.key, odd, best)
		}
		for i, d := range s.declared {
			tp := cmp.Or(d.TargetPort, d.Port)
			if targets != nil {
				tp = targets[i]
			}
			s.out.Ports = append(s.out.Ports, Port{Port: d.Port, TargetPort: tp})
		}
		sort.Strings(s.out.Endpoints)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (t *istioTranslator) trustDomain(workloads []*istioWorkload) string {
	count := map[string]int{}
	for _, w := range workloads {
		count[w.td]++
	}
	if len(count) == 0 {
		return DefaultIstioTrustDomain
	}
	best := ""
	for _, td := range sortedKeys(count) {
		if best == "" || count[td] > count[best] {
			best = td
		}
	}
	if len(count) > 1 {
		var others []string
		for _, w := range workloads {
			if w.td != best {
				others = append(others, w.out.UID)
			}
		}
		t.warnf("workloads disagree on the trust domain (%v): using %q; connections to %q will fail identity checks", count, best, others)
	}
	return best
}

func (t *istioTranslator) policies(auths []*security.Authorization, workloads []*istioWorkload) ([]Policy, error) {
	selected := map[string][]string{} // ns/name -> workload UIDs
	for _, w := range workloads {
		for _, key := range w.src.GetAuthorizationPolicies() {
			if !slices.Contains(selected[key], w.out.UID) {
				selected[key] = append(selected[key], w.out.UID)
			}
		}
	}
	known := map[string]bool{}
	var out []Policy
	for i, a := range auths {
		if a == nil {
			return nil, fmt.Errorf("authorization #%d is empty", i)
		}
		key := a.GetNamespace() + "/" + a.GetName()
		if a.GetName() == "" || a.GetNamespace() == "" {
			return nil, fmt.Errorf("authorization %q: empty namespace or name", key)
		}
		if known[key] {
			return nil, fmt.Errorf("authorization %q: duplicate", key)
		}
		known[key] = true
		p := Policy{Name: a.GetName(), Namespace: a.GetNamespace()}
		switch a.GetAction() {
		case security.Action_ALLOW:
			p.Action = ActionAllow
		case security.Action_DENY:
			p.Action = ActionDeny
		default:
			return nil, fmt.Errorf("authorization %q: unknown action %d", key, a.GetAction())
		}
		switch a.GetScope() {
		case security.Scope_GLOBAL:
			p.AnyNamespace = true
		case security.Scope_NAMESPACE:
		case security.Scope_WORKLOAD_SELECTOR:
			p.AnyNamespace = true
			p.Workloads = selected[key]
			sort.Strings(p.Workloads)
		default:
			return nil, fmt.Errorf("authorization %q: unknown scope %d", key, a.GetScope())
		}
		extensions := len(a.GetExtensions()) > 0
		p.Rules = []Rule{}
		for gi, g := range a.GetGroups() {
			r := Rule{Clauses: []Clause{}}
			for ri, rules := range g.GetRules() {
				cl := Clause{Matches: []Match{}}
				for mi, m := range rules.GetMatches() {
					extensions = extensions || len(m.GetExtensions()) > 0
					mm, err := istioMatch(m)
					if err != nil {
						return nil, fmt.Errorf("authorization %q: group %d rules %d match %d: %v", key, gi, ri, mi, err)
					}
					cl.Matches = append(cl.Matches, mm)
				}
				r.Clauses = append(r.Clauses, cl)
			}
			p.Rules = append(p.Rules, r)
		}
		if a.GetDryRun() {
			t.warnf("authorization %q is a dry run: not enforced, left out", key)
			continue
		}
		if extensions {
			if p.Action == ActionAllow {
				p.Rules = []Rule{}
				t.warnf("authorization %q: ALLOW with extensions this proxy cannot evaluate: it matches nothing", key)
			} else {
				t.warnf("authorization %q: DENY with extensions this proxy cannot evaluate: they are ignored (it matches more)", key)
			}
		}
		if a.GetScope() == security.Scope_WORKLOAD_SELECTOR && len(p.Workloads) == 0 {
			// No workload lists it: it applies to nothing (an empty
			// Workloads list would mean every workload).
			continue
		}
		out = append(out, p)
	}
	for _, key := range sortedKeys(selected) {
		if !known[key] {
			t.warnf("authorization %q, listed by %d workloads, is unknown", key, len(selected[key]))
		}
	}
	slices.SortFunc(out, func(a, b Policy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

// istioMatch converts one Match; principals get the spiffe:// prefix Istio
// strips (a prefix match keeps matching, a suffix match is unchanged).
func istioMatch(m *security.Match) (Match, error) {
	var out Match
	var err error
	conv := func(dst *[]StringMatch, src []*security.StringMatch, principal bool, what string) {
		if err != nil {
			return
		}
		for _, s := range src {
			var sm StringMatch
			sm, err = istioString(s, principal)
			if err != nil {
				err = fmt.Errorf("%s: %v", what, err)
				return
			}
			*dst = append(*dst, sm)
		}
	}
	conv(&out.Principals, m.GetPrincipals(), true, "principals")
	conv(&out.NotPrincipals, m.GetNotPrincipals(), true, "not_principals")
	conv(&out.Namespaces, m.GetNamespaces(), false, "namespaces")
	conv(&out.NotNamespaces, m.GetNotNamespaces(), false, "not_namespaces")
	if err != nil {
		return Match{}, err
	}
	sas := func(src []*security.ServiceAccountMatch) ([]ServiceAccountMatch, error) {
		var res []ServiceAccountMatch
		for _, s := range src {
			if s.GetNamespace() == "" || s.GetServiceAccount() == "" {
				return nil, fmt.Errorf("service account match %q/%q: empty namespace or service account", s.GetNamespace(), s.GetServiceAccount())
			}
			res = append(res, ServiceAccountMatch{Namespace: s.GetNamespace(), ServiceAccount: s.GetServiceAccount()})
		}
		return res, nil
	}
	if out.ServiceAccounts, err = sas(m.GetServiceAccounts()); err != nil {
		return Match{}, err
	}
	if out.NotServiceAccounts, err = sas(m.GetNotServiceAccounts()); err != nil {
		return Match{}, err
	}
	for _, l := range []struct {
		dst *[]string
		src []*security.Address
	}{{&out.SourceIPs, m.GetSourceIps()}, {&out.NotSourceIPs, m.GetNotSourceIps()},
		{&out.DestinationIPs, m.GetDestinationIps()}, {&out.NotDestinationIPs, m.GetNotDestinationIps()}} {
		for _, a := range l.src {
			p, err := istioPrefix(a)
			if err != nil {
				return Match{}, err
			}
			*l.dst = append(*l.dst, p)
		}
	}
	for _, l := range []struct {
		dst *[]int
		src []uint32
	}{{&out.DestinationPorts, m.GetDestinationPorts()}, {&out.NotDestinationPorts, m.GetNotDestinationPorts()}} {
		for _, p := range l.src {
			if p > 65535 {
				return Match{}, fmt.Errorf("bad port %d", p)
			}
			*l.dst = append(*l.dst, int(p))
		}
	}
	return out, nil
}

func istioString(s *security.StringMatch, principal bool) (StringMatch, error) {
	const scheme = "spiffe://"
	switch v := s.GetMatchType().(type) {
	case *security.StringMatch_Presence:
		return StringMatch{Presence: true}, nil
	case *security.StringMatch_Exact:
		if principal {
			return StringMatch{Exact: scheme + v.Exact}, nil
		}
		if v.Exact == "" {
			return StringMatch{}, fmt.Errorf("empty exact match")
		}
		return StringMatch{Exact: v.Exact}, nil
	case *security.StringMatch_Prefix:
		if principal {
			return StringMatch{Prefix: scheme + v.Prefix}, nil
		}
		if v.Prefix == "" {
			return StringMatch{Presence: true}, nil // every value has the empty prefix
		}
		return StringMatch{Prefix: v.Prefix}, nil
	case *security.StringMatch_Suffix:
		if v.Suffix == "" {
			if principal {
				return StringMatch{Prefix: scheme}, nil // every identity
			}
			return StringMatch{Presence: true}, nil
		}
		return StringMatch{Suffix: v.Suffix}, nil
	default:
		return StringMatch{}, fmt.Errorf("string match without a kind")
	}
}

// istioPrefix turns an address and prefix length into a CIDR; an
// IPv4-mapped prefix becomes the IPv4 prefix packets are compared with.
func istioPrefix(a *security.Address) (string, error) {
	ip, err := istioIP(a.GetAddress())
	if err != nil {
		return "", err
	}
	bits := int(a.GetLength())
	if len(a.GetAddress()) == 16 && ip.Is4() {
		if bits < 96 {
			return "", fmt.Errorf("IPv4-mapped address %s with prefix length %d below 96", ip, bits)
		}
		bits -= 96
	}
	if a.GetLength() > 128 || bits > ip.BitLen() {
		return "", fmt.Errorf("prefix length %d too long for %s", a.GetLength(), ip)
	}
	return netip.PrefixFrom(ip, bits).Masked().String(), nil
}
