// Package netns is the embedded cluster provider: nodes and pods are Linux
// network namespaces held by file descriptor, wired with a bridge and veths,
// with real processes inside and kube-proxy-like service VIPs in nftables.
//
// Topology (the shape ztunnel's own test harness uses):
//
//	sandbox netns:  br0 10.0.0.1/24 ── vn<i> ┐
//	node i netns:   eth0 10.0.0.(10+i)/24 ──┘   routes: 10.244.k.0/24 via node k
//	                vp<j> 10.244.i.1/32 ── pod netns eth0 10.244.i.(2+j)/32 (point-to-point)
//
// Namespace switching (thread-locked setns) comes from proxy/netnsx, which
// the node proxy uses for the same job.
//
// It must run inside the sandbox (package sandbox), where it holds
// CAP_NET_ADMIN over everything it creates and nothing can outlive the run.
package netns
