package e2e

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"blastradius.dev/blastradius/framework/results"
)

var _ = Describe("measurement against ground truth", func() {
	It("measures black holes of 100 ms, 300 ms and 1 s within one bucket, five times each", func() {
		out := outDir()
		run, log, code := runScenario(2*time.Minute, nil, "--scenario", "blackhole-precision", "--out", out)
		Expect(code).To(Equal(0), log)
		tr := run.Trials[0]
		Expect(tr.Summary).NotTo(BeNil())

		// The measured flow really ran at ≥ 200 rps.
		var target *results.FlowRef
		for i := range tr.Flows {
			if !tr.Flows[i].Control {
				target = &tr.Flows[i]
			}
		}
		Expect(target).NotTo(BeNil())
		Expect(target.QPS).To(BeNumerically(">=", 200))
		for _, f := range tr.Summary.Flows {
			if f.Flow.ID == target.ID {
				secs := tr.Window.End.Sub(tr.Window.Start).Seconds()
				Expect(float64(f.Requests)/secs).To(BeNumerically(">=", 200*0.95), "achieved rate")
			}
		}

		// Every hole, by requested length, measured within one bucket.
		bucket := run.Environment.BucketMs / 1000
		counts := map[int]int{}
		Expect(tr.Precision).To(HaveLen(15))
		for _, p := range tr.Precision {
			ms := int(p.TruthSeconds*10+0.5) * 100 // 0.1, 0.3, 1.0 s
			counts[ms]++
			Expect(p.MeasuredSeconds).To(BeNumerically("~", p.TruthSeconds, bucket),
				"hole of %.3fs measured as %.3fs", p.TruthSeconds, p.MeasuredSeconds)
		}
		Expect(counts).To(Equal(map[int]int{100: 5, 300: 5, 1000: 5}))
		// And nothing but the holes: the other flow saw no outage.
		for _, f := range tr.Summary.Flows {
			if f.Flow.ID != target.ID {
				Expect(f.Outages).To(BeEmpty(), f.Flow.ID)
			} else {
				Expect(f.Outages).To(HaveLen(15))
			}
		}
	})

	It("shows no outage interval at all in a 10 s run with no fault", func() {
		out := outDir()
		run, log, code := runScenario(time.Minute, nil, "--scenario", "baseline", "--out", out)
		Expect(code).To(Equal(0), log)
		tr := run.Trials[0]
		Expect(tr.Window.End.Sub(tr.Window.Start)).To(Equal(10 * time.Second))
		Expect(tr.Summary.Flows).To(HaveLen(28))
		for _, f := range tr.Summary.Flows {
			Expect(f.Requests).To(BeNumerically(">", 100), f.Flow.ID)
			Expect(f.Outages).To(BeEmpty(), f.Flow.ID)
			Expect(f.Failed).To(BeZero(), f.Flow.ID)
		}
	})
})

var _ = Describe("node crash", func() {
	It("disrupts exactly the flows to or from the crashed node", func() {
		out := outDir()
		run, log, code := runScenario(2*time.Minute, nil, "--scenario", "node-crash", "--out", out)
		Expect(code).To(Equal(0), log)
		tr := run.Trials[0]
		Expect(tr.Faults).To(HaveLen(1))
		Expect(tr.Faults[0].Target).To(Equal("node-3"))
		Expect(tr.Faults[0].Recover).NotTo(BeNil())
		crash := tr.Faults[0].Inject
		for _, f := range tr.Summary.Flows {
			touches := f.Flow.ClientNode == "node-3" || f.Flow.ServerNode == "node-3"
			if !touches {
				Expect(f.Outages).To(BeEmpty(), "%s should be untouched", f.Flow.ID)
				continue
			}
			Expect(f.Outages).NotTo(BeEmpty(), "%s should be disrupted", f.Flow.ID)
			// The outage begins at the crash, not before, and lasts about as
			// long as the node was down, give or take detection and the
			// reboot's restarts.
			o := f.Outages[0]
			down := tr.Faults[0].Recover.Sub(crash).Seconds()
			Expect(o.Start.Sub(crash)).To(BeNumerically("~", 0, time.Second), f.Flow.ID)
			Expect(f.DisruptionSeconds).To(BeNumerically(">", down*0.8), f.Flow.ID)
			Expect(f.DisruptionSeconds).To(BeNumerically("<", down+6), f.Flow.ID)
		}
	})
})
