package load

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"fortio.org/log"

	"blastradius.dev/blastradius/framework/events"
)

// Exit codes of AgentMain.
const (
	exitOK      = 0
	exitFailure = 1 // something failed at run time
	exitUsage   = 2 // bad flags or flow specs: nothing was started
)

// agentFlow is a --flow: a spec and the file its events go to.
type agentFlow struct {
	spec   FlowSpec
	events string
}

// flowList collects repeated --flow flags.
type flowList []agentFlow

func (l *flowList) String() string { return fmt.Sprintf("%d flow(s)", len(*l)) }

func (l *flowList) Set(v string) error {
	f, err := parseFlow(v)
	if err != nil {
		return err
	}
	*l = append(*l, f)
	return nil
}

const flowHelp = "a client flow, repeatable: " +
	"id=<id>,target=<ip:port>,profile=<" + ProfileHTTPKeepAlive + "|" + ProfileHTTPNewConn + "|" + ProfileTCPStream + ">," +
	"qps=<n>,events=<path>[,timeout=<dur>][,threads=<n>]; " +
	"timeout defaults to 500ms, threads to ceil(qps*timeout)+2"

// parseFlow parses one --flow value. Field-level checks (profile, qps, target)
// are FlowSpec.Validate's; this only checks the syntax and required keys.
func parseFlow(v string) (agentFlow, error) {
	var f agentFlow
	seen := map[string]bool{}
	for kv := range strings.SplitSeq(v, ",") {
		k, val, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return f, fmt.Errorf("flow %q: %q is not key=value", v, kv)
		}
		if seen[k] {
			return f, fmt.Errorf("flow %q: %s given twice", v, k)
		}
		seen[k] = true
		var err error
		switch k {
		case "id":
			f.spec.ID = val
		case "target":
			f.spec.Target = val
		case "profile":
			f.spec.Profile = val
		case "qps":
			f.spec.QPS, err = strconv.ParseFloat(val, 64)
		case "timeout":
			f.spec.Timeout, err = time.ParseDuration(val)
		case "threads":
			f.spec.Threads, err = strconv.Atoi(val)
		case "events":
			f.events = val
		default:
			return f, fmt.Errorf("flow %q: unknown key %q (want id, target, profile, qps, timeout, threads, events)", v, k)
		}
		if err != nil {
			return f, fmt.Errorf("flow %q: bad %s %q", v, k, val)
		}
	}
	for _, k := range []string{"id", "target", "profile", "qps", "events"} {
		if !seen[k] {
			return f, fmt.Errorf("flow %q: missing %s=", v, k)
		}
	}
	if f.spec.ID == "" || f.events == "" {
		return f, fmt.Errorf("flow %q: empty id or events", v)
	}
	if err := f.spec.Validate(); err != nil {
		return f, err
	}
	return f, nil
}

// AgentMain is the `blastradius agent` subcommand. It runs servers
// (--http-listen, --tcp-listen) until SIGTERM or SIGINT, and/or client flows
// (--flow, --start-at, --duration) until they are done or a signal stops them
// early. With servers, the process keeps serving after its flows are done.
// Every flow writes its own event file as it goes, so the process may be
// SIGKILLed at any time (that is how a node crash is simulated) and its
// measurements up to then survive.
//
// Exit status: 0 on success (a signal is a normal stop), 1 on a run-time
// failure (cannot listen, cannot write events, a server failed), 2 on bad
// flags or flow specs, with a one-line error on stderr.
func AgentMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	var (
		httpListen = fs.String("http-listen", "", "serve fortio's HTTP echo handler on this address (e.g. :8080); empty: no HTTP server")
		tcpListen  = fs.String("tcp-listen", "", "serve a TCP echo server on this address (e.g. :9000); empty: no TCP server")
		startAt    = fs.Int64("start-at", 0, "Unix time in nanoseconds at which every flow sends its first request (agents given the same value start together); 0: at once")
		duration   = fs.Duration("duration", 0, "how long flows run from --start-at; 0: until SIGTERM/SIGINT")
		flows      flowList
	)
	fs.Var(&flows, "flow", flowHelp)
	// The flag package would print the error followed by the whole usage;
	// callers (and the logs they keep) want one line, so we print it.
	fs.SetOutput(io.Discard)
	usage := func() {
		fs.SetOutput(stderr)
		fmt.Fprintln(stderr, "usage: blastradius agent [--http-listen addr] [--tcp-listen addr] [--flow spec]... [--start-at unix-ns] [--duration dur]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return exitOK
		}
		fmt.Fprintf(stderr, "agent: %v\n", err)
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "agent: "+format+"\n", a...)
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected argument %q", fs.Arg(0))
	case *httpListen == "" && *tcpListen == "" && len(flows) == 0:
		return fail("nothing to do: give --http-listen, --tcp-listen and/or --flow")
	case *startAt < 0:
		return fail("negative --start-at %d", *startAt)
	case *duration < 0:
		return fail("negative --duration %v", *duration)
	}
	ids, paths := map[string]bool{}, map[string]bool{}
	for _, f := range flows {
		if ids[f.spec.ID] {
			return fail("flow id %q used twice", f.spec.ID)
		}
		if paths[f.events] {
			return fail("events file %q used by two flows", f.events)
		}
		ids[f.spec.ID], paths[f.events] = true, true
	}
	var start time.Time
	if *startAt > 0 {
		start = time.Unix(0, *startAt)
	}
	for i := range flows {
		flows[i].spec.Start = start
		flows[i].spec.Duration = *duration
	}

	// fortio logs a line per thread at info level; with hundreds of threads
	// per flow that would bury the agent's own output.
	log.SetLogLevelQuiet(log.Warning)
	return runAgent(*httpListen, *tcpListen, flows, stdout, stderr)
}

// runAgent starts what AgentMain validated and waits for it to end.
func runAgent(httpListen, tcpListen string, flows []agentFlow, stdout, stderr io.Writer) int {
	sigCtx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stopSignals()
	ctx, cancel := context.WithCancel(sigCtx)
	defer cancel()

	// Acquire everything that can fail before starting anything, so a failure
	// leaves no half-started agent behind.
	writers := make([]*events.Writer, len(flows))
	defer func() {
		for _, w := range writers {
			if w != nil {
				_ = w.Close()
			}
		}
	}()
	for i, f := range flows {
		w, err := events.Create(f.events)
		if err != nil {
			fmt.Fprintf(stderr, "agent: flow %q: %v\n", f.spec.ID, err)
			return exitFailure
		}
		writers[i] = w
	}
	type server struct {
		name  string
		serve func(context.Context, net.Listener) error
		ln    net.Listener
	}
	var servers []server
	for _, s := range []struct {
		name, addr string
		serve      func(context.Context, net.Listener) error
	}{{"http", httpListen, ServeHTTP}, {"tcp", tcpListen, ServeTCPEcho}} {
		if s.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			for _, o := range servers {
				_ = o.ln.Close()
			}
			fmt.Fprintf(stderr, "agent: %s server: %v\n", s.name, err)
			return exitFailure
		}
		servers = append(servers, server{s.name, s.serve, ln})
	}

	var wg sync.WaitGroup
	serverDone := make(chan error, len(servers))
	for _, s := range servers {
		fmt.Fprintf(stdout, "agent: %s echo server listening on %s\n", s.name, s.ln.Addr())
		wg.Go(func() {
			if err := s.serve(ctx, s.ln); err != nil {
				serverDone <- fmt.Errorf("%s server: %w", s.name, err)
				return
			}
			serverDone <- nil
		})
	}
	stats := make([]FlowStats, len(flows))
	flowErrs := make([]error, len(flows))
	var flowWG sync.WaitGroup
	for i, f := range flows {
		flowWG.Go(func() {
			stats[i], flowErrs[i] = RunFlow(ctx, f.spec, writers[i])
		})
	}
	flowsDone := make(chan struct{})
	go func() {
		flowWG.Wait()
		close(flowsDone)
	}()

	// Run until a signal, until a server stops by itself (it failed), or, for
	// a client-only agent, until the flows are done.
	var errs []error
	var untilFlowsDone <-chan struct{}
	if len(servers) == 0 {
		untilFlowsDone = flowsDone
	}
	select {
	case <-sigCtx.Done():
		// Restore default signal handling: a second SIGTERM kills at once.
		stopSignals()
	case err := <-serverDone:
		errs = append(errs, err)
	case <-untilFlowsDone:
	}
	cancel()
	<-flowsDone
	wg.Wait()
	close(serverDone)
	for err := range serverDone {
		errs = append(errs, err)
	}

	code := exitOK
	for i, f := range flows {
		st := stats[i]
		fmt.Fprintf(stdout, "agent: flow %s: requests=%d ok=%d failed=%d broken=%d reconnected=%d threads=%d\n",
			f.spec.ID, st.Requests, st.OK, st.Failed, st.Broken, st.Reconnected, st.Threads)
		errs = append(errs, flowErrs[i])
	}
	for _, err := range errs {
		if err != nil {
			fmt.Fprintf(stderr, "agent: %v\n", err)
			code = exitFailure
		}
	}
	return code
}
