package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/suites/internal/suiterun"
)

// nsRefs lists every namespace (as "net:[inode]", "mnt:[inode]", ...) that a
// process refers to, through /proc/<pid>/ns/* or an open descriptor: a
// namespace held only by a file descriptor shows up in the second.
func nsRefs(pid string) []string {
	var out []string
	for _, dir := range []string{"/proc/" + pid + "/ns", "/proc/" + pid + "/fd"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			l, err := os.Readlink(filepath.Join(dir, e.Name()))
			if err == nil && strings.Contains(l, ":[") && !strings.HasPrefix(l, "socket:") &&
				!strings.HasPrefix(l, "pipe:") && !strings.HasPrefix(l, "anon_inode:") {
				out = append(out, l)
			}
		}
	}
	return out
}

func pids() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if e.Name()[0] >= '0' && e.Name()[0] <= '9' {
			out = append(out, e.Name())
		}
	}
	return out
}

// ofBinary lists processes running the binary under test: the runner, and
// the slim build its pods run.
func ofBinary() []string {
	var out []string
	for _, p := range pids() {
		if exe, err := os.Readlink("/proc/" + p + "/exe"); err == nil && (exe == suiterun.Binary || exe == suiterun.Binary+netns.PodBinarySuffix) {
			out = append(out, p)
		}
	}
	return out
}

// allRefs is every namespace any process on the machine refers to.
func allRefs() map[string]bool {
	m := map[string]bool{}
	for _, p := range pids() {
		for _, r := range nsRefs(p) {
			m[r] = true
		}
	}
	return m
}

// waitForFault waits until the run in out is mid-trial: its first trial's
// fault injected, load running.
func waitForFault(out string) {
	Eventually(func() int {
		r, err := results.Load(out)
		if err != nil || len(r.Trials) == 0 {
			return 0
		}
		return len(r.Trials[0].Faults)
	}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(BeNumerically(">=", 1))
}

// createdSince is every namespace the binary's processes refer to that was
// not in baseline: what the run created, as seen from outside.
func createdSince(baseline map[string]bool) map[string]bool {
	created := map[string]bool{}
	procs := ofBinary()
	Expect(len(procs)).To(BeNumerically(">=", 5), "runner plus agents")
	for _, p := range procs {
		for _, r := range nsRefs(p) {
			if !baseline[r] {
				created[r] = true
			}
		}
	}
	return created
}

// expectNothingLeft checks that no process of the binary, none of the
// created namespaces and no mount outlives the run.
func expectNothingLeft(created map[string]bool, mountsBefore []byte) {
	Eventually(ofBinary).WithTimeout(10*time.Second).Should(BeEmpty(), "processes left")
	Eventually(func() []string {
		var left []string
		now := allRefs()
		for r := range created {
			if now[r] {
				left = append(left, r)
			}
		}
		return left
	}).WithTimeout(10*time.Second).Should(BeEmpty(), "namespaces left")
	mountsAfter, err := os.ReadFile("/proc/self/mountinfo")
	Expect(err).NotTo(HaveOccurred())
	Expect(string(mountsAfter)).To(Equal(string(mountsBefore)), "mounts changed")
}

var _ = Describe("kill -9 of the runner", func() {
	It("leaves no process, namespace or mount behind, and keeps what was measured", func() {
		out := outDir()
		mountsBefore, err := os.ReadFile("/proc/self/mountinfo")
		Expect(err).NotTo(HaveOccurred())
		baseline := allRefs()

		cmd := exec.Command(suiterun.Binary, "run", "--scenario", "node-crash", "--out", out)
		cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

		// Mid-scenario: the node has crashed and load is running.
		waitForFault(out)
		created := createdSince(baseline)
		kinds := map[string]bool{}
		for r := range created {
			kinds[strings.SplitN(r, ":", 2)[0]] = true
		}
		Expect(kinds).To(HaveKey("net"))
		Expect(kinds).To(HaveKey("mnt"))
		Expect(kinds).To(HaveKey("user"))

		Expect(cmd.Process.Signal(syscall.SIGKILL)).To(Succeed())
		_ = cmd.Wait()
		expectNothingLeft(created, mountsBefore)

		// What was measured before the kill is on disk and readable.
		run, err := results.Load(out)
		Expect(err).NotTo(HaveOccurred())
		Expect(run.Status).To(Equal(results.StatusRunning), "killed mid-run")
		tr := run.Trials[0]
		Expect(tr.Flows).NotTo(BeEmpty())
		total := 0
		for _, f := range tr.Flows {
			evs, err := events.ReadFile(filepath.Join(out, f.Events))
			Expect(err).NotTo(HaveOccurred(), f.Events)
			total += len(evs)
			if len(evs) > 0 {
				Expect(evs[0].Start).To(BeNumerically(">=", tr.Window.Start.UnixNano()-int64(time.Second)))
			}
		}
		Expect(total).To(BeNumerically(">", 1000))
	})
})

var _ = Describe("Ctrl-C of the runner", func() {
	It("stops every workload, keeps what was measured, renders a partial report and exits non-zero", func() {
		out := outDir()
		mountsBefore, err := os.ReadFile("/proc/self/mountinfo")
		Expect(err).NotTo(HaveOccurred())
		baseline := allRefs()

		// Two scenarios: the interrupt comes during the first, so the
		// second must never start.
		var log bytes.Buffer
		cmd := exec.Command(suiterun.Binary, "run", "--scenario", "node-crash,baseline", "--out", out)
		cmd.Stdout, cmd.Stderr = &log, &log // one writer: exec copies both with one goroutine
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() { _ = cmd.Process.Kill() })
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		waitForFault(out)
		created := createdSince(baseline)
		Expect(created).NotTo(BeEmpty())

		Expect(cmd.Process.Signal(syscall.SIGINT)).To(Succeed())
		var werr error
		Eventually(exited).WithTimeout(60*time.Second).Should(Receive(&werr), "the run did not stop within 60 s of Ctrl-C")
		var ee *exec.ExitError
		Expect(werr).To(BeAssignableToTypeOf(ee), "exit status must be non-zero: %v\n%s", werr, log.String())
		Expect(werr.(*exec.ExitError).ExitCode()).To(Equal(1), log.String())
		Expect(log.String()).To(ContainSubstring("interrupted: stopping the trial"))

		// Workloads stopped: no process, namespace or mount of the run.
		expectNothingLeft(created, mountsBefore)

		// Results flushed: run.json final, the interrupted trial's events on disk.
		run, err := results.Load(out)
		Expect(err).NotTo(HaveOccurred())
		Expect(run.Status).To(Equal(results.StatusInterrupted))
		Expect(run.Finished).NotTo(BeNil())
		Expect(run.Trials).To(HaveLen(1), "the second scenario must not start")
		Expect(run.Trials[0].Status).To(Equal(results.StatusInterrupted))
		total := 0
		for _, f := range run.Trials[0].Flows {
			evs, err := events.ReadFile(filepath.Join(out, f.Events))
			Expect(err).NotTo(HaveOccurred(), f.Events)
			total += len(evs)
		}
		Expect(total).To(BeNumerically(">", 1000))
		junit, err := os.ReadFile(filepath.Join(out, "junit.xml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(junit)).To(ContainSubstring("node-crash"))

		// A partial report, saying so.
		page, err := os.ReadFile(filepath.Join(out, "report.html"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(page)).To(ContainSubstring("Incomplete run (status interrupted)"))
		Expect(log.String()).To(ContainSubstring("report: " + filepath.Join(out, "report.html")))
	})
})

var _ = Describe("unprivileged", func() {
	It("runs as an unprivileged user, or stops at once naming the kernel setting", func() {
		if os.Getuid() != 0 {
			Skip("already unprivileged: every other spec covers this")
		}
		if _, err := exec.LookPath("setpriv"); err != nil {
			Skip("setpriv not installed")
		}
		out := outDir()
		began := time.Now()
		ctxRun, log, code := runMaybe(time.Minute, []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"},
			"--scenario", "baseline", "--out", out)
		if code != 0 && ctxRun == nil {
			Expect(log).To(ContainSubstring("kernel setting"), log)
			Expect(time.Since(began)).To(BeNumerically("<", 5*time.Second))
			return
		}
		Expect(code).To(Equal(0), log)
		Expect(ctxRun.Environment.Rootless).To(BeTrue())
		Expect(ctxRun.Trials[0].Status).To(Equal(results.StatusDone))
		st, err := os.Stat(filepath.Join(out, "run.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Sys().(*syscall.Stat_t).Uid).To(Equal(uint32(65534)), "results belong to the user who ran it")
	})
})
