package main

import (
	"io"

	"blastradius.dev/blastradius/proxy/inpod"
)

// redirectCmd is `blastradius redirect`, the sidecar-mode init container
// (istio-init's job): manifests/sidecar.yaml runs it before the sidecar
// proxy. Like nodeAgentCmd it lives in proxy/inpod (RedirectMain).
func redirectCmd(args []string, stdout, stderr io.Writer) int {
	return inpod.RedirectMain(args, stdout, stderr)
}
