package baseline

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as indented JSON (docs/compare.md).
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// Label names a variant for people: "node-crash [ambient] 3n/8w", with the
// fault kind when it is not the scenario's name.
func (v *Variant) Label() string {
	s := v.Scenario
	if v.Fault != "" && v.Fault != v.Scenario {
		s += " (" + v.Fault + ")"
	}
	return fmt.Sprintf("%s [%s] %dn/%dw", s, v.Mode, v.Topology.Nodes, v.Topology.Workloads)
}

// WriteText writes the comparison table, then why each variant that did not
// pass got its tier, then the skipped and errored trials and a summary line.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	runs := 0
	trials := 0
	for _, b := range r.Baselines {
		if b.Ignored == "" {
			runs++
			trials += b.Trials
		}
	}
	fmt.Fprintf(ew, "compare %s against %d baseline run(s), %d matching trial(s); min history %d, flake tolerance %.0f%%\n\n",
		r.Run.Dir, runs, trials, r.Options.MinHistory, r.Options.FlakeTolerance*100)
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIANT\tHISTORY\tDISRUPTION S p95/p99\tTHIS RUN\tFAILED REQ p95/p99\tTHIS RUN\tVERDICT (usual → this run)\tTIER")
	for _, v := range r.Variants {
		dis, disV := "-", "-"
		if g := v.DisruptionSeconds; g != nil {
			dis, disV = fmt.Sprintf("%.2f / %.2f", g.PassLimit, floored(g.P99, g.Floor)), fmt.Sprintf("%.2f", g.Value)
		}
		fail, failV := "-", "-"
		if g := v.FailedRequests; g != nil {
			fail, failV = fmt.Sprintf("%.0f / %.0f", g.PassLimit, floored(g.P99, g.Floor)), fmt.Sprintf("%.0f", g.Value)
		}
		verdict := "-"
		if c := v.Verdict; c != nil {
			verdict = c.Usual + " → " + c.Value
		}
		tier := strings.ToUpper(string(v.Tier))
		if v.Noisy > 0 {
			tier += fmt.Sprintf(" (%d/%d noisy)", v.Noisy, v.Trials)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Label(), v.History.Trials, dis, disV, fail, failV, verdict, tier)
	}
	tw.Flush()
	header := false
	for _, v := range r.Variants {
		if v.Tier == TierPass {
			continue
		}
		if !header {
			fmt.Fprintln(ew, "\nwhy:")
			header = true
		}
		fmt.Fprintf(ew, "  %s: %s: %s\n", v.Label(), v.Tier, strings.Join(v.Reasons, "; "))
	}
	// Say which disruption figure each variant compared: the figure with
	// late answers, or failed requests' alone against an older history.
	var failedOnly []string
	for _, v := range r.Variants {
		if v.DisruptionSeconds != nil && v.Compares == ComparesFailedOnly {
			failedOnly = append(failedOnly, v.Label())
		}
	}
	switch {
	case len(failedOnly) == 0:
		fmt.Fprintf(ew, "\ndisruption compared: %s\n", ComparesWithLate)
	default:
		fmt.Fprintf(ew, "\ndisruption compared: %s for %s; %s for the rest\n", ComparesFailedOnly, strings.Join(failedOnly, ", "), ComparesWithLate)
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintln(ew, "\nskipped (not compared):")
		for _, s := range r.Skipped {
			fmt.Fprintf(ew, "  %s [%s]: %s\n", s.Scenario, s.Mode, s.Reason)
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(ew, "\nnot measured (not compared):")
		for _, e := range r.Errors {
			fmt.Fprintf(ew, "  %s [%s] #%d: %s: %s\n", e.Scenario, e.Mode, e.Index, e.Status, e.Error)
		}
	}
	c := r.Counts
	fmt.Fprintf(ew, "\n%d pass, %d flake, %d regress, %d not enough history, %d skipped, %d not measured: %s\n",
		c.Pass, c.Flake, c.Regress, c.NotEnoughHistory, c.Skipped, c.Errors, r.Outcome())
	return ew.err
}

// Outcome says in words what the exit code means.
func (r *Report) Outcome() string {
	switch r.ExitCode {
	case ExitOK:
		if r.Counts.Flake > 0 {
			return "no regression (flakes are reported, they do not fail)"
		}
		return "no regression"
	case ExitRegress:
		if r.Counts.Regress == 0 {
			return "FAIL (not enough history, --strict)"
		}
		return "REGRESSION"
	case ExitNothingToSee:
		if len(r.Variants) == 0 {
			return "nothing comparable (no measured trial in the run)"
		}
		return "nothing comparable (no variant of the run has any history)"
	}
	return fmt.Sprintf("exit %d", r.ExitCode)
}

func floored(x, floor float64) float64 {
	if x < floor {
		return floor
	}
	return x
}

// errWriter keeps the first write error so the table code stays readable.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return len(p), nil
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, nil
}
