// Command blastradius measures whether a service mesh's per-node proxy is a
// single point of failure: it brings up a cluster, drives load across every
// node pair, injects faults and measures the disruption.
package main

import (
	"fmt"
	"io"
	"os"

	"blastradius.dev/blastradius/framework/load"
	"blastradius.dev/blastradius/proxy/controlplane"
	"blastradius.dev/blastradius/proxy/node"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `blastradius — is the ambient mesh's per-node proxy a single point of failure? Measure it.

Usage:
  blastradius run [flags]        run scenarios and write a results folder (see: blastradius run --help)
  blastradius scenarios          list the built-in scenarios
  blastradius report <dir> [--out file]  render a results folder as one self-contained report.html
  blastradius compare <run-dir> --baseline <dir>...  tier each variant against earlier runs: pass, flake, regress (docs/compare.md)
  blastradius bench [flags]      latency, throughput and proxy cost for none, sidecar and ambient (see: blastradius bench --help)
  blastradius soak [flags]       ambient cluster under load and faults for --duration: leak check of every proxy's fds, goroutines, RSS
  blastradius version            print the version
  blastradius agent [flags]      (internal) load agent started inside pods
  blastradius proxy [flags]      (internal) reference data plane proxy: node, sidecar or waypoint
  blastradius proxy ztunnel [flags]  (internal) the node proxy as the ztunnel chart runs it: istiod, istio-cni (docs/istio.md)
  blastradius controlplane [flags]  (internal) reference control plane: discovery and CA
  blastradius events <dir>       (internal) a client pod's event files as a tar stream
  blastradius node-agent [flags] (internal) ambient node agent on Kubernetes: redirect + hand-off to the node proxy
  blastradius redirect [flags]   (internal) sidecar init container: the in-pod redirect rules
`

func main() {
	runNodeInit()
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		// Bad input is one line on stderr and exit 2, like every other
		// usage error; the full usage is one "help" away.
		fmt.Fprintln(stderr, "blastradius: no command given (run, scenarios, report, compare, bench, soak, version; try: blastradius help)")
		return 2
	}
	switch args[0] {
	case "run":
		return runCmd(args[1:], stdout, stderr)
	case "compare":
		return compareCmd(args[1:], stdout, stderr)
	case "soak":
		return soakCmd(args[1:], stdout, stderr)
	case "bench":
		return benchCmd(args[1:], stdout, stderr)
	case "bench-agent":
		return benchAgentCmd(args[1:], stdout, stderr)
	case "scenarios":
		if code, bad := noArgs(args, stderr); bad {
			return code
		}
		return scenariosCmd(stdout)
	case "report":
		return reportCmd(args[1:], stdout, stderr)
	case "cluster":
		return clusterCmd(args[1:], stdout, stderr)
	case "agent":
		return load.AgentMain(args[1:], stdout, stderr)
	case "proxy":
		return node.Main(args[1:], stdout, stderr)
	case "controlplane":
		return controlplane.Main(args[1:], stdout, stderr)
	case "node-agent":
		return nodeAgentCmd(args[1:], stdout, stderr)
	case "redirect":
		return redirectCmd(args[1:], stdout, stderr)
	case "events":
		return eventsCmd(args[1:], stdout, stderr)
	case "version", "--version":
		if code, bad := noArgs(args, stderr); bad {
			return code
		}
		fmt.Fprintln(stdout, "blastradius", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "blastradius: unknown command %q (try: blastradius help)\n", args[0])
	return 2
}

// noArgs refuses arguments to a command that takes none: ignoring them
// would let "blastradius scenarios node-crash" look like it did something
// with node-crash.
func noArgs(args []string, stderr io.Writer) (code int, bad bool) {
	if len(args) > 1 {
		fmt.Fprintf(stderr, "blastradius %s: unexpected argument %q (it takes none)\n", args[0], args[1])
		return 2, true
	}
	return 0, false
}
