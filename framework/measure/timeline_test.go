package measure

import (
	"reflect"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestTimeline(t *testing.T) {
	msec := time.Millisecond
	req := func(off time.Duration, c events.Class, lat time.Duration) events.Event {
		return events.Event{Start: ns(off), Class: c, Latency: int64(lat)}
	}
	evs := []events.Event{
		req(10*msec, events.ClassOK, 1*msec),
		req(240*msec, events.ClassOK, 3*msec),
		req(250*msec, events.ClassTimeout, time.Second), // first instant of bucket 1
		req(300*msec, events.ClassOK, 5*msec),
		// bucket 2 is empty
		req(800*msec, events.ClassRefused, msec),
		req(999*msec, events.ClassReset, msec),
		req(999*msec, events.ClassReset, msec),
		req(1000*msec, events.ClassOK, msec), // at win.End: outside
	}
	reqs, _ := split(evs, ns(0), ns(time.Second))
	got := timeline(reqs, ns(0), ns(time.Second), int64(250*msec), nil)
	want := []Bucket{
		{Offset: 0, Requests: 2, OK: 2, MaxLatencyMs: 3, MeanLatencyMs: 2},
		{Offset: 250 * msec, Requests: 2, OK: 1, Failed: map[events.Class]int{events.ClassTimeout: 1}, MaxLatencyMs: 5, MeanLatencyMs: 5},
		{Offset: 500 * msec},
		{Offset: 750 * msec, Requests: 3, Failed: map[events.Class]int{events.ClassRefused: 1, events.ClassReset: 2}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestTimelineBuckets(t *testing.T) {
	for _, tc := range []struct {
		name   string
		win    time.Duration
		bucket time.Duration
		want   int
	}{
		{"default bucket", 10 * time.Second, 0, 100},
		{"partial last bucket", 1050 * time.Millisecond, 0, 11},
		{"custom bucket", 10 * time.Second, time.Second, 10},
		{"empty window", 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := AnalyzeFlow(FlowMeta{QPS: 100}, gen(100, 0, tc.win, nil), window(tc.win), nil, Options{Bucket: tc.bucket})
			if len(s.Timeline) != tc.want || s.Timeline == nil {
				t.Fatalf("%d buckets, want %d", len(s.Timeline), tc.want)
			}
			total, size := 0, (Options{Bucket: tc.bucket}).bucket()
			for i, b := range s.Timeline {
				total += b.Requests
				if want := time.Duration(i) * size; b.Offset != want {
					t.Errorf("bucket %d offset %v, want %v", i, b.Offset, want)
				}
			}
			if total != s.Requests {
				t.Errorf("timeline holds %d requests, flow has %d", total, s.Requests)
			}
		})
	}
}
