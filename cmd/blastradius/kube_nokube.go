//go:build nokube

package main

import (
	"errors"
	"io"

	"blastradius.dev/blastradius/framework/scenario"
)

// The slim build (-tags nokube) is what pods run: the agents, proxies and
// control plane need no Kubernetes client, and leaving it out halves every
// pod process's memory. It refuses the Kubernetes providers.

var errNoKube = errors.New("this is the slim build for pods (-tags nokube): it has no Kubernetes providers; use bin/blastradius")

func checkKubeFlags(f *runFlags, _ []scenario.Scenario) error {
	if f.provider == "kind" || f.provider == "kubeconfig" {
		return errNoKube
	}
	return nil
}

func kubeRun(*runFlags, []scenario.Scenario, io.Writer, io.Writer) int { return 2 }
