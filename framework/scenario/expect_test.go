package scenario

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// t0 is the start of load in every synthetic trial.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func ptrTime(t time.Time) *time.Time { return &t }

// outage is one synthetic outage interval from..to after t0.
func outage(from, to time.Duration, c events.Class) measure.OutageInterval {
	o := measure.OutageInterval{Start: at(from), End: at(to), Seconds: (to - from).Seconds(), Failures: 5,
		ByClass: map[events.Class]int{c: 5}, Class: c}
	if c != measure.ClassSlow {
		// Its requests failed to the end.
		lf := at(to - time.Millisecond)
		o.LastFailed = &lf
	}
	return o
}

// summaries turns a plan into flow summaries the way the runner would, with
// each flow's outcome decided by mark (flow ID -> affected, outages).
func summaries(p plan, mark map[string]flowOutcome) []measure.FlowSummary {
	var out []measure.FlowSummary
	for _, f := range p.Flows {
		s := measure.FlowSummary{Flow: measure.FlowMeta{
			ID: f.ID, Client: f.Client, ClientNode: nodeName(f.ClientNode), Server: f.Server, ServerNode: nodeName(f.ServerNode),
			Via: f.Kind.Via, Profile: f.Kind.Profile, QPS: f.QPS, Control: f.Control,
		}}
		if m, ok := mark[f.ID]; ok {
			s.Affected, s.Outages = m.affected, m.outages
			for _, o := range m.outages {
				s.DisruptionSeconds += o.Seconds
			}
		}
		out = append(out, s)
	}
	return out
}

type flowOutcome struct {
	affected bool
	outages  []measure.OutageInterval
}

// touching marks every flow with an end on node as affected by one outage
// from 5s to 13s.
func touching(p plan, node int) map[string]flowOutcome {
	m := map[string]flowOutcome{}
	for _, f := range p.Flows {
		if f.ClientNode == node || f.ServerNode == node {
			m[f.ID] = flowOutcome{affected: true, outages: []measure.OutageInterval{outage(5*time.Second, 13*time.Second, events.ClassTimeout)}}
		}
	}
	return m
}

func TestCheckNodeRadius(t *testing.T) {
	sc, err := Lookup("node-crash")
	if err != nil {
		t.Fatal(err)
	}
	p, err := makePlan(sc, 600)
	if err != nil {
		t.Fatal(err)
	}
	const (
		allName   = "every flow to or from node-3 disrupted"
		otherName = "no flow between other nodes disrupted"
		ctlName   = "control flow undisturbed"
	)
	pass := func(name string) results.ExpectationResult { return results.ExpectationResult{Name: name, Pass: true} }
	fail := func(name, detail string) results.ExpectationResult {
		return results.ExpectationResult{Name: name, Detail: detail}
	}
	for _, tc := range []struct {
		name   string
		modify func(m map[string]flowOutcome)
		want   []results.ExpectationResult
	}{
		{
			name:   "exactly the flows touching node-3 are affected",
			modify: func(map[string]flowOutcome) {},
			want:   []results.ExpectationResult{pass(allName), pass(otherName), pass(ctlName)},
		},
		{
			name: "a flow between node-1 and node-2 has an outage",
			modify: func(m map[string]flowOutcome) {
				m["n1-to-n2.pod.http-newconn"] = flowOutcome{affected: true, outages: []measure.OutageInterval{outage(6*time.Second, 7500*time.Millisecond, events.ClassRefused)}}
			},
			want: []results.ExpectationResult{pass(allName), fail(otherName, "n1-to-n2.pod.http-newconn (1.500s)"), pass(ctlName)},
		},
		{
			name: "an outage outside the fault period still counts between other nodes",
			modify: func(m map[string]flowOutcome) {
				m["n2-to-n2.svc.http-keepalive"] = flowOutcome{affected: false, outages: []measure.OutageInterval{outage(time.Second, 1250*time.Millisecond, events.ClassReset)}}
			},
			want: []results.ExpectationResult{pass(allName), fail(otherName, "n2-to-n2.svc.http-keepalive (0.250s)"), pass(ctlName)},
		},
		{
			name:   "a flow from node-3 is unaffected",
			modify: func(m map[string]flowOutcome) { delete(m, "n3-to-n1.pod.tcp-stream") },
			want:   []results.ExpectationResult{fail(allName, "n3-to-n1.pod.tcp-stream"), pass(otherName), pass(ctlName)},
		},
		{
			name: "a flow to node-3 has an outage, but not during the fault",
			modify: func(m map[string]flowOutcome) {
				m["n1-to-n3.svc.http-keepalive"] = flowOutcome{affected: false, outages: []measure.OutageInterval{outage(time.Second, 2*time.Second, events.ClassTimeout)}}
			},
			want: []results.ExpectationResult{fail(allName, "n1-to-n3.svc.http-keepalive"), pass(otherName), pass(ctlName)},
		},
		{
			name: "the control flow is disrupted",
			modify: func(m map[string]flowOutcome) {
				m["control.pod.http-keepalive"] = flowOutcome{affected: true, outages: []measure.OutageInterval{
					outage(6*time.Second, 6100*time.Millisecond, events.ClassTimeout), outage(8*time.Second, 8300*time.Millisecond, events.ClassTimeout)}}
			},
			want: []results.ExpectationResult{pass(allName), fail(otherName, "control.pod.http-keepalive (0.400s)"),
				fail(ctlName, "control.pod.http-keepalive: 2 outage(s), 0.400s")},
		},
		{
			name: "nothing affected: the list of misses is cut at five",
			modify: func(m map[string]flowOutcome) {
				for k := range m {
					delete(m, k)
				}
			},
			want: []results.ExpectationResult{
				fail(allName, "n1-to-n3.svc.http-keepalive, n1-to-n3.pod.http-newconn, n1-to-n3.pod.tcp-stream, "+
					"n2-to-n3.svc.http-keepalive, n2-to-n3.pod.http-newconn and 10 more"),
				pass(otherName), pass(ctlName)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := touching(p, 3)
			if len(m) != 15 {
				t.Fatalf("%d flows touch node-3, want 15", len(m))
			}
			tc.modify(m)
			got := check(sc, p, &results.Trial{}, summaries(p, m), 100*time.Millisecond)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("check =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestCheckNoOutage(t *testing.T) {
	sc, err := Lookup("baseline")
	if err != nil {
		t.Fatal(err)
	}
	p, err := makePlan(sc, 600)
	if err != nil {
		t.Fatal(err)
	}
	const name = "no outage on any flow"
	one := func(from, to time.Duration) flowOutcome {
		return flowOutcome{affected: true, outages: []measure.OutageInterval{outage(from, to, events.ClassTimeout)}}
	}
	for _, tc := range []struct {
		name string
		mark map[string]flowOutcome
		want results.ExpectationResult
	}{
		{name: "clean", want: results.ExpectationResult{Name: name, Pass: true}},
		{
			name: "one flow with an outage",
			mark: map[string]flowOutcome{"n2-to-n1.pod.http-newconn": one(time.Second, 1200*time.Millisecond)},
			want: results.ExpectationResult{Name: name, Detail: "n2-to-n1.pod.http-newconn (1 outages, 0.200s)"},
		},
		{
			// The control flow is one flow among all: no separate control result.
			name: "control flow with two outages",
			mark: map[string]flowOutcome{"control.pod.http-keepalive": {outages: []measure.OutageInterval{
				outage(time.Second, 1100*time.Millisecond, events.ClassReset), outage(2*time.Second, 2500*time.Millisecond, events.ClassReset)}}},
			want: results.ExpectationResult{Name: name, Detail: "control.pod.http-keepalive (2 outages, 0.600s)"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := check(sc, p, &results.Trial{}, summaries(p, tc.mark), 100*time.Millisecond)
			if want := []results.ExpectationResult{tc.want}; !reflect.DeepEqual(got, want) {
				t.Errorf("check = %+v, want %+v", got, want)
			}
		})
	}
}

func TestCheckPrecision(t *testing.T) {
	sc, err := Lookup("blackhole-precision")
	if err != nil {
		t.Fatal(err)
	}
	sc.Fault.Holes = []time.Duration{100 * time.Millisecond, 300 * time.Millisecond}
	p, err := makePlan(sc, 600)
	if err != nil {
		t.Fatal(err)
	}
	const flow = "n1-to-n2.pod.http-newconn"
	bucket := 100 * time.Millisecond
	hole := func(from, to time.Duration) results.FaultRecord {
		return results.FaultRecord{Kind: FaultBlackHole, Target: flow, Inject: at(from), Recover: ptrTime(at(to))}
	}
	bothHoles := []results.FaultRecord{hole(2*time.Second, 2100*time.Millisecond), hole(2800*time.Millisecond, 3100*time.Millisecond)}
	exact := []measure.OutageInterval{
		outage(2*time.Second, 2100*time.Millisecond, events.ClassTimeout),
		outage(2800*time.Millisecond, 3100*time.Millisecond, events.ClassTimeout),
	}
	const (
		holesName = "every black hole measured within one bucket (100ms)"
		strayName = "no outage outside the holes"
		ctlName   = "control flow undisturbed"
	)
	for _, tc := range []struct {
		name   string
		faults []results.FaultRecord
		mark   map[string]flowOutcome
		want   []results.ExpectationResult
	}{
		{
			name:   "both holes measured exactly",
			faults: bothHoles,
			mark:   map[string]flowOutcome{flow: {affected: true, outages: exact}},
			want: []results.ExpectationResult{
				{Name: holesName, Pass: true, Detail: "2/2 hole checks within; off: "},
				{Name: strayName, Pass: true},
				{Name: ctlName, Pass: true},
			},
		},
		{
			name:   "outages a little wider than the holes are still covered",
			faults: bothHoles,
			mark: map[string]flowOutcome{flow: {affected: true, outages: []measure.OutageInterval{
				outage(1950*time.Millisecond, 2120*time.Millisecond, events.ClassTimeout),
				outage(2780*time.Millisecond, 3150*time.Millisecond, events.ClassTimeout),
			}}},
			want: []results.ExpectationResult{
				{Name: holesName, Pass: true, Detail: "2/2 hole checks within; off: "},
				{Name: strayName, Pass: true},
				{Name: ctlName, Pass: true},
			},
		},
		{
			name:   "second hole measured twice as long",
			faults: bothHoles,
			mark: map[string]flowOutcome{flow: {affected: true, outages: []measure.OutageInterval{
				exact[0], outage(2700*time.Millisecond, 3300*time.Millisecond, events.ClassTimeout),
			}}},
			want: []results.ExpectationResult{
				{Name: holesName, Pass: false, Detail: "1/2 hole checks within; off: " + flow + " at 05:06:09.800: truth 0.300s measured 0.600s (start -0.100s, end +0.200s)"},
				{Name: strayName, Pass: false, Detail: flow + " at 05:06:09.700 (0.600s timeout)"},
				{Name: ctlName, Pass: true},
			},
		},
		{
			name:   "only one of two holes happened",
			faults: bothHoles[:1],
			mark:   map[string]flowOutcome{flow: {affected: true, outages: exact[:1]}},
			want: []results.ExpectationResult{
				{Name: holesName, Pass: false, Detail: "1/2 hole checks within; off: "},
				{Name: strayName, Pass: true},
				{Name: ctlName, Pass: true},
			},
		},
		{
			name:   "stray outages on the flow and on the control flow",
			faults: bothHoles,
			mark: map[string]flowOutcome{
				flow:                         {affected: true, outages: append(append([]measure.OutageInterval{}, exact...), outage(5*time.Second, 5200*time.Millisecond, events.ClassRefused))},
				"control.pod.http-keepalive": {outages: []measure.OutageInterval{outage(6*time.Second, 6500*time.Millisecond, events.ClassReset)}},
			},
			want: []results.ExpectationResult{
				{Name: holesName, Pass: true, Detail: "2/2 hole checks within; off: "},
				{Name: strayName, Pass: false, Detail: flow + " at 05:06:12.000 (0.200s refused), control.pod.http-keepalive at 05:06:13.000 (0.500s reset)"},
				{Name: ctlName, Pass: false, Detail: "control.pod.http-keepalive: 1 outage(s), 0.500s"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sums := summaries(p, tc.mark)
			tr := &results.Trial{Faults: tc.faults}
			tr.Precision = precision(tr.Faults, sums, bucket)
			got := check(sc, p, tr, sums, bucket)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("check =\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestPrecision(t *testing.T) {
	const flow = "n1-to-n2.pod.http-newconn"
	bucket := 100 * time.Millisecond
	hole := results.FaultRecord{Kind: FaultBlackHole, Target: flow, Inject: at(2 * time.Second), Recover: ptrTime(at(2300 * time.Millisecond))}
	sum := func(id string, outs ...measure.OutageInterval) measure.FlowSummary {
		return measure.FlowSummary{Flow: measure.FlowMeta{ID: id, Client: "client-n1"}, Outages: outs}
	}
	// check is the hole's check on flow with the given figures; start and
	// end are the edge errors, absent with nothing measured.
	check := func(flow string, measured, errS float64, within bool, edges ...float64) results.PrecisionCheck {
		pc := results.PrecisionCheck{Flow: flow, Hole: hole.Target, HoleStart: hole.Inject, TruthSeconds: 0.3,
			MeasuredSeconds: measured, ErrorSeconds: errS, Within: within}
		if len(edges) == 2 {
			pc.StartErrorSeconds, pc.EndErrorSeconds = ptr(edges[0]), ptr(edges[1])
		}
		return pc
	}
	for _, tc := range []struct {
		name   string
		faults []results.FaultRecord
		sums   []measure.FlowSummary
		want   []results.PrecisionCheck
	}{
		{
			name:   "exact",
			faults: []results.FaultRecord{hole},
			sums:   []measure.FlowSummary{sum(flow, outage(2*time.Second, 2300*time.Millisecond, events.ClassTimeout))},
			want:   []results.PrecisionCheck{check(flow, 0.3, 0, true, 0, 0)},
		},
		{
			name:   "long by 80ms: within one bucket",
			faults: []results.FaultRecord{hole},
			sums:   []measure.FlowSummary{sum(flow, outage(1950*time.Millisecond, 2330*time.Millisecond, events.ClassTimeout))},
			want:   []results.PrecisionCheck{check(flow, 0.38, 0.08, true, -0.05, 0.03)},
		},
		{
			name:   "short by 90ms: within one bucket",
			faults: []results.FaultRecord{hole},
			sums:   []measure.FlowSummary{sum(flow, outage(2050*time.Millisecond, 2260*time.Millisecond, events.ClassTimeout))},
			want:   []results.PrecisionCheck{check(flow, 0.21, -0.09, true, 0.05, -0.04)},
		},
		{
			name:   "long by 150ms: out",
			faults: []results.FaultRecord{hole},
			sums:   []measure.FlowSummary{sum(flow, outage(2*time.Second, 2450*time.Millisecond, events.ClassTimeout))},
			want:   []results.PrecisionCheck{check(flow, 0.45, 0.15, false, 0, 0.15)},
		},
		{
			name:   "right length, 150ms late: out",
			faults: []results.FaultRecord{hole},
			sums:   []measure.FlowSummary{sum(flow, outage(2150*time.Millisecond, 2450*time.Millisecond, events.ClassTimeout))},
			want:   []results.PrecisionCheck{check(flow, 0.3, 0, false, 0.15, 0.15)},
		},
		{
			name:   "starts on time, ends 150ms early: out",
			faults: []results.FaultRecord{hole},
			sums: []measure.FlowSummary{sum(flow,
				outage(2*time.Second, 2150*time.Millisecond, events.ClassTimeout))},
			want: []results.PrecisionCheck{check(flow, 0.15, -0.15, false, 0, -0.15)},
		},
		{
			name:   "not measured at all: out",
			faults: []results.FaultRecord{hole},
			sums:   []measure.FlowSummary{sum(flow)},
			want:   []results.PrecisionCheck{check(flow, 0, -0.3, false)},
		},
		{
			name:   "pieces overlapping the hole are summed, their union gives the edges",
			faults: []results.FaultRecord{hole},
			sums: []measure.FlowSummary{sum(flow,
				outage(2*time.Second, 2100*time.Millisecond, events.ClassTimeout),
				outage(2150*time.Millisecond, 2300*time.Millisecond, events.ClassTimeout))},
			want: []results.PrecisionCheck{check(flow, 0.25, -0.05, true, 0, 0)},
		},
		{
			name:   "outages far from the hole and on other flows are ignored",
			faults: []results.FaultRecord{hole},
			sums: []measure.FlowSummary{
				sum(flow, outage(time.Second, 1800*time.Millisecond, events.ClassTimeout),
					outage(2*time.Second, 2300*time.Millisecond, events.ClassTimeout),
					outage(2500*time.Millisecond, 3*time.Second, events.ClassTimeout)),
				sum("n1-to-n2.pod.tcp-stream", outage(2*time.Second, 2300*time.Millisecond, events.ClassTimeout)),
				sum("control.pod.http-keepalive", outage(2*time.Second, 2300*time.Millisecond, events.ClassTimeout)),
			},
			want: []results.PrecisionCheck{check(flow, 0.3, 0, true, 0, 0)},
		},
		{
			name: "unrecovered holes and other faults give no check",
			faults: []results.FaultRecord{
				{Kind: FaultBlackHole, Target: flow, Inject: at(time.Second)},
				{Kind: FaultNodeCrash, Target: "node-3", Inject: at(time.Second), Recover: ptrTime(at(2 * time.Second))},
			},
			sums: []measure.FlowSummary{sum(flow, outage(time.Second, 2*time.Second, events.ClassTimeout))},
			want: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := precision(tc.faults, tc.sums, bucket)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("precision =\n%s\nwant\n%s", fmtChecks(got), fmtChecks(tc.want))
			}
		})
	}
}

// TestPrecisionClientPod: a hole at a client pod gives one check per flow of
// that client, and none for other clients' flows or the control flow.
func TestPrecisionClientPod(t *testing.T) {
	hole := results.FaultRecord{Kind: FaultBlackHole, Target: "pod/client-n1", Inject: at(2 * time.Second), Recover: ptrTime(at(2100 * time.Millisecond))}
	flow := func(id, client string, control bool, outs ...measure.OutageInterval) measure.FlowSummary {
		return measure.FlowSummary{Flow: measure.FlowMeta{ID: id, Client: client, Control: control}, Outages: outs}
	}
	exact := outage(2*time.Second, 2100*time.Millisecond, events.ClassTimeout)
	got := precision([]results.FaultRecord{hole}, []measure.FlowSummary{
		flow("n1-to-n2.pod.http-newconn", "client-n1", false, exact),
		flow("n1-to-n2.pod.http-keepalive", "client-n1", false, outage(2*time.Second, 2400*time.Millisecond, events.ClassTimeout)),
		flow("n1-to-n2.pod.tcp-stream", "client-n1", false),
		flow("n2-to-n1.pod.http-newconn", "client-n2", false, exact),
		flow("control.pod.http-keepalive", "ctl-client", true, exact),
	}, 100*time.Millisecond)
	var ids []string
	within := map[string]bool{}
	for _, pc := range got {
		ids = append(ids, pc.Flow)
		within[pc.Flow] = pc.Within
		if pc.Hole != "pod/client-n1" || !pc.HoleStart.Equal(hole.Inject) {
			t.Errorf("%s: hole %q at %v, want pod/client-n1 at %v", pc.Flow, pc.Hole, pc.HoleStart, hole.Inject)
		}
	}
	if want := []string{"n1-to-n2.pod.http-newconn", "n1-to-n2.pod.http-keepalive", "n1-to-n2.pod.tcp-stream"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("checks on %v, want %v", ids, want)
	}
	if want := map[string]bool{"n1-to-n2.pod.http-newconn": true, "n1-to-n2.pod.http-keepalive": false, "n1-to-n2.pod.tcp-stream": false}; !reflect.DeepEqual(within, want) {
		t.Errorf("within = %v, want %v", within, want)
	}
}

// TestCheckPrecisionClientPod: every flow of the client must have a check
// per hole, and outages on those flows inside a hole are not stray.
func TestCheckPrecisionClientPod(t *testing.T) {
	sc := mustLookup(t, "blackhole-profiles")
	sc.Fault.Holes = sc.Fault.Holes[:2]
	p, err := makePlan(sc, 600)
	if err != nil {
		t.Fatal(err)
	}
	bucket := 100 * time.Millisecond
	holes := []results.FaultRecord{
		{Kind: FaultBlackHole, Target: "pod/client-n1", Inject: at(2 * time.Second), Recover: ptrTime(at(2100 * time.Millisecond))},
		{Kind: FaultBlackHole, Target: "pod/client-n1", Inject: at(3600 * time.Millisecond), Recover: ptrTime(at(3900 * time.Millisecond))},
	}
	exact := flowOutcome{affected: true, outages: []measure.OutageInterval{
		outage(2*time.Second, 2100*time.Millisecond, events.ClassTimeout),
		outage(3600*time.Millisecond, 3900*time.Millisecond, events.ClassTimeout),
	}}
	mark := map[string]flowOutcome{}
	for _, f := range p.Flows {
		if !f.Control {
			mark[f.ID] = exact
		}
	}
	sums := summaries(p, mark)
	tr := &results.Trial{Faults: holes}
	tr.Precision = precision(tr.Faults, sums, bucket)
	got := check(sc, p, tr, sums, bucket)
	if len(got) != 3 || !got[0].Pass || got[0].Detail != "6/6 hole checks within; off: " || !got[1].Pass || !got[2].Pass {
		t.Errorf("check = %+v, want 6/6 checks within, nothing stray, control undisturbed", got)
	}
	// One hole missing on every flow: 3 of the 6 checks are absent.
	tr = &results.Trial{Faults: holes[:1]}
	tr.Precision = precision(tr.Faults, summaries(p, map[string]flowOutcome{}), bucket)
	if got := check(sc, p, tr, sums, bucket); got[0].Pass || !strings.HasPrefix(got[0].Detail, "0/6 hole checks within") {
		t.Errorf("check = %+v, want 0/6 within", got[0])
	}
}

func fmtChecks(pcs []results.PrecisionCheck) string {
	var b strings.Builder
	for _, pc := range pcs {
		fmt.Fprintf(&b, "  %s %s", pc.Flow, describePrecision(pc))
		fmt.Fprintf(&b, " err %+.3f within=%v hole %s\n", pc.ErrorSeconds, pc.Within, pc.Hole)
	}
	return b.String()
}

func TestFmtList(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"a"}, "a"},
		{strings.Split("a b c", " "), "a, b, c"},
		{strings.Split("a b c d", " "), "a, b, c and 1 more"},
	} {
		if got := fmtList(tc.in, 3); got != tc.want {
			t.Errorf("fmtList(%v, 3) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestPrecisionWire: where the packet tap saw the client pod's connections
// with the flow's server come back after the hole closed, the flow's end may
// lie anywhere from the hole's end to the last of them: an outage that ends
// in that range is within, one that ends a bucket outside it is not, and
// later outages up to it are the hole's (BackoffUntil).
func TestPrecisionWire(t *testing.T) {
	bucket := 100 * time.Millisecond
	first, last := at(2400*time.Millisecond), at(2700*time.Millisecond) // 100 and 400 ms after a 300 ms hole
	stuckAt := at(2350 * time.Millisecond)
	hole := results.FaultRecord{Kind: FaultBlackHole, Target: "pod/client-n1", Inject: at(2 * time.Second), Recover: ptrTime(at(2300 * time.Millisecond)),
		Wire: []results.WireResume{
			{Peer: "server-n2", Resumed: &first, Last: &last, Until: at(3800 * time.Millisecond), Connections: 2},
			{Peer: "server-n3", Until: at(3800 * time.Millisecond), Connections: 1},
			{Peer: "server-n4", Resumed: &stuckAt, Last: &stuckAt, Until: at(3500 * time.Millisecond), Connections: 2, Stuck: 1},
		}}
	flow := func(id, server, via string, outs ...measure.OutageInterval) measure.FlowSummary {
		return measure.FlowSummary{Flow: measure.FlowMeta{ID: id, Client: "client-n1", Server: server, Via: via}, Outages: outs}
	}
	o := func(from, to int) measure.OutageInterval {
		return outage(time.Duration(from)*time.Millisecond, time.Duration(to)*time.Millisecond, events.ClassTimeout)
	}
	// Answered, late: requests that started once the path was back.
	slow := func(from, to int) measure.OutageInterval {
		x := o(from, to)
		x.Failures, x.Slow, x.Class, x.ByClass, x.LastFailed = 0, 5, measure.ClassSlow, map[events.Class]int{measure.ClassSlow: 5}, nil
		return x
	}
	// Failing until failedUntil, then answered late until to: the node
	// proxies working off what the hole queued in their tunnels.
	backlog := func(from, failedUntil, to int) measure.OutageInterval {
		x := o(from, to)
		lf := at(time.Duration(failedUntil) * time.Millisecond)
		x.LastFailed = &lf
		return x
	}
	for _, tc := range []struct {
		flow        measure.FlowSummary
		within      bool
		wired       bool
		backoff     time.Time
		wireEndErrS float64
	}{
		{flow("to-last", "server-n2", "pod", o(2000, 2700)), true, true, last.Add(bucket), 0},
		{flow("to-hole-end", "server-n2", "pod", o(2000, 2300)), true, true, last.Add(bucket), 0},
		{flow("in-pieces", "server-n2", "pod", o(2000, 2300), o(2550, 2700)), true, true, last.Add(bucket), 0},
		{flow("past-last", "server-n2", "pod", o(2000, 2950)), false, true, last.Add(bucket), 0.25},
		{flow("before-hole-end", "server-n2", "pod", o(2000, 2150)), false, true, last.Add(bucket), -0.15},
		{flow("late-start", "server-n2", "pod", o(2200, 2700)), false, true, last.Add(bucket), 0},
		{flow("service", "server-n2", "svc", o(2000, 2700)), false, false, time.Time{}, 0},
		{flow("no-resume-seen", "server-n3", "pod", o(2000, 2300)), true, false, time.Time{}, 0},
		{flow("stuck", "server-n4", "pod", o(2000, 2350)), true, true, stuckAt.Add(bucket), 0},
		// A burst of late answers to requests sent after the wire's last
		// return is not the hole's; failures that start then still are.
		{flow("slow-burst-after", "server-n2", "pod", o(2000, 2700), slow(2720, 2950)), true, true, last.Add(bucket), 0},
		{flow("failing-after", "server-n2", "pod", o(2000, 2700), o(2720, 2950)), false, true, last.Add(bucket), 0.25},
		{flow("slow-inside", "server-n2", "pod", o(2000, 2300), slow(2450, 2700)), true, true, last.Add(bucket), 0},
		// Late answers only, past the last return: the backlog, up to the
		// back-off window (the hole's end plus its length, a minimum RTO
		// and a bucket: 2.9 s).
		{flow("backlog", "server-n2", "pod", backlog(2000, 2690, 2850)), true, true, at(2850 * time.Millisecond), 0.15},
		{flow("backlog-failing", "server-n2", "pod", backlog(2000, 2840, 2850)), false, true, last.Add(bucket), 0.15},
		{flow("backlog-too-long", "server-n2", "pod", backlog(2000, 2690, 2950)), false, true, last.Add(bucket), 0.25},
	} {
		got := precision([]results.FaultRecord{hole}, []measure.FlowSummary{tc.flow}, bucket)
		if len(got) != 1 {
			t.Fatalf("%s: %d checks, want 1", tc.flow.Flow.ID, len(got))
		}
		pc := got[0]
		if pc.Within != tc.within {
			t.Errorf("%s: within %v, want %v (%+v)", pc.Flow, pc.Within, tc.within, pc)
		}
		if (pc.WireEnd != nil) != tc.wired {
			t.Errorf("%s: wire end %v, want one: %v", pc.Flow, pc.WireEnd, tc.wired)
			continue
		}
		if !tc.wired {
			continue
		}
		if pc.BackoffUntil == nil || !pc.BackoffUntil.Equal(tc.backoff) || pc.LateEndExplained == "" {
			t.Errorf("%s: backoff until %v, explained %q; want %v and a reason", pc.Flow, pc.BackoffUntil, pc.LateEndExplained, tc.backoff)
		}
		if pc.WireEndErrorSeconds == nil || *pc.WireEndErrorSeconds != tc.wireEndErrS {
			t.Errorf("%s: wire end error %v, want %v", pc.Flow, pc.WireEndErrorSeconds, tc.wireEndErrS)
		}
		if backlog := strings.HasPrefix(pc.Flow, "backlog") && pc.Within; backlog != (pc.BacklogSeconds != nil) {
			t.Errorf("%s: backlog %v", pc.Flow, pc.BacklogSeconds)
		}
	}
}
