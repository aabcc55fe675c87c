package main

import (
	"fmt"
	"io"
	"path/filepath"

	"blastradius.dev/blastradius/framework/sandbox"
)

// enterSandbox is the outside half of a sandboxed subcommand (run, bench,
// soak): it re-executes the subcommand inside the sandbox and returns its
// exit code. The caller has settled the results folder first (fixOutDir),
// so both halves agree on it.
func enterSandbox(cmd string, args []string, stderr io.Writer) int {
	code, err := sandbox.Enter(append([]string{cmd}, args...))
	if err != nil {
		fmt.Fprintf(stderr, "blastradius %s: %v\n", cmd, err)
		return 1
	}
	return code
}

// setupInside is the inside half: prepare the sandbox and make the results
// folder absolute.
func setupInside(cmd, outDir string, stderr io.Writer) (string, bool) {
	if err := sandbox.Setup(); err != nil {
		fmt.Fprintf(stderr, "blastradius %s: %v\n", cmd, err)
		return "", false
	}
	abs, err := filepath.Abs(outDir)
	if err != nil {
		fmt.Fprintf(stderr, "blastradius %s: %v\n", cmd, err)
		return "", false
	}
	return abs, true
}
