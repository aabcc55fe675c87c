package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"blastradius.dev/blastradius/framework/load"
	"blastradius.dev/blastradius/internal/atomicjson"
)

// AgentMain is the hidden `blastradius bench-agent` subcommand started inside
// pods: either a throughput sink (--sink-listen) that runs until SIGTERM, or a
// bulk sender (--send) that sends on one TCP connection for --duration and
// writes its load.BulkResult as JSON to --result, then, with --linger, waits
// to be stopped.
//
// The cluster's supervisor restarts a process that exits, so a sender that
// finds its result already written, or is started after --not-after, does
// nothing: the measurement is never repeated behind the caller's back.
//
// Exit status: 0 on success, 1 on a run-time failure, 2 on bad flags.
func AgentMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		sink     = fs.String("sink-listen", "", "accept connections on this address (e.g. :9001), discard what arrives and confirm the byte count")
		send     = fs.String("send", "", "send to this ip:port on one TCP connection")
		duration = fs.Duration("duration", 5*time.Second, "--send: how long to send")
		result   = fs.String("result", "", "--send: write the result as JSON to this file")
		notAfter = fs.Int64("not-after", 0, "--send: do nothing if started after this Unix time in nanoseconds (0: no limit)")
		linger   = fs.Duration("linger", 0, "--send: after writing the result, stay until SIGTERM or this long, so that the caller can read the process's CPU time before it goes")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: blastradius bench-agent --sink-listen addr | --send ip:port --duration d --result file [--not-after unix-ns] [--linger d]")
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "bench-agent: %v\n", err)
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "bench-agent: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected argument %q", fs.Arg(0))
	case (*sink == "") == (*send == ""):
		return fail("give exactly one of --sink-listen and --send")
	case *send != "" && *result == "":
		return fail("--send needs --result")
	case *duration <= 0:
		return fail("--duration must be positive")
	case *linger < 0:
		return fail("--linger must not be negative")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *sink != "" {
		return runSink(ctx, *sink, stdout, stderr)
	}
	code := runSend(ctx, *send, *duration, *result, *notAfter, stdout, stderr)
	if code == 0 && *linger > 0 {
		t := time.NewTimer(*linger)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return code
}

func runSink(ctx context.Context, addr string, stdout, stderr io.Writer) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(stderr, "bench-agent: sink: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "bench-agent: sink listening on %s\n", ln.Addr())
	err = load.ServeSink(ctx, ln, func(c load.SinkConn) {
		if c.Bytes == 0 && c.Err == nil {
			return // a readiness probe
		}
		msg := ""
		if c.Err != nil {
			msg = " (" + c.Err.Error() + ")"
		}
		fmt.Fprintf(stdout, "%s sink: %s: %d bytes in %.3fs, %.1f MB/s%s\n",
			time.Now().Format("15:04:05.000"), c.Remote, c.Bytes, c.Seconds, c.MBps(), msg)
	})
	if err != nil {
		fmt.Fprintf(stderr, "bench-agent: sink: %v\n", err)
		return 1
	}
	return 0
}

func runSend(ctx context.Context, target string, d time.Duration, result string, notAfter int64, stdout, stderr io.Writer) int {
	if notAfter > 0 && time.Now().UnixNano() > notAfter {
		fmt.Fprintln(stdout, "bench-agent: started after --not-after (a restart?): not sending")
		return 0
	}
	if _, err := os.Stat(result); err == nil {
		fmt.Fprintf(stdout, "bench-agent: %s already written (a restart?): not sending\n", result)
		return 0
	}
	res, err := load.SendBulk(ctx, target, d)
	if err != nil {
		fmt.Fprintf(stderr, "bench-agent: %v\n", err)
		return 1
	}
	if err := atomicjson.Write(result, res); err != nil {
		fmt.Fprintf(stderr, "bench-agent: %v\n", err)
		return 1
	}
	ack := "confirmed by the sink"
	if !res.Acked {
		ack = "NOT confirmed: " + res.AckError
	}
	fmt.Fprintf(stdout, "bench-agent: sent %d bytes to %s in %.3fs; %s; %.1f MB/s\n", res.Bytes, target, res.Seconds, ack, res.MBps())
	return 0
}
