package measure

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestSortEvents(t *testing.T) {
	base := gen(200, 0, 5*time.Second, hole(2*time.Second, 3*time.Second, events.ClassTimeout))
	// Same start on two threads: only the tie-breakers order these.
	base = append(base, events.Event{Start: ns(time.Second), Class: events.ClassReset, Thread: 9},
		events.Event{Start: ns(time.Second), Class: events.ClassOK, Thread: 0, Latency: 1})
	for _, tc := range []struct {
		name    string
		reorder func([]events.Event)
	}{
		{"already sorted", func(evs []events.Event) { slices.SortFunc(evs, compareEvents) }},
		{"completion order", func(evs []events.Event) {
			slices.SortStableFunc(evs, func(a, b events.Event) int { return cmp.Compare(a.Start+a.Latency, b.Start+b.Latency) })
		}},
		{"reversed", func(evs []events.Event) { slices.SortFunc(evs, compareEvents); slices.Reverse(evs) }},
		{"shuffled", func(evs []events.Event) {
			rand.New(rand.NewPCG(5, 6)).Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := slices.Clone(base)
			tc.reorder(evs)
			want := slices.Clone(base)
			slices.SortStableFunc(want, compareEvents)
			sortEvents(evs)
			if !slices.Equal(evs, want) {
				t.Error("not sorted into the canonical order")
			}
		})
	}
}
