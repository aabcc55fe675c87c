package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"blastradius.dev/blastradius/framework/bench"
	"blastradius.dev/blastradius/framework/sandbox"
)

// benchCmd is `blastradius bench`: latency, throughput and proxy cost for
// each data plane mode on the same embedded topology (see framework/bench).
func benchCmd(args []string, stdout, stderr io.Writer) int {
	cfg, err := bench.ParseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "blastradius bench: %v\n", err)
		return 2
	}
	if !sandbox.Inside() {
		if args, err = fixOutDir(&cfg.Out, args, "bench-", "bench.json"); err != nil {
			fmt.Fprintf(stderr, "blastradius bench: %v\n", err)
			return 2
		}
		return enterSandbox("bench", args, stderr)
	}
	var ok bool
	if cfg.Out, ok = setupInside("bench", cfg.Out, stderr); !ok {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logf := func(format string, a ...any) {
		fmt.Fprintf(stdout, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.0")}, a...)...)
	}
	env := bench.Environment{Version: version, Kernel: kernel(), CPUs: runtime.NumCPU(), CPUModel: cpuModel(),
		GoVersion: runtime.Version(), Rootless: os.Getenv("BLASTRADIUS_OUTER_UID") != "0"}
	logf("results: %s", cfg.Out)
	cfg.Cluster = embeddedBackend(0)
	r, err := bench.Run(ctx, cfg, env, os.Args[1:], logf)
	if r != nil {
		bench.PrintTable(stdout, r)
		fmt.Fprintf(stdout, "\nbench %s\nresults: %s\n", r.Status, filepath.Join(cfg.Out, "bench.json"))
	}
	if err != nil {
		fmt.Fprintf(stderr, "blastradius bench: %v\n", err)
		return 1
	}
	if r.Status != bench.StatusDone {
		return 1
	}
	return 0
}

// benchAgentCmd is the hidden `blastradius bench-agent` that bench starts in
// pods: the throughput sink and sender.
func benchAgentCmd(args []string, stdout, stderr io.Writer) int {
	return bench.AgentMain(args, stdout, stderr)
}
