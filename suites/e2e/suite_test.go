package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/suites/internal/suiterun"
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "blastradius e2e (embedded cluster)")
}

var _ = ReportAfterSuite("junit", func(r Report) { suiterun.JUnit(r, "e2e") })

// binary is the blastradius binary under test, built once per suite into a
// folder any user can read (the unprivileged spec runs it as nobody).
var binary string

var _ = BeforeSuite(func() {
	dir, err := os.MkdirTemp("", "blastradius-e2e-bin-")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.Chmod(dir, 0o755)).To(Succeed())
	DeferCleanup(os.RemoveAll, dir)
	binary = filepath.Join(dir, "blastradius")
	out, err := exec.Command("go", "build", "-o", binary, "blastradius.dev/blastradius/cmd/blastradius").CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
})

// outDir is a fresh results folder, writable by anyone.
func outDir() string {
	dir, err := os.MkdirTemp("", "blastradius-e2e-run-")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.Chmod(dir, 0o777)).To(Succeed())
	DeferCleanup(func() {
		if !CurrentSpecReport().Failed() {
			os.RemoveAll(dir)
		} else {
			AddReportEntry("results kept at", dir)
		}
	})
	return filepath.Join(dir, "run")
}

// runScenario runs the binary to completion and returns run.json and the output.
func runScenario(timeout time.Duration, wrap []string, args ...string) (*results.Run, string, int) {
	run, log, code := runMaybe(timeout, wrap, args...)
	Expect(run).NotTo(BeNil(), log)
	return run, log, code
}

// runMaybe is runScenario for runs that may stop before writing run.json.
func runMaybe(timeout time.Duration, wrap []string, args ...string) (*results.Run, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(append(wrap, binary, "run"), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		Expect(err).NotTo(HaveOccurred(), buf.String())
	}
	var out string
	for i, a := range args {
		if a == "--out" {
			out = args[i+1]
		}
	}
	run, lerr := results.Load(out)
	if lerr != nil {
		return nil, buf.String(), code
	}
	return run, buf.String(), code
}
