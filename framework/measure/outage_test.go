package measure

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

const msec = time.Millisecond

func TestBlackHole(t *testing.T) {
	// 200 rps: a request every 5ms, so a hole's edges are seen within 5ms.
	for _, tc := range []struct {
		name       string
		from, dur  time.Duration
		wantStart  time.Duration // first request start inside the hole
		wantEnd    time.Duration // first request start after it
		wantFailed int
	}{
		{"100ms aligned", 10 * time.Second, 100 * msec, 10 * time.Second, 10*time.Second + 100*msec, 20},
		{"100ms off-grid", 10*time.Second + 2*msec, 100 * msec, 10*time.Second + 5*msec, 10*time.Second + 105*msec, 20},
		{"300ms aligned", 10 * time.Second, 300 * msec, 10 * time.Second, 10*time.Second + 300*msec, 60},
		{"300ms off-grid", 10*time.Second + 1*msec, 300 * msec, 10*time.Second + 5*msec, 10*time.Second + 305*msec, 60},
		{"1s aligned", 10 * time.Second, time.Second, 10 * time.Second, 11 * time.Second, 200},
		{"1s off-grid", 10*time.Second + 4*msec, time.Second, 10*time.Second + 5*msec, 11*time.Second + 5*msec, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := gen(200, 0, 20*time.Second, hole(tc.from, tc.from+tc.dur, events.ClassTimeout))
			fault := &Fault{Name: "blackhole", Inject: at(tc.from), Recover: at(tc.from + tc.dur)}
			s := AnalyzeFlow(FlowMeta{ID: "f", QPS: 200}, evs, window(20*time.Second), fault, Options{})

			checkOutages(t, s.Outages, []wantOutage{{
				start: tc.wantStart, end: tc.wantEnd, failures: tc.wantFailed,
				byClass: map[events.Class]int{events.ClassTimeout: tc.wantFailed}, class: events.ClassTimeout,
			}})
			if !approx(s.DisruptionSeconds, tc.dur.Seconds(), 0.010) {
				t.Errorf("disruption %.4fs, want %v ±10ms", s.DisruptionSeconds, tc.dur)
			}
			if s.Requests != 4000 || s.Failed != tc.wantFailed || s.OK != 4000-tc.wantFailed {
				t.Errorf("requests/ok/failed = %d/%d/%d, want 4000/%d/%d", s.Requests, s.OK, s.Failed, 4000-tc.wantFailed, tc.wantFailed)
			}
			if !s.Affected {
				t.Error("not affected")
			}
		})
	}
}

func TestNoFailures(t *testing.T) {
	evs := gen(200, 0, 10*time.Second, nil)
	fault := &Fault{Inject: at(3 * time.Second), Recover: at(4 * time.Second)}
	s := AnalyzeFlow(FlowMeta{QPS: 200}, evs, window(10*time.Second), fault, Options{})
	if s.Outages == nil || len(s.Outages) != 0 {
		t.Errorf("outages = %#v, want empty non-nil", s.Outages)
	}
	if s.DisruptionSeconds != 0 || s.Affected || s.Failed != 0 || s.Requests != 2000 || s.OK != 2000 || len(s.ByClass) != 0 {
		t.Errorf("clean flow measured as %+v", s)
	}
}

func TestKilledClient(t *testing.T) {
	win := window(10 * time.Second)
	for _, tc := range []struct {
		name string
		evs  []events.Event
		want wantOutage
	}{
		{
			// Last sample at 4.99s; silence from there to the end.
			name: "killed at 5s",
			evs:  gen(100, 0, 5*time.Second, nil),
			want: wantOutage{start: 4990 * msec, end: 10 * time.Second, failures: 501,
				byClass: map[events.Class]int{ClassMissing: 501}, class: ClassMissing},
		},
		{
			name: "never started",
			want: wantOutage{start: 0, end: 10 * time.Second, failures: 1000,
				byClass: map[events.Class]int{ClassMissing: 1000}, class: ClassMissing},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := AnalyzeFlow(FlowMeta{QPS: 100}, tc.evs, win, nil, Options{})
			checkOutages(t, s.Outages, []wantOutage{tc.want})
			if !s.Affected {
				t.Error("an outage with no fault should still mark the flow affected")
			}
		})
	}
}

func TestMissingMerge(t *testing.T) {
	sec := time.Second
	for _, tc := range []struct {
		name string
		evs  []events.Event
		want []wantOutage
	}{
		{
			name: "short failures then silence",
			evs:  gen(100, 0, 5*sec, hole(4*sec, 5*sec, events.ClassRefused)),
			want: []wantOutage{{start: 4 * sec, end: 10 * sec, failures: 601,
				byClass: map[events.Class]int{events.ClassRefused: 100, ClassMissing: 501}, class: ClassMissing}},
		},
		{
			name: "long failures then silence",
			evs:  gen(100, 0, 8500*msec, hole(2*sec, 9*sec, events.ClassReset)),
			want: []wantOutage{{start: 2 * sec, end: 10 * sec, failures: 801,
				byClass: map[events.Class]int{events.ClassReset: 650, ClassMissing: 151}, class: events.ClassReset}},
		},
		{
			name: "silence then failures",
			evs: concat(gen(100, 0, 3*sec, nil),
				gen(100, 4*sec, 10*sec, hole(4*sec, 4500*msec, events.ClassRefused))),
			want: []wantOutage{{start: 2990 * msec, end: 4500 * msec, failures: 151,
				byClass: map[events.Class]int{events.ClassRefused: 50, ClassMissing: 101}, class: ClassMissing}},
		},
		{
			name: "silence inside a failure run",
			evs: concat(gen(100, 0, 3*sec, hole(2*sec, 3*sec, events.ClassTimeout)),
				gen(100, 5*sec, 10*sec, hole(5*sec, 6*sec, events.ClassTimeout))),
			want: []wantOutage{{start: 2 * sec, end: 6 * sec, failures: 401,
				byClass: map[events.Class]int{events.ClassTimeout: 200, ClassMissing: 201}, class: ClassMissing}},
		},
		{
			name: "silence between successes",
			evs:  concat(gen(100, 0, 3*sec, nil), gen(100, 4*sec, 10*sec, nil)),
			want: []wantOutage{{start: 2990 * msec, end: 4 * sec, failures: 101,
				byClass: map[events.Class]int{ClassMissing: 101}, class: ClassMissing}},
		},
		{
			name: "separate failure run and silence stay apart",
			evs: concat(gen(100, 0, 3*sec, hole(1*sec, 1500*msec, events.ClassReset)),
				gen(100, 4*sec, 10*sec, nil)),
			want: []wantOutage{
				{start: 1 * sec, end: 1500 * msec, failures: 50,
					byClass: map[events.Class]int{events.ClassReset: 50}, class: events.ClassReset},
				{start: 2990 * msec, end: 4 * sec, failures: 101,
					byClass: map[events.Class]int{ClassMissing: 101}, class: ClassMissing},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := AnalyzeFlow(FlowMeta{QPS: 100}, tc.evs, window(10*sec), nil, Options{})
			checkOutages(t, s.Outages, tc.want)
			var sum float64
			for _, w := range tc.want {
				sum += (w.end - w.start).Seconds()
			}
			if !approx(s.DisruptionSeconds, sum, 1e-9) {
				t.Errorf("disruption %v, want %v", s.DisruptionSeconds, sum)
			}
		})
	}
}

// without drops the requests whose start lies in [from, to).
func without(evs []events.Event, from, to time.Duration) []events.Event {
	return slices.DeleteFunc(slices.Clone(evs), func(e events.Event) bool {
		return e.Start >= ns(from) && e.Start < ns(to)
	})
}

func TestGapThreshold(t *testing.T) {
	sec := time.Second
	full := gen(100, 0, 10*sec, nil)
	for _, tc := range []struct {
		name   string
		qps    float64
		bucket time.Duration
		evs    []events.Event
		want   []wantOutage
	}{
		// 100 qps, 100ms buckets: threshold max(50ms, 300ms) = 300ms.
		{name: "gap of exactly the threshold is jitter", qps: 100,
			evs: without(full, 3*sec, 3290*msec)},
		{name: "gap just over the threshold is missing", qps: 100,
			evs: without(full, 3*sec, 3300*msec),
			want: []wantOutage{{start: 2990 * msec, end: 3300 * msec, failures: 31,
				byClass: map[events.Class]int{ClassMissing: 31}, class: ClassMissing}}},
		// A finer bucket lowers the threshold to 5 intervals = 50ms.
		{name: "fine bucket lowers the threshold", qps: 100, bucket: 10 * msec,
			evs: without(full, 3*sec, 3050*msec),
			want: []wantOutage{{start: 2990 * msec, end: 3050 * msec, failures: 6,
				byClass: map[events.Class]int{ClassMissing: 6}, class: ClassMissing}}},
		{name: "fine bucket, gap at threshold", qps: 100, bucket: 10 * msec,
			evs: without(full, 3*sec, 3040*msec)},
		// 1 qps: threshold 5s, so a 4s pause is still normal.
		{name: "low rate tolerates longer gaps", qps: 1,
			evs: without(gen(1, 0, 10*sec, nil), 3*sec, 6*sec)},
		{name: "qps 0 disables gap detection", qps: 0,
			evs: concat(gen(100, 0, 2*sec, nil), gen(100, 8*sec, 9*sec, nil))},
		{name: "late start within the edge allowance", qps: 100,
			evs: gen(100, 900*msec, 10*sec, nil)},
		{name: "late start beyond the edge allowance", qps: 100,
			evs: gen(100, 1500*msec, 10*sec, nil),
			want: []wantOutage{{start: 0, end: 1500 * msec, failures: 150,
				byClass: map[events.Class]int{ClassMissing: 150}, class: ClassMissing}}},
		{name: "early stop within the edge allowance", qps: 100,
			evs: gen(100, 0, 9100*msec, nil)},
		{name: "early stop beyond the edge allowance", qps: 100,
			evs: gen(100, 0, 9*sec, nil),
			want: []wantOutage{{start: 8990 * msec, end: 10 * sec, failures: 101,
				byClass: map[events.Class]int{ClassMissing: 101}, class: ClassMissing}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := AnalyzeFlow(FlowMeta{QPS: tc.qps}, tc.evs, window(10*sec), nil, Options{Bucket: tc.bucket})
			checkOutages(t, s.Outages, tc.want)
		})
	}
}

func TestTrailingFailureRun(t *testing.T) {
	sec := time.Second
	for _, tc := range []struct {
		name string
		qps  float64
		evs  []events.Event
		want wantOutage
	}{
		{
			// Last failure at 9.99s; the next request was due at 10s.
			name: "ends one interval after the last failure", qps: 100,
			evs: gen(100, 0, 10*sec, hole(9*sec, 10*sec, events.ClassRefused)),
			want: wantOutage{start: 9 * sec, end: 10 * sec, failures: 100,
				byClass: map[events.Class]int{events.ClassRefused: 100}, class: events.ClassRefused},
		},
		{
			// Meta says 1 qps but requests came every 500ms: the last
			// failure at 9.5s plus 1s would overrun the window.
			name: "capped at the window end", qps: 1,
			evs: gen(2, 0, 10*sec, hole(9500*msec, 10*sec, events.ClassUnreachable)),
			want: wantOutage{start: 9500 * msec, end: 10 * sec, failures: 1,
				byClass: map[events.Class]int{events.ClassUnreachable: 1}, class: events.ClassUnreachable},
		},
		{
			// Without a rate the best bound is when the last failure was seen.
			name: "qps 0 uses the last failure's latency", qps: 0,
			evs: gen(100, 0, 9*sec, hole(8*sec, 9*sec, events.ClassTimeout)),
			want: wantOutage{start: 8 * sec, end: 8990*msec + time.Second, failures: 100,
				byClass: map[events.Class]int{events.ClassTimeout: 100}, class: events.ClassTimeout},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := AnalyzeFlow(FlowMeta{QPS: tc.qps}, tc.evs, window(10*sec), nil, Options{})
			checkOutages(t, s.Outages, []wantOutage{tc.want})
		})
	}
}

func TestClassSplit(t *testing.T) {
	// seq builds a flow at 100 qps from a string: one request per letter.
	seq := func(s string) []events.Event {
		code := map[rune]events.Class{
			'.': events.ClassOK, 'R': events.ClassRefused, 'X': events.ClassReset, 'T': events.ClassTimeout,
			'U': events.ClassUnreachable, 'H': events.ClassHTTP, 'O': events.ClassOther,
		}
		var evs []events.Event
		for i, r := range s {
			evs = append(evs, events.Event{Start: ns(time.Duration(i) * 10 * msec), Class: code[r], Latency: int64(msec)})
		}
		return evs
	}
	for _, tc := range []struct {
		name string
		seq  string
		want []wantOutage
	}{
		{
			name: "dominant class wins",
			seq:  "..XTTRXTTXTR..",
			want: []wantOutage{{start: 20 * msec, end: 120 * msec, failures: 10,
				byClass: map[events.Class]int{events.ClassReset: 3, events.ClassTimeout: 5, events.ClassRefused: 2},
				class:   events.ClassTimeout}},
		},
		{
			name: "tie goes to the earlier class",
			seq:  ".TXTX.",
			want: []wantOutage{{start: 10 * msec, end: 50 * msec, failures: 4,
				byClass: map[events.Class]int{events.ClassReset: 2, events.ClassTimeout: 2}, class: events.ClassReset}},
		},
		{
			name: "tie between http and refused",
			seq:  ".HRRH.",
			want: []wantOutage{{start: 10 * msec, end: 50 * msec, failures: 4,
				byClass: map[events.Class]int{events.ClassHTTP: 2, events.ClassRefused: 2}, class: events.ClassRefused}},
		},
		{
			name: "one success splits runs",
			seq:  ".UU.OO.H.",
			want: []wantOutage{
				{start: 10 * msec, end: 30 * msec, failures: 2, byClass: map[events.Class]int{events.ClassUnreachable: 2}, class: events.ClassUnreachable},
				{start: 40 * msec, end: 60 * msec, failures: 2, byClass: map[events.Class]int{events.ClassOther: 2}, class: events.ClassOther},
				{start: 70 * msec, end: 80 * msec, failures: 1, byClass: map[events.Class]int{events.ClassHTTP: 1}, class: events.ClassHTTP},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := seq(tc.seq)
			win := Window{Start: t0, End: at(time.Duration(len(evs)) * 10 * msec)}
			s := AnalyzeFlow(FlowMeta{QPS: 100}, evs, win, nil, Options{})
			checkOutages(t, s.Outages, tc.want)
			flowByClass := map[events.Class]int{}
			failed := 0
			for _, w := range tc.want {
				for c, n := range w.byClass {
					flowByClass[c] += n
					failed += n
				}
			}
			if !sameCounts(s.ByClass, flowByClass) || s.Failed != failed || s.OK != len(evs)-failed {
				t.Errorf("flow byClass %v failed %d ok %d, want %v %d %d", s.ByClass, s.Failed, s.OK, flowByClass, failed, len(evs)-failed)
			}
		})
	}
}

func TestMergeTieWithMissing(t *testing.T) {
	var a, b span
	a.start, a.end = 0, 10
	a.counts[classIndex(events.ClassTimeout)] = 5
	b.start, b.end = 10, 20
	b.counts[classIndex(ClassMissing)] = 5
	got := merge([]span{b, a})
	if len(got) != 1 || got[0].Class != events.ClassTimeout || got[0].Failures != 10 ||
		got[0].Start.UnixNano() != 0 || got[0].End.UnixNano() != 20 {
		t.Errorf("merge = %+v, want one [0,20] timeout outage of 10", got)
	}
}

func TestClassOrderFitsSpan(t *testing.T) {
	if len(classOrder) != len(span{}.counts) {
		t.Fatalf("span counts %d classes, classOrder has %d", len(span{}.counts), len(classOrder))
	}
	for _, c := range classOrder {
		if classOrder[classIndex(c)] != c {
			t.Errorf("classIndex(%q) is wrong", c)
		}
	}
}

func TestUnsortedInput(t *testing.T) {
	sec := time.Second
	sorted := concat(gen(100, 0, 4*sec, hole(2*sec, 2500*msec, events.ClassReset)),
		gen(100, 6*sec, 10*sec, hole(7*sec, 7300*msec, events.ClassTimeout)))
	shuffled := slices.Clone(sorted)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	})
	before := slices.Clone(shuffled)
	fault := &Fault{Inject: at(2 * sec), Recover: at(3 * sec)}
	want := AnalyzeFlow(FlowMeta{QPS: 100}, sorted, window(10*sec), fault, Options{})
	got := AnalyzeFlow(FlowMeta{QPS: 100}, shuffled, window(10*sec), fault, Options{})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("shuffled input measured differently:\n got %+v\nwant %+v", got.Outages, want.Outages)
	}
	if !slices.Equal(shuffled, before) {
		t.Error("AnalyzeFlow reordered the caller's events")
	}
	checkOutages(t, got.Outages, []wantOutage{
		{start: 2 * sec, end: 2500 * msec, failures: 50, byClass: map[events.Class]int{events.ClassReset: 50}, class: events.ClassReset},
		{start: 3990 * msec, end: 6 * sec, failures: 201, byClass: map[events.Class]int{ClassMissing: 201}, class: ClassMissing},
		{start: 7 * sec, end: 7300 * msec, failures: 30, byClass: map[events.Class]int{events.ClassTimeout: 30}, class: events.ClassTimeout},
	})
}

func TestOutsideWindowIgnored(t *testing.T) {
	sec := time.Second
	// Load runs from -2s to 12s but the window is [0, 10s): start-up and
	// tear-down failures outside it must not count.
	evs := gen(100, -2*sec, 12*sec, func(off time.Duration) events.Class {
		if off < 0 || off >= 10*sec {
			return events.ClassRefused
		}
		return events.ClassOK
	})
	s := AnalyzeFlow(FlowMeta{QPS: 100}, evs, window(10*sec), nil, Options{})
	if s.Requests != 1000 || s.Failed != 0 || len(s.Outages) != 0 {
		t.Errorf("requests %d failed %d outages %v, want 1000, 0, none", s.Requests, s.Failed, s.Outages)
	}
	if len(s.Timeline) != 100 {
		t.Errorf("timeline has %d buckets, want 100", len(s.Timeline))
	}
}
