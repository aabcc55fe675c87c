package main

import (
	"fmt"
	"io"
	"strings"

	"blastradius.dev/blastradius/framework/events"
)

// eventsCmd writes the events folder of a client pod as a tar stream on
// stdout: `blastradius events <dir>`. The Kubernetes runner pulls a trial's
// events back with it through pods/exec, since the image is the binary
// alone (no shell, no tar). Only regular *.jsonl files are sent.
func eventsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: blastradius events <dir>  (writes the dir's *.jsonl files as a tar stream)")
		return 2
	}
	if err := events.WriteArchive(args[0], stdout); err != nil {
		fmt.Fprintf(stderr, "blastradius events: %v\n", err)
		return 1
	}
	return 0
}
