// Package suiterun is what every Ginkgo suite shares: the blastradius binary
// under test, fresh results folders, running a scenario and JUnit output.
// Suites drive blastradius the way users do (the binary) and read results
// through the framework's public results package.
package suiterun

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/reporters"
	. "github.com/onsi/gomega"

	"blastradius.dev/blastradius/framework/results"
)

// Binary is the blastradius binary under test; BuildBinary sets it.
var Binary string

// BuildBinary builds the binary once per suite into a folder any user can
// read (a spec may run it as nobody). Call it from BeforeSuite.
func BuildBinary() {
	dir, err := os.MkdirTemp("", "blastradius-suite-bin-")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.Chmod(dir, 0o755)).To(Succeed())
	DeferCleanup(os.RemoveAll, dir)
	Binary = filepath.Join(dir, "blastradius")
	out, err := exec.Command("go", "build", "-o", Binary, "blastradius.dev/blastradius/cmd/blastradius").CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	// The slim build the pods run, as make build installs it.
	out, err = exec.Command("go", "build", "-tags", "nokube", "-o", Binary+"-pod", "blastradius.dev/blastradius/cmd/blastradius").CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
}

// OutDir is a fresh results folder path, writable by anyone; it is removed
// after a passing spec and kept (and reported) after a failing one.
func OutDir() string {
	dir, err := os.MkdirTemp("", "blastradius-suite-run-")
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

// Run runs `blastradius run --provider <PROVIDER> args...` (prefixed by wrap, e.g. setpriv) to
// completion within timeout and returns run.json (nil if none was
// written), the combined output and the exit code.
func Run(timeout time.Duration, wrap []string, args ...string) (*results.Run, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append(append(append([]string(nil), wrap...), Binary, "run"), ProviderArgs()...)
	argv = append(argv, args...)
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
		if a == "--out" && i+1 < len(args) {
			out = args[i+1]
		}
	}
	run, lerr := results.Load(out)
	if lerr != nil {
		return nil, buf.String(), code
	}
	return run, buf.String(), code
}

// JUnit writes the suite's JUnit report to $BLASTRADIUS_JUNIT_DIR/<name>.xml
// (default: results/junit under the repository root). Report entries become
// testcase properties. Call it from ReportAfterSuite.
func JUnit(report Report, name string) {
	dir := os.Getenv("BLASTRADIUS_JUNIT_DIR")
	if dir == "" {
		wd, _ := os.Getwd()
		dir = filepath.Join(wd, "..", "..", "results", "junit")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(GinkgoWriter, "junit: %v\n", err)
		return
	}
	path := filepath.Join(dir, name+".xml")
	if err := reporters.GenerateJUnitReportWithConfig(report, path, reporters.JunitReportConfig{OmitLeafNodeType: true}); err != nil {
		fmt.Fprintf(GinkgoWriter, "junit: %v\n", err)
		return
	}
	fmt.Printf("JUnit report: %s\n", path)
}
