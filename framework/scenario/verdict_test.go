package scenario

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// failing is an outage of n failures from..to after t0.
func failing(from, to time.Duration, n int) measure.OutageInterval {
	o := outage(from, to, events.ClassReset)
	o.Failures = n
	return o
}

func TestComputeVerdict(t *testing.T) {
	p, err := makePlan(mustLookup(t, "node-crash"), 450)
	if err != nil {
		t.Fatal(err)
	}
	fault := &measure.Fault{Name: FaultNodeCrash, Inject: at(3 * time.Second), Recover: at(8 * time.Second)}
	in := verdictInput{faultNodes: []string{"node-3"}, fault: fault, windowEnd: at(14 * time.Second), bucket: 100 * time.Millisecond}
	hit := func(ids map[string]measure.OutageInterval) []measure.FlowSummary {
		m := map[string]flowOutcome{}
		for id, o := range ids {
			m[id] = flowOutcome{affected: true, outages: []measure.OutageInterval{o}}
		}
		return summaries(p, m)
	}
	big := failing(3*time.Second, 6*time.Second, 30)
	for _, tc := range []struct {
		name       string
		in         verdictInput
		sums       []measure.FlowSummary
		want       string
		wantBeyond []string
		wantIso    []string
	}{
		{name: "nothing affected", in: in, sums: hit(nil), want: VerdictNoImpact},
		{name: "control plane, nothing affected", in: func() verdictInput { c := in; c.controlPlane = true; return c }(),
			sums: hit(nil), want: VerdictNoDataPlaneImpact},
		{name: "flows of the faulted node only", in: in,
			sums: hit(map[string]measure.OutageInterval{"n1-to-n3.pod.http-newconn": big, "n3-to-n2.svc.http-keepalive": big}), want: VerdictContained},
		{name: "a flow between other nodes", in: in,
			sums: hit(map[string]measure.OutageInterval{"n1-to-n3.pod.http-newconn": big, "n1-to-n2.pod.http-newconn": big}),
			want: VerdictClusterWide, wantBeyond: []string{"n1-to-n2.pod.http-newconn"}},
		{name: "one isolated failure elsewhere is not an impact", in: in,
			sums: hit(map[string]measure.OutageInterval{"n1-to-n3.pod.http-newconn": big, "n1-to-n2.pod.http-newconn": failing(4*time.Second, 4100*time.Millisecond, 1)}),
			want: VerdictContained, wantIso: []string{"n1-to-n2.pod.http-newconn"}},
		{name: "outage long after recovery is not the fault's", in: in,
			sums: hit(map[string]measure.OutageInterval{"n1-to-n2.pod.http-newconn": failing(12*time.Second, 13*time.Second, 10)}), want: VerdictNoImpact},
		{name: "a traversed waypoint on the faulted node", in: func() verdictInput {
			c := in
			c.extraNodes = map[string][]string{"n1-to-n2.svc.http-keepalive": {"node-3"}}
			return c
		}(), sums: hit(map[string]measure.OutageInterval{"n1-to-n2.svc.http-keepalive": big}), want: VerdictContained},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := computeVerdict(tc.in, tc.sums)
			if v.Value != tc.want || !reflect.DeepEqual(v.Beyond, tc.wantBeyond) || !reflect.DeepEqual(v.Isolated, tc.wantIso) {
				t.Errorf("verdict %s beyond %v isolated %v, want %s beyond %v isolated %v", v.Value, v.Beyond, v.Isolated, tc.want, tc.wantBeyond, tc.wantIso)
			}
			if v.Total != len(tc.sums) {
				t.Errorf("total %d, want %d", v.Total, len(tc.sums))
			}
		})
	}
}

func TestStats(t *testing.T) {
	st := stats([]float64{1, 2, 3, 4, 5})
	// mean 3, sd sqrt(2.5), t(4) = 2.776: half-width 2.776*1.5811/sqrt(5) = 1.963
	// Given out of order: the worst is the largest, not the last.
	if worst := stats([]float64{4, 9, 1}); worst.Max != 9 {
		t.Errorf("worst of 4, 9, 1: %v", worst.Max)
	}
	if st.N != 5 || st.Mean != 3 || st.P95 != 5 || st.Max != 5 || math.Abs(st.CILow-1.037) > 0.001 || math.Abs(st.CIHigh-4.963) > 0.001 {
		t.Errorf("stats = %+v", st)
	}
	if one := stats([]float64{7}); one.Mean != 7 || one.CILow != 7 || one.CIHigh != 7 || one.P95 != 7 {
		t.Errorf("one trial: %+v", one)
	}
	if none := stats(nil); none.N != 0 {
		t.Errorf("no trial: %+v", none)
	}
}

func TestMatrixAggregates(t *testing.T) {
	tr := func(sc, mode, status, verdict string, disruption float64) *results.Trial {
		t := &results.Trial{Scenario: sc, Mode: mode, Status: status}
		if verdict != "" {
			t.Verdict = &results.Verdict{Value: verdict, Total: 28, Affected: 5, DisruptionSeconds: disruption, FailedRequests: 10}
		}
		if status == results.StatusSkipped {
			t.Error = "needs ambient"
		}
		return t
	}
	cells := Matrix([]*results.Trial{
		tr("node-proxy-crash", "none", results.StatusSkipped, "", 0),
		tr("node-proxy-crash", "ambient", results.StatusDone, VerdictContained, 2),
		tr("node-proxy-crash", "ambient", results.StatusDone, VerdictClusterWide, 4),
		tr("node-proxy-crash", "ambient", results.StatusError, "", 0),
	})
	if len(cells) != 2 {
		t.Fatalf("%d cells, want 2: %+v", len(cells), cells)
	}
	if c := cells[0]; c.Mode != "none" || c.Skipped != "needs ambient" || c.Trials != 0 {
		t.Errorf("none cell = %+v", c)
	}
	c := cells[1]
	if c.Trials != 2 || c.Errors != 1 || c.Verdict != VerdictClusterWide || c.Verdicts[VerdictContained] != 1 || c.DisruptionSeconds.Mean != 3 {
		t.Errorf("ambient cell = %+v", c)
	}
}

// A lone failed request between other nodes is tolerated by the radius
// check (and named), two are not.
func TestRadiusIsolatedFailure(t *testing.T) {
	p, err := makePlan(mustLookup(t, "node-crash"), 450)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		failures int
		pass     bool
	}{{1, true}, {2, false}} {
		m := touching(p, 3)
		m["n1-to-n2.pod.http-newconn"] = flowOutcome{affected: true, outages: []measure.OutageInterval{failing(6*time.Second, 6100*time.Millisecond, tc.failures)}}
		got := radius(summaries(p, m), "node-3", "x", func(measure.FlowSummary) bool { return true })
		if got[1].Pass != tc.pass || !strings.Contains(got[1].Detail, "n1-to-n2.pod.http-newconn") {
			t.Errorf("%d failure(s): %+v, want pass=%v naming the flow", tc.failures, got[1], tc.pass)
		}
	}
}

// A lone timeout before expiry is not "failing before expiry"; a real
// outage before it is.
func TestExpiryIgnoresIsolatedFailure(t *testing.T) {
	exp := at(12 * time.Second)
	tr := &results.Trial{CertExpiries: map[string]time.Time{
		"spiffe://td/ns/default/sa/client-n1": exp, "spiffe://td/ns/default/sa/server-n2": exp}}
	flow := func(early measure.OutageInterval) []measure.FlowSummary {
		return []measure.FlowSummary{{Flow: measure.FlowMeta{ID: "n1-to-n2.pod.http-newconn", Client: "client-n1", Server: "server-n2", Profile: ProfileNewConn},
			Outages: []measure.OutageInterval{early, failing(12*time.Second, 15*time.Second, 100)}}}
	}
	if got := expiry(tr, flow(failing(5*time.Second, 5100*time.Millisecond, 1))); !got[0].Pass || !got[1].Pass {
		t.Errorf("lone failure before expiry: %+v", got)
	}
	if got := expiry(tr, flow(failing(5*time.Second, 6*time.Second, 10))); got[0].Pass {
		t.Errorf("outage before expiry passed: %+v", got)
	}
}

// The server's certificate expiring first need not stop new connections:
// the client proxy's pooled connection to the server's proxy was verified
// at its handshake. The client's own expiry is the latest a new connection
// may still succeed.
func TestExpiryLateBoundIsTheClientsCertificate(t *testing.T) {
	tr := &results.Trial{CertExpiries: map[string]time.Time{
		"spiffe://td/ns/default/sa/client-n2": at(12 * time.Second), "spiffe://td/ns/default/sa/server-n1": at(10 * time.Second)}}
	flow := func(from time.Duration) []measure.FlowSummary {
		return []measure.FlowSummary{{Flow: measure.FlowMeta{ID: "n2-to-n1.pod.http-newconn", Client: "client-n2", Server: "server-n1", Profile: ProfileNewConn},
			Outages: []measure.OutageInterval{failing(from, 15*time.Second, 100)}}}
	}
	for _, tc := range []struct {
		from      time.Duration
		early, ok bool
	}{
		{10 * time.Second, false, true},         // at the server's expiry: a fresh handshake failed
		{12 * time.Second, false, true},         // at the client's: the pooled connection kept working until then
		{14 * time.Second, false, false},        // 2 s after the client's: late
		{9 * time.Second, true, true},           // before either: early
		{12500 * time.Millisecond, false, true}, // within the tolerance
	} {
		got := expiry(tr, flow(tc.from))
		if got[0].Pass == tc.early || got[1].Pass != tc.ok {
			t.Errorf("failing from %s: early-check pass=%v, late-check pass=%v (%+v)", tc.from, got[0].Pass, got[1].Pass, got)
		}
	}
}
