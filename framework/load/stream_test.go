package load

import (
	"context"
	"net"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestTCPEchoServer(t *testing.T) {
	ln := listen(t)
	stop := serve(t, ServeTCPEcho, ln)
	c := dial(t, ln.Addr().String())
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	msg := []byte("hello, echo")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := c.Read(got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo = %q, %v", got, err)
	}
	// Stopping the server must close established connections, not only the
	// listener: that is what breaks the streams in tests.
	stop()
	if _, err := c.Read(got); Classify(err) != events.ClassReset {
		t.Fatalf("read after server stop: %v, want the connection closed", err)
	}
}

// TestTCPStreamBreakAndReconnect stops the echo server in the middle of a
// tcp-stream flow and restarts it on the same port. Every stream must record
// exactly one break, fail while the server is down, then record a reconnect
// and succeed again.
func TestTCPStreamBreakAndReconnect(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	stop := serve(t, ServeTCPEcho, ln)
	w, path := newWriter(t, "events.jsonl")
	spec := FlowSpec{
		ID: "s1", Target: addr, Profile: ProfileTCPStream, QPS: 50, Timeout: 200 * time.Millisecond,
		Start: time.Now(), Duration: 2 * time.Second,
	}
	type result struct {
		st  FlowStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := RunFlow(context.Background(), spec, w)
		done <- result{st, err}
	}()

	time.Sleep(600 * time.Millisecond)
	stop()
	down := time.Now()
	time.Sleep(600 * time.Millisecond)
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("relisten on %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = ln2.Close() })
	up := time.Now()
	serve(t, ServeTCPEcho, ln2)

	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	st := res.st
	ev := readEvents(t, path)
	if st.Threads != 12 { // ceil(50 * 0.2) + 2
		t.Errorf("threads = %d, want 12", st.Threads)
	}
	if st.Broken != int64(st.Threads) || st.Reconnected != int64(st.Threads) {
		t.Errorf("stats %+v: want one break and one reconnect per stream", st)
	}

	// Per stream: ok... broken, failures, reconnected, ok...
	const (
		before = iota
		isBroken
		back
	)
	state := map[int]int{}
	failsWhileDown := map[int]int{}
	var requests int64
	for i, e := range ev {
		th := e.Thread
		switch e.Kind {
		case events.KindBroken:
			if state[th] != before {
				t.Fatalf("event %d: second break on stream %d", i, th)
			}
			if e.Class != events.ClassReset {
				t.Errorf("event %d: stream broke with %s, want reset (server closed it)", i, e.Class)
			}
			if e.Start < down.Add(-spec.Timeout).UnixNano() {
				t.Errorf("event %d: break recorded %v before the server stopped", i, down.Sub(time.Unix(0, e.Start)))
			}
			state[th] = isBroken
		case events.KindReconnected:
			if state[th] != isBroken {
				t.Fatalf("event %d: reconnect on stream %d without a break", i, th)
			}
			if e.Start < up.Add(-spec.Timeout).UnixNano() {
				t.Errorf("event %d: reconnect recorded %v before the server came back", i, up.Sub(time.Unix(0, e.Start)))
			}
			state[th] = back
		case events.KindRequest:
			requests++
			switch state[th] {
			case before, back:
				if e.Class != events.ClassOK {
					t.Errorf("event %d: stream %d failed (%s) while the server was up", i, th, e.Class)
				}
			case isBroken:
				if e.Class == events.ClassOK {
					t.Errorf("event %d: stream %d succeeded while broken", i, th)
				}
				// The failing message itself is reset; redials are refused.
				if e.Class != events.ClassRefused && e.Class != events.ClassReset {
					t.Errorf("event %d: failure class %s while down", i, e.Class)
				}
				failsWhileDown[th]++
			}
		}
	}
	if requests != st.Requests {
		t.Errorf("%d request events, stats say %d", requests, st.Requests)
	}
	for th := range st.Threads {
		if state[th] != back {
			t.Errorf("stream %d did not break and come back", th)
		}
		// Down for 600 ms at 50/12 rps per stream: about 2.5 failed requests each.
		if failsWhileDown[th] < 1 {
			t.Errorf("stream %d: no failed request while down", th)
		}
	}
	// 2 s at 50 rps, minus the slots a stream skipped while a request was in flight.
	if st.Requests < 90 || st.Requests > 110 {
		t.Errorf("%d requests, want about 100", st.Requests)
	}
}
