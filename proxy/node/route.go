package node

import (
	"fmt"
	"net/netip"
	"strconv"

	"blastradius.dev/blastradius/proxy/xds"
)

// HBONEPort is where every meshed pod (and waypoint) accepts HBONE.
const HBONEPort = 15008

// Route kinds.
const (
	RouteHBONE       = "hbone"       // mTLS tunnel straight to the destination pod
	RouteWaypoint    = "waypoint"    // mTLS tunnel to a waypoint, which picks the endpoint
	RoutePlain       = "plain"       // destination is not meshed: plain TCP
	RoutePassthrough = "passthrough" // unknown destination: plain TCP to the original address
)

// Route is where one outbound connection goes.
type Route struct {
	Kind        string
	Dial        string // address to connect to: ip:15008 for HBONE, ip:port otherwise
	Authority   string // HBONE :authority (the final target ip:port)
	DstIdentity string // identity the HBONE server must present
	Dst         *xds.Workload
}

// Index is a snapshot prepared for lookups on the connection path.
type Index struct {
	Snap     xds.Snapshot
	byIP     map[netip.Addr]*xds.Workload
	byUID    map[string]*xds.Workload
	svcByVIP map[netip.Addr]*xds.Service
	svcByKey map[string]*xds.Service // namespace/name
}

// NewIndex indexes a snapshot.
func NewIndex(s xds.Snapshot) *Index {
	ix := &Index{Snap: s, byIP: map[netip.Addr]*xds.Workload{}, byUID: map[string]*xds.Workload{},
		svcByVIP: map[netip.Addr]*xds.Service{}, svcByKey: map[string]*xds.Service{}}
	for i := range s.Workloads {
		w := &ix.Snap.Workloads[i]
		if ip, err := netip.ParseAddr(w.IP); err == nil {
			ix.byIP[ip] = w
		}
		ix.byUID[w.UID] = w
	}
	for i := range s.Services {
		sv := &ix.Snap.Services[i]
		if ip, err := netip.ParseAddr(sv.VIP); err == nil {
			ix.svcByVIP[ip] = sv
		}
		ix.svcByKey[sv.Namespace+"/"+sv.Name] = sv
	}
	return ix
}

// Workload returns a workload by UID.
func (ix *Index) Workload(uid string) (*xds.Workload, bool) { w, ok := ix.byUID[uid]; return w, ok }

// WorkloadByIP returns the workload owning ip.
func (ix *Index) WorkloadByIP(ip netip.Addr) (*xds.Workload, bool) {
	w, ok := ix.byIP[ip]
	return w, ok
}

// Service returns a service by namespace and name.
func (ix *Index) Service(ns, name string) (*xds.Service, bool) {
	s, ok := ix.svcByKey[ns+"/"+name]
	return s, ok
}

// Resolve decides where a connection from src to its original destination
// goes. pick(n) chooses one of n endpoints (per connection, like ztunnel).
func (ix *Index) Resolve(src *xds.Workload, dst netip.AddrPort, pick func(n int) int) (Route, error) {
	td := ix.Snap.TrustDomain
	port := int(dst.Port())
	if sv, ok := ix.svcByVIP[dst.Addr()]; ok {
		target := 0
		for _, p := range sv.Ports {
			if p.Port == port {
				target = p.TargetPort
			}
		}
		if target == 0 {
			return Route{}, fmt.Errorf("service %s/%s has no port %d", sv.Namespace, sv.Name, port)
		}
		if sv.WaypointUnusable {
			return Route{}, fmt.Errorf("service %s/%s: its waypoint is unusable", sv.Namespace, sv.Name)
		}
		if sv.Waypoint != "" {
			return ix.viaWaypoint(sv.Namespace, sv.Waypoint, dst.String(), pick)
		}
		if len(sv.Endpoints) == 0 {
			return Route{}, fmt.Errorf("service %s/%s has no endpoints", sv.Namespace, sv.Name)
		}
		w, ok := ix.byUID[sv.Endpoints[pick(len(sv.Endpoints))]]
		if !ok {
			return Route{}, fmt.Errorf("service %s/%s: endpoint unknown", sv.Namespace, sv.Name)
		}
		return direct(w, target, td), nil
	}
	if w, ok := ix.byIP[dst.Addr()]; ok {
		if w.WaypointUnusable {
			return Route{}, fmt.Errorf("workload %s/%s: its waypoint is unusable", w.Namespace, w.Name)
		}
		if w.Waypoint != "" {
			return ix.viaWaypoint(w.Namespace, w.Waypoint, dst.String(), pick)
		}
		return direct(w, port, td), nil
	}
	return Route{Kind: RoutePassthrough, Dial: dst.String()}, nil
}

func direct(w *xds.Workload, port int, td string) Route {
	target := netip.AddrPortFrom(netip.MustParseAddr(w.IP), uint16(port)).String()
	if w.Protocol != xds.ProtocolHBONE {
		return Route{Kind: RoutePlain, Dial: target, Dst: w}
	}
	return Route{Kind: RouteHBONE, Dial: w.IP + ":" + strconv.Itoa(HBONEPort), Authority: target,
		DstIdentity: w.Identity(td), Dst: w}
}

func (ix *Index) viaWaypoint(ns, name, authority string, pick func(int) int) (Route, error) {
	wp, ok := ix.svcByKey[ns+"/"+name]
	if !ok || len(wp.Endpoints) == 0 {
		return Route{}, fmt.Errorf("waypoint %s/%s has no endpoints", ns, name)
	}
	w, ok := ix.byUID[wp.Endpoints[pick(len(wp.Endpoints))]]
	if !ok {
		return Route{}, fmt.Errorf("waypoint %s/%s: endpoint unknown", ns, name)
	}
	return Route{Kind: RouteWaypoint, Dial: w.IP + ":" + strconv.Itoa(HBONEPort), Authority: authority,
		DstIdentity: w.Identity(ix.Snap.TrustDomain), Dst: w}, nil
}

// Allowed evaluates authorization policies for a connection from peer (a
// SPIFFE identity, "" for plaintext) to workload dst when nothing else
// about the connection is known; see AllowedConn.
func (ix *Index) Allowed(dst *xds.Workload, peer string) bool {
	return ix.AllowedConn(dst, xds.Conn{Peer: peer})
}

// AllowedConn evaluates authorization policies for connection c to workload
// dst: any matching DENY denies; if ALLOW policies select dst, one must
// match. Conditions on attributes c lacks are decided against the peer
// (xds.Policy.Matches).
func (ix *Index) AllowedConn(dst *xds.Workload, c xds.Conn) bool {
	hasAllow, allowed := false, false
	for i := range ix.Snap.Policies {
		p := &ix.Snap.Policies[i]
		if !p.Selects(dst) {
			continue
		}
		match := p.Matches(c)
		switch p.Action {
		case xds.ActionDeny:
			if match {
				return false
			}
		case xds.ActionAllow:
			hasAllow = true
			allowed = allowed || match
		}
	}
	return !hasAllow || allowed
}
