package measure

import (
	"slices"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestStreams(t *testing.T) {
	sec := time.Second
	tr := func(off time.Duration, k events.Kind, thread int) events.Event {
		c := events.ClassOK
		if k == events.KindBroken {
			c = events.ClassReset
		}
		return events.Event{Start: ns(off), Kind: k, Class: c, Thread: thread}
	}
	for _, tc := range []struct {
		name string
		evs  []events.Event
		want StreamSummary
	}{
		{
			name: "none",
			want: StreamSummary{ReconnectSeconds: []float64{}},
		},
		{
			name: "pairs by thread, out of order",
			evs: []events.Event{
				tr(4*sec, events.KindReconnected, 2),
				tr(1*sec, events.KindBroken, 1),
				tr(2*sec, events.KindBroken, 2),
				tr(1500*time.Millisecond, events.KindReconnected, 1),
			},
			want: StreamSummary{Broken: 2, Reconnected: 2, ReconnectSeconds: []float64{0.5, 2}, MaxReconnectSeconds: 2},
		},
		{
			name: "second break while down keeps the first break's clock",
			evs: []events.Event{
				tr(2*sec, events.KindBroken, 2),
				tr(2500*time.Millisecond, events.KindBroken, 2),
				tr(5*sec, events.KindReconnected, 2),
			},
			want: StreamSummary{Broken: 1, Reconnected: 1, ReconnectSeconds: []float64{3}, MaxReconnectSeconds: 3},
		},
		{
			name: "reconnect after the window ends a break inside it",
			evs: []events.Event{
				tr(9500*time.Millisecond, events.KindBroken, 3),
				tr(10200*time.Millisecond, events.KindReconnected, 3),
			},
			want: StreamSummary{Broken: 1, Reconnected: 1, ReconnectSeconds: []float64{0.7}, MaxReconnectSeconds: 0.7},
		},
		{
			name: "breaks outside the window and stray reconnects are ignored",
			evs: []events.Event{
				tr(-1*sec, events.KindBroken, 1),
				tr(11*sec, events.KindBroken, 4),
				tr(12*sec, events.KindReconnected, 4),
				tr(3*sec, events.KindReconnected, 5),
			},
			want: StreamSummary{ReconnectSeconds: []float64{}},
		},
		{
			name: "never reconnected",
			evs: []events.Event{
				tr(5*sec, events.KindBroken, 6),
				tr(6*sec, events.KindBroken, 7),
				tr(7*sec, events.KindReconnected, 7),
			},
			want: StreamSummary{Broken: 2, Reconnected: 1, Unrecovered: 1, ReconnectSeconds: []float64{1}, MaxReconnectSeconds: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Requests alongside must not disturb the stream figures.
			evs := append(gen(10, 0, 10*sec, nil), tc.evs...)
			s := AnalyzeFlow(FlowMeta{QPS: 10}, evs, window(10*sec), nil, Options{}).Streams
			if s.Broken != tc.want.Broken || s.Reconnected != tc.want.Reconnected || s.Unrecovered != tc.want.Unrecovered ||
				!approx(s.MaxReconnectSeconds, tc.want.MaxReconnectSeconds, 1e-9) ||
				!slices.EqualFunc(s.ReconnectSeconds, tc.want.ReconnectSeconds, func(a, b float64) bool { return approx(a, b, 1e-9) }) ||
				s.ReconnectSeconds == nil {
				t.Errorf("got  %+v\nwant %+v", s, tc.want)
			}
		})
	}
}
