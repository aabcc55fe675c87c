// Package localk8s is the local-k8s provider: a real multi-node Kubernetes
// cluster on this machine, built from the Kubernetes binaries that `make
// k8s-bins` compiles and Debian's containerd, runc and CNI plugins, for
// machines where kind cannot run (no container engine, no registry).
//
// The control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler) runs as host processes. Every node is a network
// namespace of its own, joined to a host bridge by a veth pair, with a node
// init process in a new PID and mount namespace inside it that runs the
// node's containerd, kubelet and kube-proxy. Killing that init kills
// everything of the node, containers included (the kernel empties a PID
// namespace whose init dies), so Crash is a real node crash, and taking
// the node's veth down is a real partition.
//
// Everything Up creates is listed in a state file in the cluster directory
// before or right after it is created, so Down can remove it even after the
// process that ran Up was killed. docs/local-k8s.md has the layout, ports,
// timings and limits.
package localk8s
