package scenario

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/evidence"
	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/framework/results"
)

// An outage that ends after its hole is the hole's when the client was
// still retransmitting: explained, within if no longer than the back-off
// allows; without retransmissions, or past that, it stays off.
func TestExplainLateEnds(t *testing.T) {
	bucket := 100 * time.Millisecond
	t0 := time.Unix(2000, 0)
	hole := results.FaultRecord{Kind: FaultBlackHole, Target: "pod/client-n1", Inject: t0, Recover: ptr(t0.Add(time.Second))}
	for _, tc := range []struct {
		name        string
		late        time.Duration // outage end after the hole's end
		retransmits string        // whose RetransSegs grows after the hole: "client", "server" or ""
		within      bool
		explained   bool
	}{
		{"backed-off connection, client retransmitting", 400 * time.Millisecond, "client", true, true},
		{"backed-off connection, server retransmitting its answers", 400 * time.Millisecond, "server", true, true},
		{"the node proxy re-dials its pooled tunnel", 200 * time.Millisecond, "proxy", true, true},
		{"late with nothing on the wire", 400 * time.Millisecond, "", false, false},
		{"later than any back-off", 1400 * time.Millisecond, "client", false, true},
		{"a retransmission timeout lost in the hole, nothing after", 300 * time.Millisecond, "timeout", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ev := filepath.Join(dir, EvidenceDir)
			if err := os.MkdirAll(ev, 0o755); err != nil {
				t.Fatal(err)
			}
			manifest := `{"intervalMs":100,"scrapeTimeoutMs":50,"sources":[` +
				`{"name":"netns.client-n1","kind":"netns","pod":"client-n1","node":"node-1","role":"client"},` +
				`{"name":"netns.server-n2","kind":"netns","pod":"server-n2","node":"node-2","role":"server"},` +
				`{"name":"proxy.ztunnel-n1","kind":"metrics","pod":"ztunnel-n1","node":"node-1","role":"node-proxy"}]}`
			if err := os.WriteFile(filepath.Join(ev, evidence.ManifestFile), []byte(manifest), 0o644); err != nil {
				t.Fatal(err)
			}
			// Every 100 ms: retransmissions during the hole, and after it
			// only on the side whose connection is still backing off.
			var opened []string
			for at, n := t0.Add(-time.Second), 1; at.Before(t0.Add(4 * time.Second)); at = at.Add(100 * time.Millisecond) {
				if tc.retransmits == "proxy" && at.Equal(hole.Recover.Add(tc.late)) {
					n++ // a new HBONE connection the moment the flow came back
				}
				opened = append(opened, fmt.Sprintf(`{"t":%d,"c":{"hbone_connections_total{direction=outbound}":%d}}`, at.UnixNano(), n))
			}
			if err := os.WriteFile(filepath.Join(ev, "proxy.ztunnel-n1.jsonl"), []byte(strings.Join(opened, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, side := range []string{"client", "server"} {
				var lines []string
				retrans := 0
				for at := t0.Add(-time.Second); at.Before(t0.Add(4 * time.Second)); at = at.Add(100 * time.Millisecond) {
					inHole := !at.Before(t0) && at.Before(*hole.Recover)
					after := !at.Before(*hole.Recover) && at.Before(hole.Recover.Add(tc.late))
					if (inHole && side == "client") || (after && tc.retransmits == side) {
						retrans++
					}
					timeouts := 0
					if tc.retransmits == "timeout" && side == "server" && !at.Before(t0.Add(500*time.Millisecond)) {
						timeouts = 1 // an RTO fired mid-hole; its retransmission was lost
					}
					lines = append(lines, fmt.Sprintf(`{"t":%d,"c":{"TcpRetransSegs":%d,"TcpExtTCPTimeouts":%d,"TcpInSegs":%d}}`,
						at.UnixNano(), retrans+timeouts, timeouts, at.Sub(t0).Milliseconds()+1000))
				}
				name := map[string]string{"client": "netns.client-n1.jsonl", "server": "netns.server-n2.jsonl"}[side]
				if err := os.WriteFile(filepath.Join(ev, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			sums := []measure.FlowSummary{{
				Flow:    measure.FlowMeta{ID: "n1-to-n2.pod.http-keepalive", Client: "client-n1", ClientNode: "node-1", Server: "server-n2", ServerNode: "node-2"},
				Outages: []measure.OutageInterval{{Start: t0.Add(5 * time.Millisecond), End: hole.Recover.Add(tc.late), Seconds: (time.Second + tc.late).Seconds()}},
			}}
			faults := []results.FaultRecord{hole}
			pcs := precision(faults, sums, bucket)
			if len(pcs) != 1 || pcs[0].Within {
				t.Fatalf("before explaining: %+v, want one check off by its late end", pcs)
			}
			explainLateEnds(pcs, faults, sums, openTrialEvidence(dir), bucket)
			pc := pcs[0]
			if (pc.LateEndExplained != "") != tc.explained || pc.Within != tc.within {
				t.Errorf("explained %q within %v; want explained %v within %v", pc.LateEndExplained, pc.Within, tc.explained, tc.within)
			}
			if tc.explained && !strings.Contains(pc.LateEndExplained, "at client-n1 and server-n2") {
				t.Errorf("explanation %q", pc.LateEndExplained)
			}
		})
	}
}
