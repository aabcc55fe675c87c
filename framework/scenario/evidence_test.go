package scenario

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/evidence"
)

// An ambient trial's evidence folder, as the runner leaves it: a namespace
// source per pod, a proxy source per node proxy and waypoint. Each source
// counted its own name's length in retransmissions between t0 and t0+1s, so
// the sum tells which sources an interval picked.
func writeTrialEvidence(t *testing.T, sources []evidence.Source) string {
	t.Helper()
	trial := t.TempDir()
	dir := filepath.Join(trial, EvidenceDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(evidence.Manifest{IntervalMs: 100, ScrapeTimeoutMs: 50, Sources: sources})
	if err := os.WriteFile(filepath.Join(dir, evidence.ManifestFile), m, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range sources {
		key := "TcpRetransSegs"
		if s.Kind == evidence.KindMetrics {
			key = "hbone_connections_total{direction=outbound}"
		}
		lines := fmt.Sprintf("{\"t\":%d,\"c\":{%q:0}}\n{\"t\":%d,\"c\":{%q:%d}}\n",
			t0.UnixNano(), key, t0.Add(time.Second).UnixNano(), key, len(s.Name))
		if err := os.WriteFile(filepath.Join(dir, s.Name+".jsonl"), []byte(lines), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return trial
}

func TestIntervalEvidenceSources(t *testing.T) {
	ns := func(pod, node, role string) evidence.Source {
		return evidence.Source{Name: NetnsSourcePrefix + pod, Kind: evidence.KindNetns, Pod: pod, Node: node, Role: role}
	}
	px := func(pod, node, role string) evidence.Source {
		return evidence.Source{Name: ProxySourcePrefix + pod, Kind: evidence.KindMetrics, Pod: pod, Node: node, Role: role}
	}
	trial := writeTrialEvidence(t, []evidence.Source{
		ns("client-n1", "node-1", "client"), ns("server-n2", "node-2", "server"), ns("server-n1", "node-1", "server"),
		ns("ztunnel-n1", "node-1", "node-proxy"), ns("ztunnel-n2", "node-2", "node-proxy"), ns("ztunnel-n3", "node-3", "node-proxy"),
		ns("waypoint-0", "node-1", "waypoint"), ns("controlplane", "node-1", "control-plane"),
		px("ztunnel-n1", "node-1", "node-proxy"), px("ztunnel-n2", "node-2", "node-proxy"), px("ztunnel-n3", "node-3", "node-proxy"),
		px("waypoint-0", "node-1", "waypoint"),
	})
	ev := openTrialEvidence(trial).interval(t0, t0.Add(time.Second), []string{"client-n1", "server-n2"}, []string{"node-1", "node-2"})
	if ev == nil {
		t.Fatal("no evidence")
	}
	got := append([]string(nil), ev.Sources...)
	sort.Strings(got)
	// The flow's pods and the node proxies of its nodes (their metrics and
	// their namespaces); not the other pods of those nodes, not the
	// waypoint or the control plane that happen to run there, not node-3.
	want := []string{"netns.client-n1", "netns.server-n2", "netns.ztunnel-n1", "netns.ztunnel-n2", "proxy.ztunnel-n1", "proxy.ztunnel-n2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("sources %v\nwant    %v", got, want)
	}
	if n := int64(len("netns.client-n1") + len("netns.server-n2") + len("netns.ztunnel-n1") + len("netns.ztunnel-n2")); ev.TCPRetransSegs != n {
		t.Errorf("tcpRetransSegs = %d, want %d", ev.TCPRetransSegs, n)
	}
	if n := int64(2 * len("proxy.ztunnel-n1")); ev.HBONEConnectionsOpened["outbound"] != n {
		t.Errorf("outbound HBONE connections = %v, want %d", ev.HBONEConnectionsOpened, n)
	}

	// Sidecar mode: the proxy lives in the application pod and comes with it.
	trial = writeTrialEvidence(t, []evidence.Source{
		ns("client-n1", "node-1", "client"), ns("server-n2", "node-2", "server"),
		px("client-n1", "node-1", "sidecar"), px("server-n2", "node-2", "sidecar"), px("server-n1", "node-1", "sidecar"),
	})
	ev = openTrialEvidence(trial).interval(t0, t0.Add(time.Second), []string{"client-n1"}, []string{"node-1", "node-2"})
	if ev == nil || !reflect.DeepEqual(ev.Sources, []string{"netns.client-n1", "proxy.client-n1"}) {
		t.Fatalf("sidecar sources: %+v", ev)
	}

	if ev := openTrialEvidence(t.TempDir()).interval(t0, t0.Add(time.Second), []string{"client-n1"}, nil); ev != nil {
		t.Fatalf("a trial without evidence gave %+v", ev)
	}
}
