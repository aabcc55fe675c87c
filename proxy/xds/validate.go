package xds

import (
	"fmt"
	"net/netip"
)

// parseIP parses a workload IP or a VIP as packets carry it: a zone names
// no destination of its own (and "fe80::1%a" and "fe80::1%b" would pass the
// uniqueness checks as two addresses), and an IPv4-mapped IPv6 address is
// the IPv4 address (else "::ffff:10.0.0.1" would not clash with "10.0.0.1").
func parseIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("an IPv6 zone has no place in a workload address")
	}
	return ip.Unmap(), nil
}

// Validate reports the first reason a proxy must not apply s. Proxies NACK
// snapshots that fail it and keep their previous one, so a bad registry edit
// shows up as a NACK in the control plane's status instead of as half-applied
// state on the data plane.
// Errors are one line, registry text quoted: proxies send them back as NACK
// reasons, which the control plane logs one per line.
func (s *Snapshot) Validate() error {
	if s.TrustDomain == "" {
		return fmt.Errorf("empty trust domain")
	}
	uids := make(map[string]bool, len(s.Workloads))
	ips := make(map[netip.Addr]string, len(s.Workloads))
	for i, w := range s.Workloads {
		if w.UID == "" {
			return fmt.Errorf("workload #%d (%q/%q): empty uid", i, w.Namespace, w.Name)
		}
		if uids[w.UID] {
			return fmt.Errorf("workload %q: duplicate uid", w.UID)
		}
		uids[w.UID] = true
		ip, err := parseIP(w.IP)
		if err != nil {
			return fmt.Errorf("workload %q: bad ip %q: %v", w.UID, w.IP, err)
		}
		if other, dup := ips[ip]; dup {
			return fmt.Errorf("workload %q: ip %s already used by workload %q", w.UID, ip, other)
		}
		ips[ip] = w.UID
		switch w.Protocol {
		case ProtocolHBONE:
			// A meshed workload needs an identity for its certificate.
			if w.Namespace == "" || w.ServiceAccount == "" {
				return fmt.Errorf("workload %q: HBONE workload needs namespace and serviceAccount", w.UID)
			}
		case ProtocolTCP:
		default:
			return fmt.Errorf("workload %q: protocol %q is neither %s nor %s", w.UID, w.Protocol, ProtocolHBONE, ProtocolTCP)
		}
	}
	names := make(map[string]bool, len(s.Services))
	vips := make(map[netip.Addr]string, len(s.Services))
	for i, svc := range s.Services {
		key := svc.Namespace + "/" + svc.Name
		if svc.Name == "" {
			return fmt.Errorf("service #%d: empty name", i)
		}
		if names[key] {
			return fmt.Errorf("service %q: duplicate", key)
		}
		names[key] = true
		vip, err := parseIP(svc.VIP)
		if err != nil {
			return fmt.Errorf("service %q: bad vip %q: %v", key, svc.VIP, err)
		}
		if vip.IsUnspecified() || vip.IsMulticast() {
			return fmt.Errorf("service %q: vip %s is not a unicast address", key, vip)
		}
		if other, dup := vips[vip]; dup {
			return fmt.Errorf("service %q: vip %s already used by service %q", key, vip, other)
		}
		if w, clash := ips[vip]; clash {
			return fmt.Errorf("service %q: vip %s is also the ip of workload %q", key, vip, w)
		}
		vips[vip] = key
		for _, p := range svc.Ports {
			if p.Port < 1 || p.Port > 65535 || p.TargetPort < 1 || p.TargetPort > 65535 {
				return fmt.Errorf("service %q: bad port mapping %d->%d", key, p.Port, p.TargetPort)
			}
		}
		for _, ep := range svc.Endpoints {
			if !uids[ep] {
				return fmt.Errorf("service %q: unknown endpoint uid %q", key, ep)
			}
		}
	}
	for i, p := range s.Policies {
		// An unknown action must not be guessed at: treating it as ALLOW
		// opens traffic, treating it as DENY closes it.
		if p.Action != ActionAllow && p.Action != ActionDeny {
			return fmt.Errorf("policy #%d (%q/%q): action %q is neither %s nor %s", i, p.Namespace, p.Name, p.Action, ActionAllow, ActionDeny)
		}
		if err := validateRules(p.Rules); err != nil {
			return fmt.Errorf("policy #%d (%q/%q): %v", i, p.Namespace, p.Name, err)
		}
	}
	return nil
}
