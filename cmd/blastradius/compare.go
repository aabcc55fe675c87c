package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"blastradius.dev/blastradius/framework/baseline"
)

// dirList is a repeatable folder flag.
type dirList []string

func (d *dirList) String() string { return strings.Join(*d, ",") }
func (d *dirList) Set(s string) error {
	if s == "" {
		return errors.New("empty folder")
	}
	*d = append(*d, s)
	return nil
}

type compareFlags struct {
	run       string
	baselines dirList
	opt       baseline.Options
	format    string
	out       string
}

func parseCompareFlags(args []string, stderr io.Writer) (*compareFlags, error) {
	fs := flag.NewFlagSet("blastradius compare", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := &compareFlags{}
	fs.Var(&f.baselines, "baseline", "a baseline: a results folder, or a folder of results folders (repeatable; at least one)")
	fs.IntVar(&f.opt.MinHistory, "min-history", baseline.DefaultOptions.MinHistory, "baseline trials a variant needs; with fewer it is \"not enough history\", not a pass")
	fs.Float64Var(&f.opt.FlakeTolerance, "flake-tolerance", baseline.DefaultOptions.FlakeTolerance, "a value above the p95 limit by at most this fraction of it is a flake, not a regression (also: anything up to the p99 limit)")
	fs.BoolVar(&f.opt.Strict, "strict", false, "\"not enough history\" fails the comparison (exit 1)")
	fs.StringVar(&f.format, "format", "text", "text (a table) or json (docs/compare.md)")
	fs.StringVar(&f.out, "out", "", "write the report (in --format) to this file; the text table still goes to stdout")
	fs.Usage = func() {}
	// Flags may come before or after the run folder (the documented form is
	// "compare <run-dir> --baseline ..."), and flag stops at the first
	// argument that is not one: parse, take the positional, parse the rest.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stderr, "Usage: blastradius compare <run-dir> --baseline <dir> [--baseline <dir>...] [flags]\n\nCompares every variant (scenario × mode × topology) of a results folder with the same\nvariant's trials in the baselines: pass, flake, regress or not enough history (docs/compare.md).\nExit: 0 no regression, 1 a regression, 2 bad flags or folder, 3 nothing comparable.\n\nFlags:")
				fs.SetOutput(stderr)
				fs.PrintDefaults()
			}
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(pos) == 0:
		return nil, errors.New("no run folder given (blastradius compare <run-dir> --baseline <dir>)")
	case len(pos) > 1:
		return nil, fmt.Errorf("unexpected argument %q", pos[1])
	case len(f.baselines) == 0:
		return nil, errors.New("no --baseline given")
	case f.opt.MinHistory < 1:
		return nil, fmt.Errorf("--min-history %d must be at least 1", f.opt.MinHistory)
	case !(f.opt.FlakeTolerance >= 0 && f.opt.FlakeTolerance <= 10): // NaN too: it fails every comparison
		return nil, fmt.Errorf("--flake-tolerance %g out of range 0..10", f.opt.FlakeTolerance)
	case f.format != "text" && f.format != "json":
		return nil, fmt.Errorf("--format %q unknown (text, json)", f.format)
	}
	f.run = pos[0]
	return f, nil
}

func compareCmd(args []string, stdout, stderr io.Writer) int {
	f, err := parseCompareFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "blastradius compare: %v\n", err)
		return baseline.ExitUsage
	}
	run, err := baseline.Load(f.run)
	if err != nil {
		fmt.Fprintf(stderr, "blastradius compare: %v\n", err)
		return baseline.ExitUsage
	}
	var bases []*baseline.Folder
	for _, d := range f.baselines {
		fs, err := baseline.LoadBaseline(d)
		if err != nil {
			fmt.Fprintf(stderr, "blastradius compare: baseline %v\n", err)
			return baseline.ExitUsage
		}
		bases = append(bases, fs...)
	}
	rep := baseline.Compare(run, bases, f.opt)
	var b bytes.Buffer
	if f.format == "json" {
		err = rep.WriteJSON(&b)
	} else {
		err = rep.WriteText(&b)
	}
	if err != nil {
		fmt.Fprintf(stderr, "blastradius compare: %v\n", err)
		return baseline.ExitUsage
	}
	if f.out == "" {
		stdout.Write(b.Bytes())
		return rep.ExitCode
	}
	if err := os.WriteFile(f.out, b.Bytes(), 0o644); err != nil {
		// The verdict must not be lost for want of a file: print it, and
		// fail as a usage error (the path was wrong).
		stdout.Write(b.Bytes())
		fmt.Fprintf(stderr, "blastradius compare: --out: %v\n", err)
		return baseline.ExitUsage
	}
	// A CI log should always show the table, whatever went to the file.
	if f.format == "json" {
		rep.WriteText(stdout)
	} else {
		stdout.Write(b.Bytes())
	}
	return rep.ExitCode
}
