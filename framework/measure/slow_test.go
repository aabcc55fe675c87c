package measure

import (
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// retransmitted models a kept-alive connection black-holed over [from, to):
// a request sent at s is lost; TCP retransmits it 200 ms later. If that is
// still inside the hole, the request times out (500 ms); otherwise it is
// answered about 200 ms after it was sent. Outside the hole requests take
// 2 ms.
func retransmitted(qps float64, win, from, to time.Duration) []events.Event {
	const rto = 200 * time.Millisecond
	step := time.Duration(float64(time.Second) / qps)
	var evs []events.Event
	for i := 0; ; i++ {
		off := time.Duration(i) * step
		if off >= win {
			return evs
		}
		e := events.Event{Start: ns(off), Latency: int64(2 * msec), Class: events.ClassOK, Thread: i % 8}
		if off >= from && off < to {
			if off+rto < to {
				e.Class, e.Latency = events.ClassTimeout, int64(500*msec)
			} else {
				e.Latency = int64(rto + msec)
			}
		}
		evs = append(evs, e)
	}
}

func TestLateAnswersAreOutage(t *testing.T) {
	for _, tc := range []struct {
		name             string
		from, dur        time.Duration
		wantFail, wantSl int
	}{
		// 200 rps: a request every 5 ms. Every request sent in a hole's
		// last 200 ms is answered late; the ones before it time out.
		{"100ms", 5 * time.Second, 100 * msec, 0, 20},
		{"300ms", 5 * time.Second, 300 * msec, 20, 40},
		{"1s", 5 * time.Second, time.Second, 160, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := retransmitted(200, 10*time.Second, tc.from, tc.from+tc.dur)
			fault := &Fault{Inject: at(tc.from), Recover: at(tc.from + tc.dur)}
			s := AnalyzeFlow(FlowMeta{ID: "f", QPS: 200, Profile: "http-keepalive"}, evs, window(10*time.Second), fault,
				Options{Timeout: 500 * msec})
			if len(s.Outages) != 1 {
				t.Fatalf("outages %+v, want one", s.Outages)
			}
			o := s.Outages[0]
			if !o.Start.Equal(at(tc.from)) || !o.End.Equal(at(tc.from+tc.dur)) {
				t.Errorf("outage [%v, %v), want the hole [%v, %v)", o.Start.Sub(t0), o.End.Sub(t0), tc.from, tc.from+tc.dur)
			}
			if o.Failed != tc.wantFail || o.Slow != tc.wantSl || o.Failures != tc.wantFail || o.Missing != 0 {
				t.Errorf("failed/slow/missing/failures = %d/%d/%d/%d, want %d/%d/0/%d", o.Failed, o.Slow, o.Missing, o.Failures, tc.wantFail, tc.wantSl, tc.wantFail)
			}
			if o.ByClass[ClassSlow] != tc.wantSl || o.SlowLatency == nil || o.SlowLatency.MaxMs != 201 {
				t.Errorf("byClass %v, slow latency %+v", o.ByClass, o.SlowLatency)
			}
			if s.Slow != tc.wantSl || s.OK != s.Requests-tc.wantFail {
				t.Errorf("flow slow %d ok %d of %d", s.Slow, s.OK, s.Requests)
			}
			if !approx(s.DisruptionSeconds, tc.dur.Seconds(), 1e-9) {
				t.Errorf("disruption %v, want %v", s.DisruptionSeconds, tc.dur)
			}
			// Counting failures only, the outage ends 200 ms early: the
			// figure old baselines hold.
			if want := (tc.dur - 200*msec).Seconds(); !approx(s.FailedDisruptionSeconds, max(want, 0), 1e-9) {
				t.Errorf("failed-only disruption %v, want %v", s.FailedDisruptionSeconds, want)
			}
			if s.StallThresholdMs != DefaultStallFloor.Seconds()*1000 {
				t.Errorf("threshold %vms, want the floor", s.StallThresholdMs)
			}
			slowBuckets := 0
			for _, b := range s.Timeline {
				slowBuckets += b.Slow
			}
			if slowBuckets != tc.wantSl {
				t.Errorf("timeline slow %d, want %d", slowBuckets, tc.wantSl)
			}
			if !s.Affected {
				t.Error("not affected")
			}
		})
	}
}

func TestStallThreshold(t *testing.T) {
	flow := func(lat func(off time.Duration) time.Duration) []events.Event {
		evs := gen(100, 0, 10*time.Second, nil)
		for i := range evs {
			evs[i].Latency = int64(lat(time.Duration(evs[i].Start - t0.UnixNano())))
		}
		return evs
	}
	fault := &Fault{Inject: at(5 * time.Second), Recover: at(6 * time.Second)}
	for _, tc := range []struct {
		name  string
		lat   func(time.Duration) time.Duration
		fault *Fault
		opt   Options
		want  time.Duration
		slow  int
	}{
		{"fast flow gets the floor", func(time.Duration) time.Duration { return 3 * msec }, fault, Options{}, DefaultStallFloor, 0},
		{"slow flow: three times its p99", func(time.Duration) time.Duration { return 60 * msec }, fault, Options{}, 180 * msec, 0},
		{"capped below the timeout", func(time.Duration) time.Duration { return 300 * msec }, fault, Options{Timeout: 500 * msec}, 400 * msec, 0},
		{"own floor", func(time.Duration) time.Duration { return 3 * msec }, fault, Options{StallFloor: 50 * msec}, 50 * msec, 0},
		// The first second (every thread dialling at once) neither sets
		// the threshold nor counts as late.
		{"first second left out", func(off time.Duration) time.Duration {
			if off < time.Second {
				return 300 * msec
			}
			return 3 * msec
		}, fault, Options{}, DefaultStallFloor, 0},
		// Only latency before the fault sets the threshold: the fault's own
		// late answers must not raise the bar they are judged by.
		{"fault period left out", func(off time.Duration) time.Duration {
			if off >= 5*time.Second && off < 6*time.Second {
				return 250 * msec
			}
			return 3 * msec
		}, fault, Options{}, DefaultStallFloor, 100},
		{"no fault: whole window", func(off time.Duration) time.Duration {
			if off >= 5*time.Second && off < 5100*msec {
				return 250 * msec
			}
			return 3 * msec
		}, nil, Options{}, 750 * msec, 0},
		// A lone spike above the floor in a fast flow is one late request.
		{"spike", func(off time.Duration) time.Duration {
			if off == 7*time.Second {
				return 120 * msec
			}
			return 3 * msec
		}, fault, Options{}, DefaultStallFloor, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := AnalyzeFlow(FlowMeta{ID: "f", QPS: 100}, flow(tc.lat), window(10*time.Second), tc.fault, tc.opt)
			if got := time.Duration(s.StallThresholdMs * 1e6); got != tc.want {
				t.Errorf("threshold %v, want %v", got, tc.want)
			}
			if s.Slow != tc.slow {
				t.Errorf("slow %d, want %d", s.Slow, tc.slow)
			}
			if (len(s.Outages) > 0) != (tc.slow > 0) {
				t.Errorf("outages %+v with %d slow", s.Outages, s.Slow)
			}
		})
	}
}

func TestStreamStalls(t *testing.T) {
	// 50 messages/s; three messages wait 300 ms for their echo on a
	// connection that stays open, and nothing breaks.
	evs := gen(50, 0, 10*time.Second, nil)
	late := map[time.Duration]bool{4 * time.Second: true, 4020 * msec: true, 7 * time.Second: true}
	for i := range evs {
		if late[time.Duration(evs[i].Start-t0.UnixNano())] {
			evs[i].Latency = int64(300 * msec)
		}
	}
	s := AnalyzeFlow(FlowMeta{ID: "s", QPS: 50, Profile: "tcp-stream"}, evs, window(10*time.Second), nil,
		Options{Timeout: 500 * msec})
	st := s.Streams
	if st.Broken != 0 || st.Stalls != 3 || !approx(st.StallSeconds, 0.9, 1e-9) || st.MaxStallSeconds != 0.3 {
		t.Errorf("streams %+v, want 3 stalls, 0.9 s in all, 0.3 s longest, no break", st)
	}
	if len(s.Outages) != 2 || s.Outages[0].Slow != 2 || s.Outages[1].Slow != 1 {
		t.Errorf("outages %+v, want two of slow messages", s.Outages)
	}
	// 27 connections (50 × 0.5 + 2), each probed every 540 ms.
	if s.RequestIntervalMs != 20 || s.ProbeIntervalMs != 540 || s.CoarserThanBucket {
		t.Errorf("resolution: request %vms probe %vms coarser %v", s.RequestIntervalMs, s.ProbeIntervalMs, s.CoarserThanBucket)
	}
	// Request flows have no stalls, whatever their latency.
	r := AnalyzeFlow(FlowMeta{ID: "r", QPS: 50, Profile: "http-keepalive"}, evs, window(10*time.Second), nil, Options{})
	if r.Streams.Stalls != 0 || r.Slow != 3 {
		t.Errorf("request flow: stalls %d slow %d", r.Streams.Stalls, r.Slow)
	}
}

func TestResolutionCoarserThanBucket(t *testing.T) {
	s := AnalyzeFlow(FlowMeta{ID: "f", QPS: 8}, gen(8, 0, 5*time.Second, nil), window(5*time.Second), nil, Options{})
	if !s.CoarserThanBucket || s.RequestIntervalMs != 125 {
		t.Errorf("8 rps against 100 ms buckets: interval %vms coarser %v", s.RequestIntervalMs, s.CoarserThanBucket)
	}
}

// pooled models requests that all ride one connection (a node proxy's HBONE
// tunnel) black-holed over [from, to): the connection moves again 10 ms
// after the hole, and every request sent in the hole is answered then, or
// times out at 500 ms if it would have waited longer. The last ones sent in
// the hole wait only a little and are not late by latency; their answers
// still end the outage with the hole.
func pooled(qps float64, win, from, to time.Duration) []events.Event {
	step := time.Duration(float64(time.Second) / qps)
	back := to + 10*msec
	var evs []events.Event
	for i := 0; ; i++ {
		off := time.Duration(i) * step
		if off >= win {
			return evs
		}
		e := events.Event{Start: ns(off), Latency: int64(3 * msec), Class: events.ClassOK, Thread: i % 8}
		if off >= from && off < back {
			switch wait := back - off; {
			case wait >= 500*msec:
				e.Class, e.Latency = events.ClassTimeout, int64(500*msec)
			default:
				e.Latency = int64(wait + msec)
			}
		}
		evs = append(evs, e)
	}
}

func TestPooledConnectionHoleEndsWithItsAnswers(t *testing.T) {
	for _, dur := range []time.Duration{100 * msec, 300 * msec, time.Second} {
		t.Run(dur.String(), func(t *testing.T) {
			from := 5 * time.Second
			evs := pooled(200, 10*time.Second, from, from+dur)
			fault := &Fault{Inject: at(from), Recover: at(from + dur)}
			s := AnalyzeFlow(FlowMeta{ID: "f", QPS: 200, Profile: "http-keepalive"}, evs, window(10*time.Second), fault,
				Options{Timeout: 500 * msec})
			if len(s.Outages) != 1 {
				t.Fatalf("outages %+v, want one", s.Outages)
			}
			o := s.Outages[0]
			if !o.Start.Equal(at(from)) || o.End.Sub(at(from+dur)).Abs() > 15*msec {
				t.Errorf("outage [%v, %v), want the hole [%v, %v) to within 15 ms", o.Start.Sub(t0), o.End.Sub(t0), from, from+dur)
			}
			// Counting failures alone, nothing of a 100 ms hole shows.
			if dur == 100*msec && s.FailedDisruptionSeconds != 0 {
				t.Errorf("failed-only disruption %v, want 0", s.FailedDisruptionSeconds)
			}
		})
	}
}

// A pooled tunnel black-holed for 1 s, then working off what it held up:
// requests sent in the hole's first half time out; every later one, up to
// 300 ms after the hole, is answered only once the backlog is through, at
// 1.3 s. The outage runs to the last late answer, and LastFailed says where
// its failures stopped.
func TestLastFailedEndsBeforeTheBacklog(t *testing.T) {
	const qps = 200
	step := time.Second / qps
	from, drained := 2*time.Second, 3300*time.Millisecond // the hole ends at 3 s
	var evs []events.Event
	var lastFailed time.Duration
	for off := time.Duration(0); off < 6*time.Second; off += step {
		e := events.Event{Start: ns(off), Latency: int64(2 * msec), Class: events.ClassOK}
		switch {
		case off >= from && drained-off > 500*msec:
			e.Class, e.Latency = events.ClassTimeout, int64(500*msec)
			lastFailed = off
		case off >= from && off < drained:
			e.Latency = int64(drained - off)
		}
		evs = append(evs, e)
	}
	s := AnalyzeFlow(FlowMeta{ID: "f", QPS: qps, Profile: "http-keepalive"}, evs, window(6*time.Second), nil, Options{Timeout: 500 * msec})
	if len(s.Outages) != 1 {
		t.Fatalf("outages %+v, want one", s.Outages)
	}
	o := s.Outages[0]
	if !o.Start.Equal(at(from)) || o.End.Before(at(drained)) {
		t.Errorf("outage [%v, %v), want from %v to at least %v", o.Start.Sub(t0), o.End.Sub(t0), from, drained)
	}
	if o.LastFailed == nil || !o.LastFailed.Equal(at(lastFailed)) {
		t.Errorf("LastFailed %v, want %v", o.LastFailed, lastFailed)
	}
	if o.Slow == 0 || o.Failed == 0 {
		t.Errorf("failed %d, slow %d: want both", o.Failed, o.Slow)
	}

	// No failure at all: no LastFailed.
	for i := range evs {
		if evs[i].Class != events.ClassOK {
			evs[i].Class, evs[i].Latency = events.ClassOK, int64(700*msec)
		}
	}
	s = AnalyzeFlow(FlowMeta{ID: "f", QPS: qps, Profile: "http-keepalive"}, evs, window(6*time.Second), nil, Options{Timeout: 500 * msec})
	if len(s.Outages) != 1 || s.Outages[0].LastFailed != nil {
		t.Errorf("late answers only: %+v, want one outage without LastFailed", s.Outages)
	}
}
