package reports

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"blastradius.dev/blastradius/framework/results"
)

// Verdicts writes the verdict table: one row per fault (scenario) and mode,
// with affected flows, disruption (late answers included), failed and slow
// requests, broken and stalled streams and the verdict; over several trials, the mean with its 95 % interval and p95.
func Verdicts(w io.Writer, run *results.Run) {
	if len(run.Matrix) == 0 {
		return
	}
	multi := false
	for _, c := range run.Matrix {
		multi = multi || c.Trials > 1
	}
	fmt.Fprintln(w, "\n== verdicts ==")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if multi {
		fmt.Fprintln(tw, "FAULT\tMODE\tTRIALS\tAFFECTED FLOWS\tDISRUPTION S (mean [95% CI] p95)\tFAILED REQUESTS (mean [95% CI] worst)\tSLOW REQUESTS (mean, p95)\tBROKEN STREAMS\tSTALLED STREAMS\tVERDICT")
	} else {
		fmt.Fprintln(tw, "FAULT\tMODE\tAFFECTED FLOWS\tDISRUPTION S\tFAILED REQUESTS\tSLOW REQUESTS\tBROKEN STREAMS\tSTALLED STREAMS\tVERDICT")
	}
	na := map[string][]string{}
	var naOrder []string
	for _, c := range run.Matrix {
		name := c.Scenario
		if c.Fault != "" && c.Fault != c.Scenario {
			name += " (" + c.Fault + ")"
		}
		if c.Trials == 0 && c.Skipped != "" {
			// Listed below the table, grouped: a fault a mode does not have
			// is not a result.
			k := name + "\x00" + c.Skipped
			if _, ok := na[k]; !ok {
				naOrder = append(naOrder, k)
			}
			na[k] = append(na[k], c.Mode)
			continue
		}
		if c.Trials == 0 {
			why := fmt.Sprintf("ERROR: %d trial(s) could not run", c.Errors)
			if multi {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", name, c.Mode, why)
			} else {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t%s\n", name, c.Mode, why)
			}
			continue
		}
		verdict := c.Verdict
		if verdict == "" {
			verdict = "- (no fault)"
		}
		if len(c.Verdicts) > 1 {
			var parts []string
			for _, v := range []string{"no-data-plane-impact", "no-impact", "contained", "cluster-wide"} {
				if n := c.Verdicts[v]; n > 0 {
					parts = append(parts, fmt.Sprintf("%s×%d", v, n))
				}
			}
			verdict += " (" + strings.Join(parts, ", ") + ")"
		}
		if notes := cellNotes(c); len(notes) > 0 {
			verdict += " [" + strings.Join(notes, "; ") + "]"
		}
		if multi {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f/%d\t%.2f [%.2f, %.2f] %.2f\t%.1f [%.1f, %.1f] %.0f\t%.0f, %.0f\t%.1f\t%.1f\t%s\n", name, c.Mode, c.Trials,
				c.Affected.Mean, c.Total, c.DisruptionSeconds.Mean, c.DisruptionSeconds.CILow, c.DisruptionSeconds.CIHigh, c.DisruptionSeconds.P95,
				c.FailedRequests.Mean, c.FailedRequests.CILow, c.FailedRequests.CIHigh, c.FailedRequests.Max, c.SlowRequests.Mean, c.SlowRequests.P95, c.BrokenStreams.Mean, c.StalledStreams.Mean, verdict)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%.0f/%d\t%.2f\t%.0f\t%.0f\t%.0f\t%.0f\t%s\n", name, c.Mode, c.Affected.Mean, c.Total,
				c.DisruptionSeconds.Mean, c.FailedRequests.Mean, c.SlowRequests.Mean, c.BrokenStreams.Mean, c.StalledStreams.Mean, verdict)
		}
	}
	tw.Flush()
	if len(naOrder) > 0 {
		fmt.Fprintln(w, "not applicable (skipped, with the reason):")
		for _, k := range naOrder {
			name, why, _ := strings.Cut(k, "\x00")
			fmt.Fprintf(w, "  %s in %s: %s\n", name, strings.Join(na[k], ", "), why)
		}
	}
}

// cellNotes are the caveats of a matrix cell, for the text table and the
// HTML report alike.
func cellNotes(c results.MatrixCell) []string {
	var notes []string
	if c.Failed > 0 {
		notes = append(notes, fmt.Sprintf("%d expectation failure(s)", c.Failed))
	}
	if c.Noisy > 0 {
		notes = append(notes, fmt.Sprintf("%d noisy", c.Noisy))
	}
	if c.Errors > 0 {
		notes = append(notes, fmt.Sprintf("%d error(s)", c.Errors))
	}
	return notes
}

// TrialLine is one line saying how a trial ended.
func TrialLine(t *results.Trial) string {
	line := fmt.Sprintf("%s in %s: %s", t.Scenario, t.Mode, t.Status)
	if t.Error != "" {
		line += " (" + t.Error + ")"
	}
	if v := t.Verdict; v != nil {
		line += fmt.Sprintf("; verdict %s, %d/%d flows affected, %.2f disruption-s, %d failed requests, %d slow requests, %d broken streams, %d stalled streams",
			v.Value, v.Affected, v.Total, v.DisruptionSeconds, v.FailedRequests, v.SlowRequests, v.BrokenStreams, v.StalledStreams)
	}
	for _, e := range t.Expectations {
		if !e.Pass {
			mark := "FAIL"
			if e.Informational {
				mark = "DIFFERS from the reference's design (informational)"
			}
			line += "; " + mark + " " + e.Name
			if e.Detail != "" {
				line += ": " + e.Detail
			}
		}
	}
	if t.Noisy {
		line += "; NOISY"
	}
	return line
}

// Failures writes the full summary of the trials that did not end done, so
// a long run's output stays short and nothing wrong is hidden.
func Failures(w io.Writer, run *results.Run) {
	bad := *run
	bad.Trials = nil
	for _, t := range run.Trials {
		if t.Status != results.StatusDone && t.Status != results.StatusSkipped {
			bad.Trials = append(bad.Trials, t)
		}
	}
	Summary(w, &bad)
}
