package node

import (
	"net"
	"regexp"
	"testing"

	"blastradius.dev/blastradius/proxy/xds"
)

func TestConnectHeaders(t *testing.T) {
	src := &xds.Workload{Name: "web-1", Namespace: "shop"}
	client := &net.TCPAddr{IP: net.IPv4(10, 244, 1, 5), Port: 41000}
	tp := regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`)
	for _, tc := range []struct {
		name         string
		svc          *xds.Service
		cluster      string
		fwd, baggage string
	}{
		{name: "to a pod", fwd: `for="10.244.1.5:41000"`, baggage: "k8s.namespace.name=shop,k8s.pod.name=web-1"},
		{name: "to a reference service", svc: &xds.Service{Name: "cart", Namespace: "shop"}, cluster: "Kubernetes",
			fwd:     `for="10.244.1.5:41000";host=cart.shop.svc.cluster.local`,
			baggage: "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,k8s.pod.name=web-1"},
		{name: "to an istiod service", svc: &xds.Service{Name: "cart.shop.svc.example.org", Namespace: "shop"},
			fwd: `for="10.244.1.5:41000";host=cart.shop.svc.example.org`, baggage: "k8s.namespace.name=shop,k8s.pod.name=web-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := connectHeaders(src, client, tc.svc, tc.cluster)
			get := func(name string) string {
				for _, f := range h {
					if f.Name == name {
						return f.Value
					}
				}
				return ""
			}
			if len(h) != 3 || get("forwarded") != tc.fwd || get("baggage") != tc.baggage || !tp.MatchString(get("traceparent")) {
				t.Errorf("headers %q, want forwarded %q, baggage %q and a traceparent", h, tc.fwd, tc.baggage)
			}
		})
	}
	a, b := connectHeaders(src, client, nil, ""), connectHeaders(src, client, nil, "")
	if a[len(a)-1] == b[len(b)-1] {
		t.Errorf("two connections share a trace context: %q", a[len(a)-1])
	}
}
