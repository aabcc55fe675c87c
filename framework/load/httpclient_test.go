package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// TestHTTPProfiles runs each HTTP profile at 200 rps for 1 s against
// ServeHTTP and checks the event file: count, classes, latencies, the spread
// of start times, and how many connections the server saw.
func TestHTTPProfiles(t *testing.T) {
	for _, profile := range []string{ProfileHTTPKeepAlive, ProfileHTTPNewConn} {
		t.Run(profile, func(t *testing.T) {
			ln := &countingListener{Listener: listen(t)}
			serve(t, ServeHTTP, ln)
			w, path := newWriter(t, "events.jsonl")
			const qps, dur = 200, time.Second
			spec := FlowSpec{
				ID: "f1", Target: ln.Addr().String(), Profile: profile, QPS: qps,
				Start: time.Now().Add(50 * time.Millisecond), Duration: dur,
			}
			st, err := RunFlow(context.Background(), spec, w)
			if err != nil {
				t.Fatal(err)
			}
			if wantThreads := 200*DefaultTimeout.Seconds() + 2; st.Threads != int(wantThreads) {
				t.Errorf("auto threads = %d, want %v", st.Threads, wantThreads)
			}
			ev := readEvents(t, path)
			if int64(len(ev)) != st.Requests || st.OK != st.Requests || st.Failed != 0 {
				t.Errorf("stats %+v but %d events in the file", st, len(ev))
			}
			if n := len(ev); n < qps*9/10 || n > qps*11/10 {
				t.Errorf("%d events, want %d ±10%%", n, qps)
			}
			t0, t1 := spec.Start.UnixNano(), spec.Start.Add(dur).UnixNano()
			var maxStart int64
			firstHalf := 0
			for i, e := range ev {
				if e.Kind != events.KindRequest || e.Class != events.ClassOK || e.Status != 200 {
					t.Fatalf("event %d: %+v, want an ok request with status 200", i, e)
				}
				if e.Latency <= 0 || e.Latency > int64(100*time.Millisecond) {
					t.Errorf("event %d: latency %v on loopback", i, time.Duration(e.Latency))
				}
				// The stop is a timer racing fortio's own: allow it a few ms.
				if e.Start < t0 || e.Start > t1+int64(20*time.Millisecond) {
					t.Errorf("event %d starts %v after the flow start, outside [0, %v]", i, time.Duration(e.Start-t0), dur)
				}
				// Events are written in completion order; with loopback
				// latencies that is start order give or take a scheduling hiccup.
				if e.Start < maxStart-int64(50*time.Millisecond) {
					t.Errorf("event %d starts %v before an earlier event", i, time.Duration(maxStart-e.Start))
				}
				maxStart = max(maxStart, e.Start)
				if e.Start < t0+int64(dur/2) {
					firstHalf++
				}
			}
			// Uniform staggering: sampling is even, not front-loaded and not
			// in bursts of one request per thread.
			if half := len(ev) / 2; firstHalf < half*8/10 || firstHalf > half*12/10 {
				t.Errorf("%d of %d requests in the first half of the run", firstHalf, len(ev))
			}
			const bucket = 50 * time.Millisecond // 10 requests at 200 rps
			perBucket := map[int64]int{}
			for _, e := range ev {
				perBucket[(e.Start-t0)/int64(bucket)]++
			}
			for b, n := range perBucket {
				if n > 20 {
					t.Errorf("%d requests started in [%v, %v), want about 10: bursty sampling",
						n, time.Duration(b)*bucket, time.Duration(b+1)*bucket)
				}
			}
			switch acc := ln.accepted(); profile {
			case ProfileHTTPKeepAlive:
				if acc > st.Threads {
					t.Errorf("keep-alive: server accepted %d connections for %d threads", acc, st.Threads)
				}
			case ProfileHTTPNewConn:
				if int64(acc) != st.Requests {
					t.Errorf("new-conn: server accepted %d connections for %d requests", acc, st.Requests)
				}
			}
		})
	}
}

// TestHTTPStatus: a server answering 503 yields class http with the status.
func TestHTTPStatus(t *testing.T) {
	ln := listen(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	w, path := newWriter(t, "events.jsonl")
	st, err := RunFlow(context.Background(), FlowSpec{
		ID: "f503", Target: ln.Addr().String(), Profile: ProfileHTTPKeepAlive, QPS: 50, Duration: 300 * time.Millisecond,
	}, w)
	if err != nil {
		t.Fatal(err)
	}
	ev := readEvents(t, path)
	if len(ev) < 10 || st.OK != 0 || st.Failed != int64(len(ev)) {
		t.Fatalf("stats %+v, %d events: want >= 10, all failed", st, len(ev))
	}
	for i, e := range ev {
		if e.Class != events.ClassHTTP || e.Status != 503 {
			t.Fatalf("event %d: %+v, want class http status 503", i, e)
		}
	}
}

// TestHTTPKeepAliveNoRetry: when the server drops an idle keep-alive
// connection, the next request fails (reset) instead of being silently
// retried on a new connection, and the one after succeeds on a new one.
func TestHTTPKeepAliveNoRetry(t *testing.T) {
	ln := &countingListener{Listener: listen(t)}
	serve(t, ServeHTTP, ln)
	c := &HTTPClient{Target: ln.Addr().String(), Timeout: time.Second}
	defer c.Close()
	run := func(want string) {
		t.Helper()
		ok, details := c.Run(context.Background(), 0)
		class, errText, _ := strings.Cut(details, "|")
		if class != want || ok != (want == "ok:200") || (want != "ok:200") != (errText != "") {
			t.Fatalf("Run = %v, %q; want %q (and the error's text after a failure)", ok, details, want)
		}
	}
	run("ok:200")
	run("ok:200")
	if n := ln.accepted(); n != 1 {
		t.Fatalf("two keep-alive requests used %d connections", n)
	}
	ln.closeConns()
	time.Sleep(50 * time.Millisecond) // let the FIN arrive
	run("reset")
	if n := ln.accepted(); n != 1 {
		t.Fatalf("the failed request dialled again (%d connections): it retried", n)
	}
	run("ok:200")
	if n := ln.accepted(); n != 2 {
		t.Fatalf("after the failure: %d connections, want 2", n)
	}
}

// TestHTTPFailures: refused and timeout outcomes, and that the timeout covers
// the whole request.
func TestHTTPFailures(t *testing.T) {
	closed := listen(t)
	refusedAddr := closed.Addr().String()
	_ = closed.Close()

	silent := listen(t) // accepts (the kernel does) and never answers
	const timeout = 150 * time.Millisecond
	for _, tc := range []struct {
		name, target, want, errText string
		newConn                     bool
	}{
		{"refused", refusedAddr, "refused", "connect: connection refused", false},
		{"timeout keep-alive", silent.Addr().String(), "timeout", "i/o timeout", false},
		{"timeout new-conn", silent.Addr().String(), "timeout", "i/o timeout", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &HTTPClient{Target: tc.target, Timeout: timeout, NewConn: tc.newConn}
			defer c.Close()
			start := time.Now()
			ok, details := c.Run(context.Background(), 0)
			el := time.Since(start)
			class, errText, _ := strings.Cut(details, "|")
			if ok || class != tc.want || !strings.Contains(errText, tc.errText) {
				t.Fatalf("Run = %v, %q; want %q with %q", ok, details, tc.want, tc.errText)
			}
			if tc.want == "timeout" && (el < timeout || el > timeout+100*time.Millisecond) {
				t.Errorf("timed out after %v, want %v", el, timeout)
			}
			if c.conn != nil {
				t.Error("connection kept after a failure")
			}
		})
	}
}

var _ net.Listener = (*countingListener)(nil)

// A failure's details carry the error's text into the event; an outcome the
// logger cannot parse is still recorded.
func TestOutcomeCarriesTheErrorText(t *testing.T) {
	for _, tc := range []struct {
		details   string
		ok        bool
		class     events.Class
		status    int
		errorText string
	}{
		{failure(fmt.Errorf("read tcp 1.2.3.4:5->6.7.8.9:80: %w", syscall.ECONNRESET)), false, events.ClassReset, 0, "read tcp 1.2.3.4:5->6.7.8.9:80: connection reset by peer"},
		{failure(io.EOF), false, events.ClassReset, 0, "EOF"},
		{failure(errors.New("one\ntwo\n" + strings.Repeat("x", 300))), false, events.ClassOther, 0, ("one two " + strings.Repeat("x", 300))[:maxErrorText]},
		{"ok:200", true, events.ClassOK, 200, ""},
		{"http:503", false, events.ClassHTTP, 503, ""},
		{"gibberish|text", false, events.ClassOther, 0, "text"},
	} {
		c, status, errText := parseOutcome(tc.details, tc.ok)
		if c != tc.class || status != tc.status || errText != tc.errorText {
			t.Errorf("parseOutcome(%q) = %s, %d, %q; want %s, %d, %q", tc.details, c, status, errText, tc.class, tc.status, tc.errorText)
		}
	}
}
