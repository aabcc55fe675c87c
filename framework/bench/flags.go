// Package bench measures what the data plane costs: latency at a fixed request
// rate, single-stream throughput, and the proxies' CPU and memory, for the
// modes none, sidecar and ambient, each on a fresh embedded cluster with the
// same topology (client pod on node-1, server pod on node-2).
package bench

import (
	"blastradius.dev/blastradius/framework/netnstrial"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Modes are the data plane modes bench knows, in the order it runs them.
var Modes = []string{"none", "sidecar", "ambient"}

// Config is what one `blastradius bench` measures.
type Config struct {
	Modes              []string      `json:"modes"`
	QPS                float64       `json:"qps"`         // offered rate of the latency load
	Connections        int           `json:"connections"` // keep-alive connections (agent threads) carrying it
	Warmup             time.Duration `json:"-"`
	Duration           time.Duration `json:"-"` // measured latency window, after the warm-up
	ThroughputDuration time.Duration `json:"-"`
	Timeout            time.Duration `json:"-"` // per-request timeout of the latency load
	Out                string        `json:"-"` // results folder
	// Cluster brings each mode's embedded cluster and data plane up.
	Cluster *netnstrial.Backend `json:"-"`

	WarmupS             float64 `json:"warmupSeconds"`
	DurationS           float64 `json:"durationSeconds"`
	ThroughputDurationS float64 `json:"throughputDurationSeconds"`
	TimeoutMs           float64 `json:"timeoutMs"`
}

// ParseFlags parses the arguments of `blastradius bench`. On --help it
// prints the usage to stderr and returns flag.ErrHelp; any other error is one
// line for the caller to print.
func ParseFlags(args []string, stderr io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("blastradius bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c := &Config{}
	modes := fs.String("modes", strings.Join(Modes, ","), "comma-separated data plane modes to measure, each on a fresh cluster: none, sidecar, ambient")
	fs.Float64Var(&c.QPS, "qps", 1000, "offered request rate of the latency load (HTTP/1.1 keep-alive, client on node-1 to server on node-2 by pod IP)")
	fs.IntVar(&c.Connections, "connections", 16, "keep-alive connections carrying the latency load (one agent thread each)")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "latency load before the measured window (not measured)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured latency window")
	fs.DurationVar(&c.ThroughputDuration, "throughput-duration", 5*time.Second, "how long the single-stream throughput test sends")
	fs.DurationVar(&c.Timeout, "timeout", 500*time.Millisecond, "per-request timeout of the latency load; a slower request is an error")
	fs.StringVar(&c.Out, "out", "", "results folder (default: results/bench-<UTC timestamp>); gets bench.json and per-mode logs")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "Usage: blastradius bench [flags]\n\nFor each mode, brings up a fresh 2-node embedded cluster (client-n1 on node-1,\nserver-n2 on node-2, plus the data plane's own pods), then measures latency\npercentiles at a fixed rate, single-stream TCP throughput, and the proxies'\nCPU seconds and peak RSS. Prints a table and writes bench.json.\n\nFlags:")
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for m := range strings.SplitSeq(*modes, ",") {
		m = strings.TrimSpace(m)
		switch {
		case m == "":
			continue
		case !slices.Contains(Modes, m):
			return nil, fmt.Errorf("--modes: %q unknown (none, sidecar, ambient)", m)
		case slices.Contains(c.Modes, m):
			return nil, fmt.Errorf("--modes: %s given twice", m)
		}
		c.Modes = append(c.Modes, m)
	}
	switch {
	case len(c.Modes) == 0:
		return nil, errors.New("--modes: no mode given")
	case !(c.QPS > 0) || c.QPS > 100000 || math.IsInf(c.QPS, 0):
		return nil, fmt.Errorf("--qps %g out of range (0, 100000]", c.QPS)
	case c.Connections < 1 || c.Connections > 1000:
		return nil, fmt.Errorf("--connections %d out of range 1..1000", c.Connections)
	case c.Warmup < 0 || c.Warmup > 5*time.Minute:
		return nil, fmt.Errorf("--warmup %s out of range 0..5m", c.Warmup)
	case c.Duration < time.Second || c.Duration > 30*time.Minute:
		return nil, fmt.Errorf("--duration %s out of range 1s..30m", c.Duration)
	case c.ThroughputDuration < time.Second || c.ThroughputDuration > 10*time.Minute:
		return nil, fmt.Errorf("--throughput-duration %s out of range 1s..10m", c.ThroughputDuration)
	case c.Timeout < 10*time.Millisecond || c.Timeout > time.Minute:
		return nil, fmt.Errorf("--timeout %s out of range 10ms..1m", c.Timeout)
	}
	c.WarmupS, c.DurationS = c.Warmup.Seconds(), c.Duration.Seconds()
	c.ThroughputDurationS, c.TimeoutMs = c.ThroughputDuration.Seconds(), float64(c.Timeout)/1e6
	return c, nil
}
