package faults

import (
	"fmt"
	"slices"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/suites/internal/suiterun"
)

func TestFaults(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "blastradius fault matrix ("+suiterun.Provider()+")")
}

var _ = BeforeSuite(func() {
	Expect(suiterun.CheckProvider()).To(Succeed())
	suiterun.BuildBinary()
})

var _ = ReportAfterSuite("junit", func(r Report) { suiterun.JUnit(r, "faults") })

// slowLoad marks scenarios whose load lasts longer than this as slow.
const slowLoad = 12 * time.Second

var _ = Describe("fault matrix", func() {
	for _, name := range scenario.MatrixNames() {
		sc, err := scenario.Lookup(name)
		if err != nil {
			panic(err)
		}
		kind, err := scenario.LookupFault(sc.Fault.Kind)
		if err != nil {
			panic(err)
		}
		for _, mode := range scenario.AllModes {
			labels := Labels{"fault:" + sc.Fault.Kind, "mode:" + mode, suiterun.ProviderLabel()}
			if sc.Duration > slowLoad {
				labels = append(labels, "slow")
			}
			attempts := FlakeAttempts(1)
			if name == scenario.FaultNodeProxyCrashCPDown {
				// A known flake, not hidden: when the crashed proxy gets its
				// configuration back, the proxies reconnect to it at once,
				// and on two shared cores the flows between the other nodes
				// answer 100-200 ms late for a moment (about one run in
				// five, measured with and without the proxy's graceful
				// close; both attempts failed once in a cold CI run). Each
				// node has its own CPUs in a real cluster; here up to three
				// attempts run, and three failures in a row still fail the
				// spec.
				attempts = FlakeAttempts(3)
			}
			if name == scenario.FaultNodeProxyRestart {
				// A known flake, not hidden: the restart's check fails on
				// any failed request from 1.5 s before the handoff to 1 s
				// after it, and on two shared cores the reference data
				// plane fails an isolated new connection now and then
				// whether or not a proxy restarts (a response cut short,
				// "unexpected EOF", or a 500 ms timeout; 7 of 94 trials had
				// one, in about 6,600 requests, 3 of them in that window,
				// two of those before the new proxy had started). The
				// scenario's own graceful-handoff expectation still reports
				// every such trial. Three failures in a row still fail the
				// spec.
				attempts = FlakeAttempts(3)
			}
			It(fmt.Sprintf("%s in %s mode", name, mode), labels, attempts, func() {
				if kind.Modes != nil && !slices.Contains(kind.Modes, mode) {
					Skip(fmt.Sprintf("fault %s needs mode %v: %s", kind.Name, kind.Modes, kind.ModeReason))
				}
				run, log, code := suiterun.Run(suiterun.TrialTimeout(sc.Duration), nil, "--mode", mode, "--scenario", name, "--out", suiterun.OutDir())
				Expect(run).NotTo(BeNil(), log)
				Expect(run.Trials).To(HaveLen(1), log)
				tr := run.Trials[0]
				if tr.Status == results.StatusSkipped {
					// The provider cannot inject this fault: the binary says why.
					Skip(tr.Error)
				}
				Expect(tr.Error).To(BeEmpty(), log)
				Expect(tr.Verdict).NotTo(BeNil(), log)
				v := tr.Verdict
				AddReportEntry("verdict", v.Value)
				AddReportEntry("affectedFlows", fmt.Sprintf("%d/%d", v.Affected, v.Total))
				AddReportEntry("disruptionSeconds", v.DisruptionSeconds)
				AddReportEntry("failedRequests", v.FailedRequests)
				AddReportEntry("brokenStreams", v.BrokenStreams)
				AddReportEntry("slowRequests", v.SlowRequests)
				AddReportEntry("stalledStreams", v.StalledStreams)
				AddReportEntry("faultNodes", v.FaultNodes)
				if len(v.Beyond) > 0 {
					AddReportEntry("beyond", v.Beyond)
				}
				if tr.Noisy {
					AddReportEntry("noisy", tr.NoisyReasons)
				}
				// The verdict is computed from the measured flows; these two
				// pin it from both sides: a fault known to reach beyond its
				// node, and the node proxy crash the suite exists for.
				switch {
				case sc.Fault.Kind == scenario.FaultSegmentPartition:
					Expect(v.Value).To(Equal(scenario.VerdictClusterWide), log)
					Expect(v.Beyond).NotTo(BeEmpty(), log)
					// Its control flow runs inside one node, out of the
					// fault's reach (in ambient mode there is none: every
					// node proxy has tunnels across the cut), so the trial is
					// never noisy by it.
					if mode == "ambient" {
						Expect(tr.NoControlFlow).To(ContainSubstring("every node proxy"), log)
					} else {
						Expect(tr.NoControlFlow).To(BeEmpty(), log)
					}
					Expect(tr.NoisyReasons).NotTo(ContainElement(ContainSubstring("control flow")), log)
				case sc.Fault.Kind == scenario.FaultNodeProxyCrash && mode == "ambient":
					Expect(v.Value).To(Equal(scenario.VerdictContained), log)
					Expect(v.Affected).To(BeNumerically(">", 0), log)
				}
				for _, e := range tr.Expectations {
					Expect(e.Pass).To(BeTrue(), "%s: %s\n%s", e.Name, e.Detail, log)
				}
				if check := ambientChecks[name]; check != nil && mode == "ambient" {
					check(tr, log)
				}
				Expect(tr.Status).To(Equal(results.StatusDone), log)
				Expect(code).To(Equal(0), log)
			})
		}
	}
})
