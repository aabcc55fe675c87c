// Package manifests will embed the Kubernetes YAML (workloads, the reference
// data plane, Istio install values, Chaos Mesh objects) used by the kind and
// kubeconfig providers. The embedded provider needs none.
package manifests
