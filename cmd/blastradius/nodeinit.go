//go:build !nokube

package main

import "blastradius.dev/blastradius/framework/cluster/localk8s"

// runNodeInit turns this process into a local-k8s node's init when the
// cluster started it as one (it does not return then): the binary that
// brings a local cluster up is also its nodes' init.
func runNodeInit() { localk8s.RunNodeInit() }
