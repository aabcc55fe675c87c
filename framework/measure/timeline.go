package measure

import (
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// timeline buckets sorted in-window requests by start. Latency figures cover
// successful requests only; failures are in Failed, and folding timeouts into
// the latency would just draw the client's deadline. A bucket with no
// requests at all is how a missing-sample gap shows up.
func timeline(reqs []events.Event, ws, we, bucket int64, slow func(events.Event) bool) []Bucket {
	if we <= ws {
		return []Bucket{}
	}
	n := int((we - ws + bucket - 1) / bucket)
	out := make([]Bucket, n)
	sums := make([]int64, n)
	for i := range out {
		out[i].Offset = time.Duration(int64(i) * bucket)
	}
	for _, e := range reqs {
		i := int((e.Start - ws) / bucket)
		b := &out[i]
		b.Requests++
		if !e.OK() {
			if b.Failed == nil {
				b.Failed = map[events.Class]int{}
			}
			b.Failed[e.Class]++
			continue
		}
		b.OK++
		if slow != nil && slow(e) {
			b.Slow++
		}
		sums[i] += e.Latency
		b.MaxLatencyMs = max(b.MaxLatencyMs, ms(e.Latency))
	}
	for i := range out {
		if out[i].OK > 0 {
			out[i].MeanLatencyMs = ms(sums[i]) / float64(out[i].OK)
		}
	}
	return out
}
