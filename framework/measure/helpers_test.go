package measure

import (
	"math"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// t0 is an arbitrary window start; everything in the tests is an offset from it.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func window(d time.Duration) Window { return Window{Start: t0, End: t0.Add(d)} }

func ns(d time.Duration) int64 { return t0.Add(d).UnixNano() }

// gen makes a constant-rate flow, one request every 1/qps starting at from and
// stopping before to. class decides each request's outcome from its offset;
// failures get the latency their class would have in real life so that tests
// notice if failed latencies leak into the latency figures.
func gen(qps float64, from, to time.Duration, class func(off time.Duration) events.Class) []events.Event {
	step := time.Duration(float64(time.Second) / qps)
	var evs []events.Event
	for i := 0; ; i++ {
		off := from + time.Duration(i)*step
		if off >= to {
			return evs
		}
		c := events.ClassOK
		if class != nil {
			c = class(off)
		}
		lat := 2 * time.Millisecond
		switch c {
		case events.ClassTimeout:
			lat = time.Second
		case events.ClassOK:
		default:
			lat = 500 * time.Microsecond
		}
		evs = append(evs, events.Event{Start: ns(off), Latency: int64(lat), Class: c, Thread: i % 4})
	}
}

// hole fails every request whose start lies in [from, to) with class c.
func hole(from, to time.Duration, c events.Class) func(time.Duration) events.Class {
	return func(off time.Duration) events.Class {
		if off >= from && off < to {
			return c
		}
		return events.ClassOK
	}
}

// concat joins event lists; flows in tests are stitched from pieces.
func concat(parts ...[]events.Event) []events.Event {
	var out []events.Event
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func approx(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// wantOutage is the expected shape of one outage, as offsets from t0.
type wantOutage struct {
	start, end time.Duration
	failures   int
	byClass    map[events.Class]int
	class      events.Class
}

func checkOutages(t *testing.T, got []OutageInterval, want []wantOutage) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d outages, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if !g.Start.Equal(at(w.start)) || !g.End.Equal(at(w.end)) {
			t.Errorf("outage %d: [%v, %v), want [%v, %v)", i, g.Start.Sub(t0), g.End.Sub(t0), w.start, w.end)
		}
		if wantSecs := (w.end - w.start).Seconds(); !approx(g.Seconds, wantSecs, 1e-9) {
			t.Errorf("outage %d: seconds %v, want %v", i, g.Seconds, wantSecs)
		}
		if g.Failures != w.failures {
			t.Errorf("outage %d: failures %d, want %d", i, g.Failures, w.failures)
		}
		if !sameCounts(g.ByClass, w.byClass) {
			t.Errorf("outage %d: byClass %v, want %v", i, g.ByClass, w.byClass)
		}
		if g.Class != w.class {
			t.Errorf("outage %d: class %q, want %q", i, g.Class, w.class)
		}
	}
}

func sameCounts(a, b map[events.Class]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
