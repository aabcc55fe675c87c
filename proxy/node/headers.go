package node

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"

	"blastradius.dev/blastradius/proxy/hbone"
	"blastradius.dev/blastradius/proxy/xds"
)

// connectHeaders are the header fields ztunnel sends with its CONNECT
// (src/proxy/outbound.rs): forwarded with the application's own address
// (and the service hostname it asked for, when it dialled a VIP), baggage
// naming the source workload, and a fresh W3C traceparent. A receiving
// ztunnel reads them for its telemetry; nothing is authorized on them.
func connectHeaders(src *xds.Workload, client net.Addr, svc *xds.Service, cluster string) []hbone.Header {
	fwd := `for="` + client.String() + `"`
	if svc != nil {
		fwd += ";host=" + serviceHostname(svc)
	}
	var bag []string
	if cluster != "" {
		bag = append(bag, "k8s.cluster.name="+cluster)
	}
	if src != nil {
		bag = append(bag, "k8s.namespace.name="+src.Namespace, "k8s.pod.name="+src.Name)
	}
	h := []hbone.Header{{Name: "forwarded", Value: fwd}}
	if len(bag) > 0 {
		h = append(h, hbone.Header{Name: "baggage", Value: strings.Join(bag, ",")})
	}
	return append(h, hbone.Header{Name: "traceparent", Value: traceparent()})
}

// serviceHostname is the service's DNS name: istiod's services are named by
// it already; the reference control plane's by their short name.
func serviceHostname(s *xds.Service) string {
	if strings.Contains(s.Name, ".") {
		return s.Name
	}
	return s.Name + "." + s.Namespace + ".svc.cluster.local"
}

// traceparent is a new sampled trace context (version 00), as ztunnel starts
// one per outbound connection. The ids only need to be unique, not secret.
func traceparent() string {
	return fmt.Sprintf("00-%016x%016x-%016x-01", rand.Uint64(), rand.Uint64()|1, rand.Uint64()|1)
}
