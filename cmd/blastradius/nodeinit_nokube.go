//go:build nokube

package main

// runNodeInit: a binary without the Kubernetes providers runs no local-k8s
// node.
func runNodeInit() {}
