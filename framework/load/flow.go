package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"fortio.org/fortio/periodic"

	"blastradius.dev/blastradius/framework/events"
)

// DefaultTimeout is the per-request timeout when a flow does not set one. It is
// also the resolution at which a black hole is told from a slow answer.
const DefaultTimeout = 500 * time.Millisecond

// The client profiles.
const (
	// ProfileHTTPKeepAlive: HTTP/1.1 requests on one kept-alive connection per
	// thread, redialled only after a failure.
	ProfileHTTPKeepAlive = "http-keepalive"
	// ProfileHTTPNewConn: one new connection per request ("Connection: close").
	ProfileHTTPNewConn = "http-newconn"
	// ProfileTCPStream: a long-lived TCP connection per thread carrying echoed
	// messages, with broken/reconnected transitions recorded.
	ProfileTCPStream = "tcp-stream"
)

// Profiles lists the known profiles.
var Profiles = []string{ProfileHTTPKeepAlive, ProfileHTTPNewConn, ProfileTCPStream}

// maxThreads bounds the thread count (auto or explicit). Each thread is a
// goroutine and, for most profiles, a socket; beyond this the agent would
// measure its own file-descriptor limit rather than the mesh.
const maxThreads = 20000

// FlowSpec describes one flow: a stream of requests at a fixed rate from this
// process to one target.
type FlowSpec struct {
	ID      string  // names the flow in errors and in fortio's labels
	Target  string  // ip:port (an IP literal: see Validate)
	Profile string  // one of Profiles
	QPS     float64 // offered request rate, > 0
	// Timeout bounds each request, from its start to its outcome; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// Threads is the number of concurrent clients; 0 means auto:
	// ceil(QPS*Timeout.Seconds())+2. At QPS requests per second, each waiting
	// up to Timeout, that many can be in flight at once when the target black
	// holes everything; with fewer threads fortio would skip slots (it runs
	// open-loop without catch-up) and sampling would thin out exactly during
	// the outage we want to measure.
	Threads int
	// Start is when to send the first request; the zero time means at once.
	// Agents in different pods get the same Start so their flows line up.
	Start time.Time
	// Duration is how long to run from Start; 0 means until the context ends.
	Duration time.Duration
}

// FlowStats counts what a flow did. Every request counted here has an event
// in the flow's file (unless RunFlow also returned a write error).
type FlowStats struct {
	Threads     int   // number of client threads used
	Requests    int64 // requests made (KindRequest events)
	OK          int64 // of which succeeded
	Failed      int64 // of which failed (Requests - OK)
	Broken      int64 // stream breaks recorded (tcp-stream only)
	Reconnected int64 // stream re-establishments recorded (tcp-stream only)
}

// Validate checks a spec, with an error naming the flow and the bad field.
func (s FlowSpec) Validate() error {
	err := s.validate()
	if err != nil && s.ID != "" {
		return fmt.Errorf("flow %q: %w", s.ID, err)
	}
	return err
}

func (s FlowSpec) validate() error {
	known := false
	for _, p := range Profiles {
		known = known || s.Profile == p
	}
	if !known {
		return fmt.Errorf("unknown profile %q (want one of %s)", s.Profile, strings.Join(Profiles, ", "))
	}
	if !(s.QPS > 0) || math.IsInf(s.QPS, 0) { // !(>0) also rejects NaN
		return fmt.Errorf("qps must be a positive number, got %v", s.QPS)
	}
	if err := validateTarget(s.Target); err != nil {
		return err
	}
	if s.Timeout < 0 {
		return fmt.Errorf("negative timeout %v", s.Timeout)
	}
	if s.Threads < 0 {
		return fmt.Errorf("negative threads %d", s.Threads)
	}
	if s.Duration < 0 {
		return fmt.Errorf("negative duration %v", s.Duration)
	}
	if n := s.withDefaults().Threads; n > maxThreads {
		return fmt.Errorf("%d threads is more than %d (lower qps or timeout)", n, maxThreads)
	}
	return nil
}

// validateTarget requires ip:port. A host name is refused on purpose: it would
// be resolved on every dial, adding DNS as a second thing that can fail, and
// its failures would land in the classes that belong to the data path.
func validateTarget(t string) error {
	host, port, err := net.SplitHostPort(t)
	if err != nil {
		return fmt.Errorf("bad target %q: want ip:port: %v", t, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("bad target %q: %q is not an IP address", t, host)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("bad target %q: bad port %q", t, port)
	}
	return nil
}

// withDefaults fills in Timeout and Threads.
func (s FlowSpec) withDefaults() FlowSpec {
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.Threads == 0 {
		n := math.Ceil(s.QPS*s.Timeout.Seconds()) + 2
		s.Threads = int(min(n, maxThreads+1)) // +1: still too many, Validate says so
	}
	return s
}

// newRunner makes one thread's runnable. Every thread gets its own instance:
// the runnables hold a connection and per-connection state.
func newRunner(s FlowSpec, w *events.Writer) periodic.Runnable {
	switch s.Profile {
	case ProfileHTTPKeepAlive:
		return &HTTPClient{Target: s.Target, Timeout: s.Timeout}
	case ProfileHTTPNewConn:
		return &HTTPClient{Target: s.Target, Timeout: s.Timeout, NewConn: true}
	default: // ProfileTCPStream; Validate rejected the rest
		return &TCPStream{Target: s.Target, Timeout: s.Timeout, Events: w}
	}
}

// RunFlow runs one flow, writing an event to w for every request (and, for
// streams, every transition) as it completes. It waits until spec.Start, runs
// for spec.Duration, and returns early without error when ctx ends: stopping
// an agent is normal. Requests in flight when the flow stops are finished
// (each within Timeout) and recorded, so RunFlow may return up to Timeout
// after the stop.
//
// The error is for an invalid spec or a failure to write events.
func RunFlow(ctx context.Context, spec FlowSpec, w *events.Writer) (FlowStats, error) {
	if w == nil {
		return FlowStats{}, errors.New("RunFlow: nil events writer")
	}
	if err := spec.Validate(); err != nil {
		return FlowStats{}, err
	}
	spec = spec.withDefaults()
	stats := FlowStats{Threads: spec.Threads}

	start := spec.Start
	if start.IsZero() {
		start = time.Now()
	}
	if wait := time.Until(start); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return stats, nil
		case <-t.C:
		}
	}
	if ctx.Err() != nil {
		return stats, nil
	}

	logger := &eventLogger{w: w, info: "blastradius events of flow " + spec.ID}
	aborter := periodic.NewAborter()
	// fortio's warm-up request (and AllowInitialErrors) belongs to its HTTP
	// runner; driving periodic directly, there is no unmeasured first request:
	// the very first request of every thread is recorded like any other.
	runner := periodic.NewPeriodicRunner(&periodic.RunnerOptions{
		RunType:    "blastradius " + spec.Profile,
		Labels:     spec.ID,
		QPS:        spec.QPS,
		Duration:   -1, // until Stop is aborted; 0 would silently mean fortio's default 5s
		NumThreads: spec.Threads,
		// Open loop: a slot whose thread was still busy (waiting out a
		// timeout) is skipped, not made up for with a burst once the target
		// answers again, which would overload it just as it recovers and
		// skew the recovery measurement.
		NoCatchUp: true,
		// Stagger the threads' schedules evenly across the request interval,
		// so the flow samples the target every 1/QPS rather than in bursts of
		// Threads requests; the resolution of an outage measurement is the
		// sampling interval.
		Uniform:      true,
		AccessLogger: logger,
		// Our own aborter also keeps fortio from installing its SIGINT
		// handler: signals are the agent's business.
		Stop: aborter,
		Out:  io.Discard, // fortio's textual report; the events are the report
	})
	// The runnables go in after construction, as fortio's own runners do:
	// NewPeriodicRunner moves the options and clears the Runners slice it was
	// given (which the copy shares), so runners passed in would arrive nil.
	runners := runner.Options().Runners
	for i := range runners {
		runners[i] = newRunner(spec, w)
	}

	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		var end <-chan time.Time
		if spec.Duration > 0 {
			t := time.NewTimer(time.Until(start.Add(spec.Duration)))
			defer t.Stop()
			end = t.C
		}
		select {
		case <-ctx.Done():
		case <-end:
		case <-done:
			return
		}
		aborter.Abort(false)
	}()
	runner.Run()
	close(done)
	<-stopped

	for _, r := range runners {
		switch r := r.(type) {
		case *HTTPClient:
			_ = r.Close()
		case *TCPStream:
			_ = r.Close()
			stats.Broken += r.breaks
			stats.Reconnected += r.reconnects
		}
	}
	stats.Requests = logger.requests.Load()
	stats.OK = logger.ok.Load()
	stats.Failed = stats.Requests - stats.OK
	if err := logger.firstError(); err != nil {
		return stats, fmt.Errorf("flow %q: %w", spec.ID, err)
	}
	return stats, nil
}
