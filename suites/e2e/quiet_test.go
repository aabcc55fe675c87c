package e2e

import (
	"context"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"blastradius.dev/blastradius/framework/measure"
)

var _ = Describe("no fault on a busy machine", Label("slow"), func() {
	It("shows no outage, no late answer and no stall in ten 10 s runs of the default matrix while a core is busy", func() {
		// A CPU-bound process takes one of the machine's cores for the
		// whole run: late-answer detection must not mistake a starved
		// harness for a disruption.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		hog := exec.CommandContext(ctx, "sh", "-c", "while :; do :; done")
		hog.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		hog.Cancel = func() error { return syscall.Kill(-hog.Process.Pid, syscall.SIGKILL) }
		Expect(hog.Start()).To(Succeed())
		DeferCleanup(func() { cancel(); _ = hog.Wait() })

		out := outDir()
		run, log, code := runScenario(8*time.Minute, nil, "--scenario", "baseline", "--mode", "none,ambient", "--trials", "5", "--out", out)
		Expect(code).To(Equal(0), log)
		Expect(run.Trials).To(HaveLen(10))
		for _, tr := range run.Trials {
			Expect(tr.Window.End.Sub(tr.Window.Start)).To(Equal(10 * time.Second))
			Expect(tr.Summary.Flows).To(HaveLen(28))
			for _, f := range tr.Summary.Flows {
				where := tr.Mode + " #" + strconv.Itoa(tr.Index) + " " + f.Flow.ID
				Expect(f.Requests).To(BeNumerically(">", 100), where)
				Expect(f.StallThresholdMs).To(BeNumerically(">=", measure.DefaultStallFloor.Seconds()*1000), where)
				Expect(f.Outages).To(BeEmpty(), where)
				Expect(f.Failed).To(BeZero(), where)
				Expect(f.Slow).To(BeZero(), "%s: threshold %.0f ms, latency before %+v", where, f.StallThresholdMs, f.Latency.Before)
				Expect(f.Streams.Stalls).To(BeZero(), where)
				Expect(f.Streams.Broken).To(BeZero(), where)
			}
		}
	})
})
