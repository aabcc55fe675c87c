package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"blastradius.dev/blastradius/framework/sandbox"
	"blastradius.dev/blastradius/framework/soak"
)

type soakFlags struct {
	cfg soak.Config
	out string
}

func parseSoakFlags(args []string, stderr io.Writer) (*soakFlags, error) {
	fs := flag.NewFlagSet("blastradius soak", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &soakFlags{}
	c := &f.cfg
	fs.DurationVar(&c.Duration, "duration", soak.DefaultDuration, "how long the load runs on the one cluster (20s..48h)")
	fs.DurationVar(&c.FaultEvery, "fault-every", soak.DefaultFaultEvery, "a fault of the rotation every this often, the first one this long after the load starts (5s..duration)")
	fs.DurationVar(&c.SampleEvery, "sample-every", soak.DefaultSampleEvery, "every data plane process's fds, goroutines and RSS are sampled this often (1s..duration/4)")
	fs.IntVar(&c.Nodes, "nodes", soak.DefaultNodes, "nodes (2..9); node-1's proxy is never faulted, so one series covers the whole soak")
	fs.Float64Var(&c.QPS, "qps", soak.DefaultQPS, "total requests per second over every flow")
	fs.IntVar(&c.Waypoints, "waypoints", soak.DefaultWaypoints, "waypoint replicas in front of the echo service (0..4; with 2 or more the last one is crashed in the rotation)")
	fs.DurationVar(&c.CertTTL, "cert-ttl", soak.DefaultCertTTL, "workload certificate lifetime: proxies renew at half of it, so renewals happen during the soak")
	fs.StringVar(&f.out, "out", "", "results folder (default: results/soak-<UTC timestamp>); created, must not already hold a soak")
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "Usage: blastradius soak [flags]\n\nRuns the embedded ambient cluster under load with a fault every --fault-every,\nsamples every data plane process's open fds, goroutines and RSS, and judges\nthe trend: exit 0 flat, 1 leak (or inconclusive, or an error), 130 interrupted, 2 bad flags.\nFiles: soak.jsonl (samples as they are taken), soak.json (summary). docs/reliability.md.\n\nFlags:")
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

func soakCmd(args []string, stdout, stderr io.Writer) int {
	f, err := parseSoakFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "blastradius soak: %v\n", err)
		return 2
	}
	if !sandbox.Inside() {
		if args, err = fixOutDir(&f.out, args, "soak-", "soak.json"); err != nil {
			fmt.Fprintf(stderr, "blastradius soak: %v\n", err)
			return 2
		}
		return enterSandbox("soak", args, stderr)
	}
	out, ok := setupInside("soak", f.out, stderr)
	if !ok {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	f.cfg.Out = out
	f.cfg.Logf = timedLog(stdout)
	f.cfg.Logf("results: %s", out)
	sum, err := soak.Run(ctx, f.cfg)
	if sum != nil {
		printSoakSummary(stdout, sum, out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "blastradius soak: %v\n", err)
	}
	switch {
	case sum != nil && sum.Interrupted:
		// Whatever the interrupted soak measured, it did not run its
		// course: never a pass.
		return 130
	case err != nil:
		return 1
	case sum.Verdict == soak.VerdictFlat:
		return 0
	}
	return 1
}

// printSoakSummary prints the verdict and, per long-lived process, each
// metric's start and end medians against its limit.
func printSoakSummary(w io.Writer, s *soak.Summary, out string) {
	fmt.Fprintf(w, "\nsoak: %.0fs, %d faults (%d failed), %d samples, %d requests, %d errors (%s), %d stream breaks\n",
		s.ElapsedS, len(s.Faults), s.FaultErrors, s.Samples, s.Load.Requests, s.Load.Errors, pctOf(s.Load.Errors, s.Load.Requests), s.Load.Broken)
	counts := map[string]int{}
	var order []string
	for _, fr := range s.Faults {
		if counts[fr.Fault] == 0 {
			order = append(order, fr.Fault)
		}
		counts[fr.Fault]++
	}
	var parts []string
	for _, n := range order {
		parts = append(parts, fmt.Sprintf("%s ×%d", n, counts[n]))
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "faults: %s\n", strings.Join(parts, ", "))
	}
	for _, fr := range s.Faults {
		if fr.Error != "" {
			fmt.Fprintf(w, "  fault %d %s on %s failed: %s\n", fr.N, fr.Fault, fr.Target, fr.Error)
		}
	}
	fmt.Fprintf(w, "windows: base %.0f–%.0fs, end %.0f–%.0fs (medians; limits: fds +max(%.0f, %.0f%%), goroutines +max(%.0f, %.0f%%), RSS +max(%.0f MiB, %.0f%%))\n",
		s.Rule.BaseFrom.Seconds(), s.Rule.BaseTo.Seconds(), s.Rule.EndFrom.Seconds(), s.Rule.EndTo.Seconds(),
		s.Rule.FDsAbs, 100*s.Rule.FDsFrac, s.Rule.GoroutinesAbs, 100*s.Rule.GoroutinesFrac, s.Rule.RSSAbs/(1<<20), 100*s.Rule.RSSFrac)
	fmt.Fprintf(w, "%-14s %-7s %-20s %-20s %-24s %s\n", "process", "pid", "fds start→end", "goroutines", "RSS MiB", "")
	for _, c := range s.Checks {
		cols := map[string]string{}
		for _, m := range c.Metrics {
			if m.Skipped != "" {
				cols[m.Name] = "-"
				continue
			}
			scale, unit := 1.0, ""
			if m.Name == "rss_bytes" {
				scale, unit = 1<<20, ""
			}
			mark := ""
			if m.Leak {
				mark = " LEAK"
			}
			cols[m.Name] = fmt.Sprintf("%.1f→%.1f%s (≤+%.0f)%s", m.Start/scale, m.End/scale, unit, m.Limit/scale, mark)
		}
		state := "flat"
		if c.Leak {
			state = "LEAK"
		}
		fmt.Fprintf(w, "%-14s %-7d %-20s %-20s %-24s %s\n", c.Process, c.PID, cols["fds"], cols["goroutines"], cols["rss_bytes"], state)
	}
	for _, l := range s.Leaks {
		fmt.Fprintf(w, "leak: %s\n", l)
	}
	fmt.Fprintf(w, "verdict: %s (%s)\nresults: %s\n", s.Verdict, s.Reason, filepath.Join(out, "soak.json"))
}

func pctOf(a, b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(a)/float64(b))
}
