package measure

import (
	"math"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// streams pairs each break with the next reconnect on the same thread (a
// thread owns one connection). Only breaks inside the window count: agents
// close their streams when load stops, and that is not a disruption. A
// reconnect after the window still ends a break inside it. A second break
// while a thread is already down is the same outage seen again, so it neither
// counts nor restarts the clock.
func streams(transitions []events.Event, ws, we int64) StreamSummary {
	s := StreamSummary{ReconnectSeconds: []float64{}}
	down := map[int]int64{}
	for _, e := range transitions {
		switch e.Kind {
		case events.KindBroken:
			if e.Start < ws || e.Start >= we {
				continue
			}
			if _, already := down[e.Thread]; already {
				continue
			}
			down[e.Thread] = e.Start
			s.Broken++
		case events.KindReconnected:
			since, ok := down[e.Thread]
			if !ok {
				continue
			}
			delete(down, e.Thread)
			s.Reconnected++
			secs := time.Duration(e.Start - since).Seconds()
			s.ReconnectSeconds = append(s.ReconnectSeconds, secs)
			s.MaxReconnectSeconds = max(s.MaxReconnectSeconds, secs)
		}
	}
	s.Unrecovered = len(down)
	return s
}

// stalls adds the stream's stalls: messages echoed late on a connection that
// stayed open. A message that failed broke its connection and is a break,
// not a stall.
func stalls(s *StreamSummary, reqs []events.Event, slow func(events.Event) bool) {
	for _, e := range reqs {
		if !slow(e) {
			continue
		}
		secs := time.Duration(e.Latency).Seconds()
		s.Stalls++
		s.StallSeconds += secs
		s.MaxStallSeconds = max(s.MaxStallSeconds, secs)
	}
	s.StallSeconds = math.Round(s.StallSeconds*1e6) / 1e6
}
