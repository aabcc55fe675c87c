// Package k8sversion names the Kubernetes release the project builds and
// runs (local-k8s's binaries, the tests' kube-apiserver): the version
// tools/k8s/go.mod requires, which the Makefile reads too. A test keeps the
// two equal.
package k8sversion

// Version is the Kubernetes release, as its binaries report it.
const Version = "v1.37.2"
