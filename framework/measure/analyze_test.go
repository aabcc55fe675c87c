package measure

import (
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestAffected(t *testing.T) {
	sec, msec := time.Second, time.Millisecond
	// Fault at 4s, recovered at 6s, 100ms buckets: the blame period is
	// [3.9s, 8s]. Each case is a 200ms outage at a 100 qps flow.
	fault := &Fault{Inject: at(4 * sec), Recover: at(6 * sec)}
	for _, tc := range []struct {
		name  string
		from  time.Duration
		fault *Fault
		want  bool
	}{
		{"well before", 1 * sec, fault, false},
		{"ends exactly where blame starts", 3700 * msec, fault, true},
		{"ends just before blame starts", 3690 * msec, fault, false},
		{"during", 5 * sec, fault, true},
		{"starts exactly at recover+2s", 8 * sec, fault, true},
		{"starts just after recover+2s", 8010 * msec, fault, false},
		{"no recovery: any time after inject", 9 * sec, &Fault{Inject: at(4 * sec)}, true},
		{"no recovery: still not before inject", 1 * sec, &Fault{Inject: at(4 * sec)}, false},
		{"no fault: any outage", 1 * sec, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := gen(100, 0, 10*sec, hole(tc.from, tc.from+200*msec, events.ClassRefused))
			s := AnalyzeFlow(FlowMeta{QPS: 100}, evs, window(10*sec), tc.fault, Options{})
			if len(s.Outages) != 1 {
				t.Fatalf("want one outage, got %+v", s.Outages)
			}
			if s.Affected != tc.want {
				t.Errorf("affected = %v, want %v (outage %v..%v)", s.Affected, tc.want,
					s.Outages[0].Start.Sub(t0), s.Outages[0].End.Sub(t0))
			}
		})
	}
	t.Run("no fault, no outage", func(t *testing.T) {
		s := AnalyzeFlow(FlowMeta{QPS: 100}, gen(100, 0, 10*sec, nil), window(10*sec), nil, Options{})
		if s.Affected {
			t.Error("clean flow with no fault marked affected")
		}
	})
	t.Run("wider bucket widens the lead-in", func(t *testing.T) {
		evs := gen(100, 0, 10*sec, hole(3490*msec, 3500*msec, events.ClassRefused))
		s := AnalyzeFlow(FlowMeta{QPS: 100}, evs, window(10*sec), fault, Options{Bucket: 500 * msec})
		if !s.Affected {
			t.Errorf("outage ending at 3.5s should be within one 500ms bucket of a 4s inject: %+v", s.Outages)
		}
	})
}

func TestAnalyzeFlowKeepsMeta(t *testing.T) {
	meta := FlowMeta{ID: "a->b", Client: "a", Server: "b", QPS: 5, Via: "svc", Profile: "http-keepalive"}
	s := AnalyzeFlow(meta, gen(5, 0, 2*time.Second, nil), window(2*time.Second), nil, Options{})
	if s.Flow != meta {
		t.Errorf("flow = %+v, want %+v", s.Flow, meta)
	}
	if s.Requests != 10 {
		t.Errorf("requests = %d, want 10", s.Requests)
	}
}
