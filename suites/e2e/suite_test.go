package e2e

import (
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

// These specs test the embedded cluster itself (its sandbox, clean-up
// after kill -9, black holes and partitions it injects, the reference
// data plane's processes); on Kubernetes the fault suite is the one that
// runs.
var _ = BeforeEach(func() {
	if suiterun.OnKubernetes() {
		Skip("embedded-cluster spec; PROVIDER=" + suiterun.Provider() + " runs the fault suite (suites/faults)")
	}
})

var _ = ReportAfterSuite("junit", func(r Report) { suiterun.JUnit(r, "e2e") })

var _ = BeforeSuite(suiterun.BuildBinary)

// outDir is a fresh results folder, writable by anyone.
func outDir() string { return suiterun.OutDir() }

// runScenario runs the binary to completion and returns run.json and the output.
func runScenario(timeout time.Duration, wrap []string, args ...string) (*results.Run, string, int) {
	run, log, code := runMaybe(timeout, wrap, args...)
	Expect(run).NotTo(BeNil(), log)
	return run, log, code
}

// runMaybe is runScenario for runs that may stop before writing run.json.
func runMaybe(timeout time.Duration, wrap []string, args ...string) (*results.Run, string, int) {
	return suiterun.Run(timeout, wrap, args...)
}
