package measure

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// BenchmarkAnalyzeFlow measures one minute of a 200 rps flow with a 1s black
// hole, in the order an agent writes events and fully shuffled, to show the
// worst case stays O(n log n).
func BenchmarkAnalyzeFlow(b *testing.B) {
	evs := gen(200, 0, 60*time.Second, hole(30*time.Second, 31*time.Second, events.ClassTimeout))
	// Agents write an event when the request completes, so a timeout lands
	// a whole second after the requests that started just behind it.
	slices.SortStableFunc(evs, func(a, b events.Event) int {
		return cmp.Compare(a.Start+a.Latency, b.Start+b.Latency)
	})
	shuffled := slices.Clone(evs)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	})
	fault := &Fault{Inject: at(30 * time.Second), Recover: at(31 * time.Second)}
	meta := FlowMeta{ID: "bench", QPS: 200}
	for _, bc := range []struct {
		name string
		evs  []events.Event
	}{{"completion-order", evs}, {"shuffled", shuffled}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				AnalyzeFlow(meta, bc.evs, window(60*time.Second), fault, Options{})
			}
		})
	}
}
