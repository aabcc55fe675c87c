package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/reports"
)

const reportUsage = "usage: blastradius report <results-dir> [--out file]"

// reportCmd renders a results folder as one self-contained HTML page. Exit
// 2 is a usage error (nothing was read), 1 a folder that cannot be read or
// a report that cannot be written.
func reportCmd(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("blastradius report", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	out := flags.String("out", "", "the HTML file to write (default: <results-dir>/report.html)")
	// The folder comes first in the usage line, but flag stops at the first
	// non-flag: parse around it so both orders work.
	var pos []string
	for {
		if err := flags.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stdout, reportUsage+"\n\nWrites report.html: verdicts, per-trial timelines, blast-radius matrices and the\nmode comparison of a run folder, as one file that needs no network.")
				return 0
			}
			fmt.Fprintf(stderr, "blastradius report: %v (%s)\n", err, reportUsage)
			return 2
		}
		if flags.NArg() == 0 {
			break
		}
		pos = append(pos, flags.Arg(0))
		args = flags.Args()[1:]
	}
	switch {
	case len(pos) == 0:
		fmt.Fprintf(stderr, "blastradius report: no results folder given (%s)\n", reportUsage)
		return 2
	case len(pos) > 1:
		fmt.Fprintf(stderr, "blastradius report: unexpected argument %q (%s)\n", pos[1], reportUsage)
		return 2
	}
	dir := pos[0]
	run, err := results.Load(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%s: no run.json (not a results folder?)", dir)
		}
		fmt.Fprintf(stderr, "blastradius report: %s\n", oneline.Fold(err.Error(), 0))
		return 1
	}
	path := *out
	if path == "" {
		path = filepath.Join(dir, "report.html")
	}
	size, err := writeReport(path, dir, run)
	if err != nil {
		fmt.Fprintf(stderr, "blastradius report: %s\n", oneline.Fold(err.Error(), 0))
		return 1
	}
	fmt.Fprintf(stdout, "report: %s (%d KB)\n", path, (size+1023)/1024)
	// The answer the report opens with, as the run printed it.
	reports.AnswerText(stdout, run)
	return 0
}

// writeReport renders run (read from the results folder dir) into path and
// returns its size.
func writeReport(path, dir string, run *results.Run) (int, error) {
	var buf bytes.Buffer
	if err := reports.HTML(&buf, run, reports.HTMLOptions{Dir: dir}); err != nil {
		return 0, err
	}
	return buf.Len(), writeAtomic(path, buf.Bytes())
}

// writeAtomic writes through a temporary file and a rename, so a browser
// reloading the page never reads half a report.
func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".report-*.html")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
