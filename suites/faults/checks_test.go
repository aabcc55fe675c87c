package faults

import (
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
)

// ambientChecks are what a scenario's run in ambient mode must show beyond
// its expectations: how the reference data plane behaves in that fault, read
// from the measured flows.
var ambientChecks = map[string]func(tr *results.Trial, log string){
	// A graceful restart under ≥ 500 new connections a second through the
	// restarting proxy fails no request during the handoff, and the streams
	// through it live until the drain deadline (3 s) and break then. Late
	// answers are not failures: on two shared cores the new proxy's start
	// delays a few new connections by 100-150 ms (an interval of late
	// answers only, reported), which the scenario's own expectation does
	// not count either.
	"node-proxy-restart": func(tr *results.Trial, log string) {
		var sigterm time.Time
		var recovered *time.Time
		for _, f := range tr.Faults {
			if f.Kind == scenario.FaultNodeProxyRestart {
				sigterm, recovered = f.Inject, f.Recover
			}
		}
		Expect(sigterm.IsZero()).To(BeFalse(), log)
		Expect(recovered).NotTo(BeNil(), log)
		rate := 0.0
		for _, f := range tr.Summary.Flows {
			touches := f.Flow.ClientNode == "node-3" || f.Flow.ServerNode == "node-3"
			switch {
			case f.Flow.Profile == "http-newconn" && touches:
				rate += f.Flow.QPS
				for _, o := range f.Outages {
					outside := o.End.Before(sigterm.Add(-1500*time.Millisecond)) || o.Start.After(recovered.Add(time.Second))
					if o.Failures == 0 {
						if !outside {
							AddReportEntry("late answers in the handoff", fmt.Sprintf("%s: %d at %s (%.3fs)",
								f.Flow.ID, o.Slow, o.Start.Format("15:04:05.000"), o.Seconds))
						}
						continue
					}
					Expect(outside).To(BeTrue(), "%s failed during the handoff at %s\n%s", f.Flow.ID, o.Start, log)
				}
				Expect(f.Requests).To(BeNumerically(">", 1000), f.Flow.ID)
			case f.Flow.Profile == "tcp-stream":
				Expect(f.Streams.Broken).To(BeNumerically(">", 0), "%s: streams are closed at the deadline", f.Flow.ID)
				Expect(f.Outages).NotTo(BeEmpty(), f.Flow.ID)
				Expect(f.Outages[0].Start.Sub(sigterm)).To(BeNumerically("~", 3*time.Second, 600*time.Millisecond), f.Flow.ID)
			}
		}
		Expect(rate).To(BeNumerically(">=", 500))
	},
	// A node proxy crash starts no outage before the crash itself.
	"node-proxy-crash": func(tr *results.Trial, log string) {
		crash := tr.Faults[0].Inject
		for _, f := range tr.Summary.Flows {
			if f.Flow.ClientNode != "node-3" && f.Flow.ServerNode != "node-3" {
				continue
			}
			for _, o := range f.Outages {
				Expect(o.Start).To(BeTemporally(">=", crash.Add(-100*time.Millisecond)), f.Flow.ID)
			}
		}
	},
	// New connections fail because certificates expire during the control
	// plane's outage: every expiry comes after the outage began.
	"cert-expiry": func(tr *results.Trial, log string) {
		Expect(tr.CertExpiries).NotTo(BeEmpty(), log)
		down := tr.Faults[0].Inject
		for _, exp := range tr.CertExpiries {
			Expect(exp).To(BeTemporally(">", down.Add(time.Second)))
		}
	},
	// A node proxy keeps configuration and certificates in memory only, like
	// the real one: restarted while the control plane is down it has
	// neither, so every flow through its node is disrupted for most of the
	// time until the control plane returns.
	"node-proxy-crash-during-cp-outage": func(tr *results.Trial, log string) {
		var kill, back time.Time
		for _, f := range tr.Faults {
			switch f.Kind {
			case scenario.FaultNodeProxyCrash:
				kill = f.Inject
			case scenario.FaultControlPlaneDown:
				Expect(f.Recover).NotTo(BeNil(), log)
				back = *f.Recover
			}
		}
		Expect(kill.IsZero() || back.IsZero()).To(BeFalse(), log)
		for _, f := range tr.Summary.Flows {
			if f.Flow.ClientNode != "node-3" && f.Flow.ServerNode != "node-3" {
				continue
			}
			Expect(f.DisruptionSeconds).To(BeNumerically(">", back.Sub(kill).Seconds()*0.7), f.Flow.ID)
		}
	},
}
