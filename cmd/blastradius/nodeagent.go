package main

import (
	"io"

	"blastradius.dev/blastradius/proxy/inpod"
)

// nodeAgentCmd is `blastradius node-agent`, the node agent of ambient mode on
// Kubernetes: manifests/nodeproxy.yaml runs it beside the node proxy. It
// lives in proxy/inpod (NodeAgentMain), next to the protocol and the redirect
// rules it uses, so that the manifests' tests can check their arguments
// against its flags.
func nodeAgentCmd(args []string, stdout, stderr io.Writer) int {
	return inpod.NodeAgentMain(args, stdout, stderr)
}
