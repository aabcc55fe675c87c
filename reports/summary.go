package reports

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// Summary writes one table per trial: every flow's requests, failures,
// outages and disruption, then blast radius, noise and expectations.
func Summary(w io.Writer, run *results.Run) {
	for _, t := range run.Trials {
		flows := 0
		if t.Summary != nil {
			flows = len(t.Summary.Flows)
		}
		name, setup := t.Scenario, ""
		if t.Mode != "" {
			name += " in " + t.Mode
		}
		if t.SetupSeconds > 0 {
			setup = fmt.Sprintf(", %d pods ready for load after %.2fs", len(t.Topology.Pods), t.SetupSeconds)
		}
		fmt.Fprintf(w, "\n== %s: %s (%d nodes, %d flows, bring-up %.2fs%s) ==\n", name, t.Status, len(t.Topology.Nodes), flows, t.BringUpSeconds, setup)
		if t.Error != "" {
			fmt.Fprintf(w, "error: %s\n", t.Error)
		}
		for _, f := range t.Faults {
			line := fmt.Sprintf("fault: %s %s at +%.3fs", f.Kind, f.Target, sinceStart(t, f.Inject))
			if f.Recover != nil {
				line += fmt.Sprintf(", recovered at +%.3fs (%.3fs)", sinceStart(t, *f.Recover), f.Recover.Sub(f.Inject).Seconds())
			}
			fmt.Fprintln(w, line)
		}
		if t.Summary == nil {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FLOW\tREQUESTS\tFAILED\tSLOW\tOUTAGES\tDISRUPTED\tFAILURES BY CLASS\tSTREAM BREAKS / STALLS")
		fs := append([]measure.FlowSummary(nil), t.Summary.Flows...) // sorted for display only
		sort.SliceStable(fs, func(i, j int) bool { return fs[i].Flow.Control && !fs[j].Flow.Control })
		for _, f := range fs {
			var cls []string
			for _, c := range events.Classes {
				if n := f.ByClass[c]; n > 0 {
					cls = append(cls, fmt.Sprintf("%s:%d", c, n))
				}
			}
			missing := 0
			for _, o := range f.Outages {
				missing += o.ByClass["missing"]
			}
			if missing > 0 {
				cls = append(cls, fmt.Sprintf("missing:%d", missing))
			}
			breaks := "-"
			if f.Flow.Profile == "tcp-stream" {
				breaks = fmt.Sprintf("%d (max reconnect %.2fs) / %d (longest %.2fs)", f.Streams.Broken, f.Streams.MaxReconnectSeconds,
					f.Streams.Stalls, f.Streams.MaxStallSeconds)
			}
			disrupted := "-"
			if f.DisruptionSeconds > 0 {
				disrupted = fmt.Sprintf("%.3fs", f.DisruptionSeconds)
			}
			id := f.Flow.ID
			if f.Flow.Control {
				id += " (control)"
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", id, f.Requests, f.Failed, f.Slow, len(f.Outages), disrupted, dash(strings.Join(cls, " ")), breaks)
		}
		tw.Flush()
		rad := t.Summary.Radius
		fmt.Fprintf(w, "blast radius: %d/%d flows; pods: %s; nodes: %s\n", len(rad.Flows), len(t.Summary.Flows), dash(strings.Join(rad.Pods, " ")), dash(strings.Join(rad.Nodes, " ")))
		for _, p := range t.Precision {
			fmt.Fprintf(w, "precision: %s truth %.3fs measured %.3fs error %+.3fs", p.Flow, p.TruthSeconds, p.MeasuredSeconds, p.ErrorSeconds)
			if p.StartErrorSeconds != nil && p.EndErrorSeconds != nil {
				fmt.Fprintf(w, " start %+.3fs end %+.3fs", *p.StartErrorSeconds, *p.EndErrorSeconds)
			}
			fmt.Fprintf(w, " within=%v\n", p.Within)
		}
		if t.CPU != nil {
			fmt.Fprintf(w, "cpu: mean %.0f%%, max %.0f%% busy\n", t.CPU.Mean*100, t.CPU.Max*100)
		}
		if t.Noisy {
			fmt.Fprintf(w, "NOISY: %s\n", strings.Join(t.NoisyReasons, "; "))
		}
		if t.NoControlFlow != "" {
			fmt.Fprintf(w, "no control flow: %s\n", t.NoControlFlow)
		}
		if coarse := coarseFlows(t.Summary.Flows); len(coarse) > 0 {
			fmt.Fprintf(w, "resolution: %d flow(s) coarser than one request per bucket: %s\n", len(coarse), strings.Join(coarse, " "))
		}
		for _, e := range t.Expectations {
			mark := "PASS"
			switch {
			case e.Failed():
				mark = "FAIL"
			case !e.Pass:
				mark = "DIFFERS (informational)"
			}
			line := fmt.Sprintf("%s %s", mark, e.Name)
			if e.Detail != "" && !e.Pass {
				line += ": " + e.Detail
			}
			fmt.Fprintln(w, line)
		}
	}
}

// sinceStart is seconds from the start of load, the time axis of every report.
func sinceStart(t *results.Trial, at time.Time) float64 {
	if t.Window == nil {
		return 0
	}
	return at.Sub(t.Window.Start).Seconds()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// coarseFlows names the flows whose request interval is longer than a
// timeline bucket: their outages are placed only to that interval.
func coarseFlows(fs []measure.FlowSummary) []string {
	var out []string
	for _, f := range fs {
		if f.CoarserThanBucket {
			out = append(out, fmt.Sprintf("%s (%.0f ms)", f.Flow.ID, f.RequestIntervalMs))
		}
	}
	return out
}
