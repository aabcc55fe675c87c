// Package kube is the Kubernetes side of the kind and kubeconfig providers:
// loading a kubeconfig, server-side apply of rendered manifests, waits for
// nodes and workloads with deadlines, and creating (or reusing) a kind
// cluster with the kind Go library. Manifests go through the dynamic client
// (tests run against client-go's dynamic fake); Chaos Mesh objects through
// controller-runtime's client with the chaos-mesh api scheme (chaos.go).
// Together they pull in client-go's typed clientset, which is why pods run
// the slim build without this package (-tags nokube).
package kube
