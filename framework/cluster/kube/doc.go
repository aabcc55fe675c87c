// Package kube is the Kubernetes side of the kind and kubeconfig providers:
// loading a kubeconfig, server-side apply of rendered manifests, waits for
// nodes and workloads with deadlines, and creating (or reusing) a kind
// cluster with the kind Go library. It talks to the API through the dynamic
// client only, so the typed clientset (a large compile) stays out of the
// binary, and tests run against client-go's dynamic fake.
package kube
