package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"blastradius.dev/blastradius/framework/sandbox"
)

// enterSandbox is the outside half of a sandboxed subcommand (run, bench):
// it fixes the results folder first, so both sides agree on it, refuses one
// that already holds a result (marker), re-executes the subcommand inside
// the sandbox and returns its exit code. outDir is the --out value ("" picks
// results/<prefix><UTC time> and adds --out to args).
func enterSandbox(cmd string, args []string, outDir, prefix, marker string, stderr io.Writer) int {
	if outDir == "" {
		outDir = defaultOutDir(prefix)
		args = append(args, "--out", outDir)
	}
	if _, err := os.Stat(filepath.Join(outDir, marker)); err == nil {
		fmt.Fprintf(stderr, "blastradius %s: %s already holds a %s; choose another --out\n", cmd, outDir, cmd)
		return 2
	}
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
