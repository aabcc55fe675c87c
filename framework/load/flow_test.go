package load

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestFlowSpecValidate(t *testing.T) {
	good := FlowSpec{ID: "f", Target: "10.0.0.1:80", Profile: ProfileTCPStream, QPS: 10}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for _, tc := range []struct {
		mut  func(*FlowSpec)
		want string
	}{
		{func(s *FlowSpec) { s.Profile = "" }, "unknown profile"},
		{func(s *FlowSpec) { s.QPS = 0 }, "qps"},
		{func(s *FlowSpec) { s.QPS = math.NaN() }, "qps"},
		{func(s *FlowSpec) { s.QPS = math.Inf(1) }, "qps"},
		{func(s *FlowSpec) { s.Target = "10.0.0.1" }, "bad target"},
		{func(s *FlowSpec) { s.Target = "svc.local:80" }, "not an IP"},
		{func(s *FlowSpec) { s.Target = "10.0.0.1:0" }, "bad port"},
		{func(s *FlowSpec) { s.Target = "10.0.0.1:99999" }, "bad port"},
		{func(s *FlowSpec) { s.Timeout = -time.Second }, "negative timeout"},
		{func(s *FlowSpec) { s.Threads = -1 }, "negative threads"},
		{func(s *FlowSpec) { s.Duration = -time.Second }, "negative duration"},
		{func(s *FlowSpec) { s.QPS = 1e6 }, "threads"},
	} {
		s := good
		tc.mut(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `flow "f"`) {
			t.Errorf("%+v: error %v, want one naming the flow and containing %q", s, err, tc.want)
		}
		if _, err := RunFlow(context.Background(), s, &events.Writer{}); err == nil {
			t.Errorf("%+v: RunFlow accepted it", s)
		}
	}
	if _, err := RunFlow(context.Background(), good, nil); err == nil {
		t.Error("RunFlow accepted a nil writer")
	}
}

// TestFlowKeepsRateIntoBlackHole: a target that accepts and never answers
// must still be sampled at the offered rate (every request a timeout), which
// is what the automatic thread count is for. With too few threads, fortio's
// no-catch-up mode would skip slots and the outage would look thinly sampled.
func TestFlowKeepsRateIntoBlackHole(t *testing.T) {
	silent := listen(t) // the kernel completes handshakes; nobody reads
	w, path := newWriter(t, "events.jsonl")
	spec := FlowSpec{
		ID: "bh", Target: silent.Addr().String(), Profile: ProfileHTTPKeepAlive,
		QPS: 100, Timeout: 200 * time.Millisecond, Duration: time.Second,
	}
	start := time.Now()
	st, err := RunFlow(context.Background(), spec, w)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	ev := readEvents(t, path)
	if len(ev) < 90 || len(ev) > 110 || st.Requests != int64(len(ev)) || st.OK != 0 {
		t.Errorf("stats %+v, %d events: want about 100 failed requests", st, len(ev))
	}
	for i, e := range ev {
		if e.Class != events.ClassTimeout {
			t.Fatalf("event %d: %+v, want a timeout", i, e)
		}
		if l := time.Duration(e.Latency); l < spec.Timeout || l > spec.Timeout+50*time.Millisecond {
			t.Errorf("event %d: timed out after %v, want %v", i, l, spec.Timeout)
		}
	}
	// In-flight requests are waited for (and recorded), but no longer than
	// their timeout.
	if took < spec.Duration || took > spec.Duration+spec.Timeout+100*time.Millisecond {
		t.Errorf("RunFlow took %v for a %v flow with %v timeouts", took, spec.Duration, spec.Timeout)
	}
}

// TestFlowStopsWithContext: ending the context stops a flow early without an
// error, before its start too.
func TestFlowStopsWithContext(t *testing.T) {
	ln := listen(t)
	serve(t, ServeTCPEcho, ln)
	w, path := newWriter(t, "events.jsonl")
	spec := FlowSpec{ID: "c", Target: ln.Addr().String(), Profile: ProfileTCPStream, QPS: 100}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	st, err := RunFlow(ctx, spec, w) // Duration 0: until ctx ends
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 500*time.Millisecond {
		t.Errorf("took %v to stop after the context ended at 300ms", took)
	}
	if st.Requests < 25 || st.Requests > 35 || st.OK != st.Requests {
		t.Errorf("stats %+v: want about 30 ok requests", st)
	}
	if n := len(readEvents(t, path)); int64(n) != st.Requests {
		t.Errorf("%d events for %d requests", n, st.Requests)
	}

	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	spec.Start = time.Now().Add(time.Hour)
	begin = time.Now()
	st, err = RunFlow(ctx2, spec, w)
	if err != nil || st.Requests != 0 || time.Since(begin) > 500*time.Millisecond {
		t.Errorf("stopped before start: %+v, %v after %v", st, err, time.Since(begin))
	}
}
