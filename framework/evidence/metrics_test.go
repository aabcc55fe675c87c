package evidence

import (
	"blastradius.dev/blastradius/internal/promtext"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/hbone"
	"blastradius.dev/blastradius/proxy/node"
)

// fakeProxy serves /metrics exactly as proxy/node's admin handler composes
// it: the proxy's own counters, both HBONE directions, then a gauge.
type fakeProxy struct {
	mu       sync.Mutex
	own      *node.Metrics
	in, out  *hbone.Metrics
	stall    atomic.Bool // hold every answer past any scrape timeout
	requests atomic.Int64
}

func newFakeProxy() *fakeProxy {
	return &fakeProxy{own: new(node.Metrics), in: new(hbone.Metrics), out: new(hbone.Metrics)}
}

// restart replaces every counter with fresh ones, as a new process has.
func (p *fakeProxy) restart() {
	p.mu.Lock()
	p.own, p.in, p.out = new(node.Metrics), new(hbone.Metrics), new(hbone.Metrics)
	p.mu.Unlock()
}

func (p *fakeProxy) write(w io.Writer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	labels := promtext.L("node", "node-1", "mode", "node")
	dir := func(d string) []promtext.Label {
		return promtext.With(labels, promtext.Label{Name: "direction", Value: d})
	}
	fams := append(p.own.Families(labels), hbone.Families(hbone.LabeledMetrics{Labels: dir("inbound"), Metrics: p.in},
		hbone.LabeledMetrics{Labels: dir("outbound"), Metrics: p.out})...)
	_ = promtext.Write(w, append(fams, promtext.Gauge("go_goroutines", "Number of goroutines that currently exist.").Add(42))...)
}

func (p *fakeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if p.stall.Load() {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	p.write(w)
}

func TestParseMetricsProxyOutput(t *testing.T) {
	p := newFakeProxy()
	p.out.ConnectionsOpened.Add(3)
	p.out.ConnectionsClosed.Add(1)
	p.out.StreamsOpened.Add(40)
	p.out.Fail(hbone.FailDial)
	p.out.Fail(hbone.FailDial)
	p.in.ConnectionsOpened.Add(2)
	p.in.Fail(hbone.FailTLSHandshake)
	p.own.OutboundOpened.Add(41)
	p.own.Fail("no_route")
	p.own.Route("hbone")
	var buf bytes.Buffer
	p.write(&buf)

	got, err := ParseMetrics(&buf)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"hbone_connections_total{direction=outbound}":                  3,
		"hbone_connections_total{direction=inbound}":                   2,
		"hbone_connections_closed_total{direction=outbound}":           1,
		"hbone_streams_total{direction=outbound}":                      40,
		"hbone_failures_total{direction=outbound,reason=dial_failed}":  2,
		"hbone_failures_total{direction=inbound,reason=tls_handshake}": 1,
		"proxy_connections_opened_total{direction=outbound}":           41,
		"proxy_failures_total{reason=no_route}":                        1,
		"proxy_routes_total{route=hbone}":                              1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed\n%v\nwant\n%v", got, want)
	}
	name, labels := SplitKey("hbone_failures_total{direction=outbound,reason=dial_failed}")
	if name != "hbone_failures_total" || labels["direction"] != "outbound" || labels["reason"] != "dial_failed" {
		t.Fatalf("SplitKey = %q %v", name, labels)
	}
	if _, err := ParseMetrics(strings.NewReader("# TYPE x counter\nx{a=\"1\" 3\n")); err == nil {
		t.Fatal("malformed exposition was accepted")
	}
}

// The sampler scrapes a proxy through its Dial hook, records a failed
// sample (without delaying the schedule) when the proxy does not answer
// in time, and Folder.Evidence turns the file into per-interval counts
// across a restart.
func TestSamplerProxy(t *testing.T) {
	p := newFakeProxy()
	srv := httptest.NewServer(p)
	defer srv.Close()
	var dials atomic.Int64
	dir := filepath.Join(t.TempDir(), "evidence")
	s, err := Start(context.Background(), Config{
		Dir: dir, Interval: 40 * time.Millisecond, ScrapeTimeout: 20 * time.Millisecond,
		Proxies: []Proxy{{
			Source: Source{Name: "proxy.ztunnel-n1", Pod: "ztunnel-n1", Node: "node-1", Role: "node-proxy"},
			// The URL's host is unreachable: only Dial gets there.
			URL: "http://192.0.2.1:15020/metrics",
			Dial: func(ctx context.Context) (net.Conn, error) {
				dials.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, "tcp", srv.Listener.Addr().String())
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "proxy.ztunnel-n1.jsonl")
	// waitFor polls the file until the samples taken after since satisfy
	// ok: the test follows what was recorded, not the clock, so a slow
	// machine only makes it slower.
	waitFor := func(what string, since time.Time, ok func([]Sample) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			all, _ := ReadFile(path)
			var after []Sample
			for _, x := range all {
				if x.Time.After(since) {
					after = append(after, x)
				}
			}
			if ok(after) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no sample %s within 10 s", what)
	}
	some := func(f func(Sample) bool) func([]Sample) bool {
		return func(xs []Sample) bool { return slices.ContainsFunc(xs, f) }
	}
	isGood := some(func(x Sample) bool { return x.Err == "" })
	waitFor("at all", time.Time{}, isGood)
	a := time.Now()
	p.out.ConnectionsOpened.Add(2)
	p.out.Fail(hbone.FailDial)
	waitFor("with 2 outbound connections", a, some(func(x Sample) bool {
		return x.Counters["hbone_connections_total{direction=outbound}"] == 2
	}))
	stalled := time.Now()
	p.stall.Store(true)
	waitFor("failed twice", stalled, func(xs []Sample) bool {
		n := 0
		for _, x := range xs {
			if x.Err != "" {
				n++
			}
		}
		return n >= 2
	})
	p.restart()
	p.out.ConnectionsOpened.Add(1)
	p.out.Fail(hbone.FailStream)
	restarted := time.Now()
	p.stall.Store(false)
	waitFor("after the restart", restarted, some(func(x Sample) bool {
		return x.Counters["hbone_failures_total{direction=outbound,reason=stream_failed}"] == 1
	}))
	b := time.Now()
	waitFor("after the interval", b, isGood)
	s.Stop() // twice is fine

	samples, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var good, failed int
	for _, x := range samples {
		if x.Err != "" {
			failed++
			if x.Err != "timeout" {
				t.Errorf("failed sample reason %q, want timeout", x.Err)
			}
		} else {
			good++
		}
	}
	if good < 4 || failed < 2 {
		t.Fatalf("%d good and %d failed samples; want ≥ 4 and ≥ 2", good, failed)
	}
	if dials.Load() == 0 {
		t.Fatal("Dial was never used")
	}
	// Kept alive: far fewer connections than scrapes (the stalled ones are
	// abandoned, so each of those costs a new one).
	if n := dials.Load(); n > int64(failed)+3 {
		t.Errorf("%d dials for %d scrapes: connections are not reused", n, p.requests.Load())
	}

	m, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Sources) != 1 || m.Sources[0].Kind != KindMetrics || m.Sources[0].Node != "node-1" || m.IntervalMs != 40 {
		t.Fatalf("manifest %+v", m)
	}
	ev := Open(dir).Evidence(a, b, []string{"proxy.ztunnel-n1", "netns.nowhere"})
	if ev == nil {
		t.Fatal("no evidence")
	}
	// 2 before the restart, 1 after it.
	if got := ev.HBONEConnectionsOpened["outbound"]; got != 3 {
		t.Errorf("outbound connections opened = %d, want 3 (2 + 1 after the restart)", got)
	}
	if ev.HBONEFailures[hbone.FailDial] != 1 || ev.HBONEFailures[hbone.FailStream] != 1 {
		t.Errorf("failures %v, want dial_failed 1 and stream_failed 1", ev.HBONEFailures)
	}
	if ev.FailedSamples < 2 {
		t.Errorf("failedSamples = %d, want ≥ 2", ev.FailedSamples)
	}
	if !reflect.DeepEqual(ev.Sources, []string{"proxy.ztunnel-n1"}) || !reflect.DeepEqual(ev.Missing, []string{"netns.nowhere"}) {
		t.Errorf("sources %v missing %v", ev.Sources, ev.Missing)
	}
	if got := ev.BySource["proxy.ztunnel-n1"]["hbone_failures_total{direction=outbound,reason=dial_failed}"]; got != 1 {
		t.Errorf("bySource %v", ev.BySource)
	}
	// Before the first sample there is nothing to say.
	if ev := Collect(dir, a.Add(-time.Hour), a.Add(-time.Minute), []string{"proxy.ztunnel-n1"}); ev != nil {
		t.Errorf("evidence for an interval before sampling: %+v", ev)
	}
	if ev := Collect(filepath.Join(t.TempDir(), "none"), a, b, []string{"x"}); ev != nil {
		t.Errorf("evidence from a folder that does not exist: %+v", ev)
	}
}

// Every field of Evidence is camelCase and zeros stay out of the JSON.
func TestEvidenceJSON(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, lines ...string) {
		if err := os.WriteFile(filepath.Join(dir, name+".jsonl"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("netns.a",
		`{"t":1000,"c":{"TcpInSegs":10,"TcpRetransSegs":1,"TcpActiveOpens":2}}`,
		`{"t":2000,"c":{"TcpInSegs":10,"TcpRetransSegs":5,"TcpExtTCPTimeouts":2,"TcpActiveOpens":3}}`)
	write("netns.b",
		`{"t":1000,"c":{"TcpInSegs":7}}`,
		`{"t":2000,"c":{"TcpInSegs":9,"TcpRetransSegs":1}}`)
	ev := Open(dir).Evidence(time.Unix(0, 1000), time.Unix(0, 2000), []string{"netns.a", "netns.b"})
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"sources":["netns.a","netns.b"],"tcpInSegs":2,"tcpRetransSegs":5,"tcpTimeouts":2,` +
		`"bySource":{"netns.a":{"TcpExtTCPTimeouts":2,"TcpRetransSegs":4},"netns.b":{"TcpInSegs":2,"TcpRetransSegs":1}}}`
	if string(b) != want {
		t.Fatalf("JSON\n%s\nwant\n%s", b, want)
	}
}

// BenchmarkParseMetrics is the parse alone, on a proxy's whole /metrics.
func BenchmarkParseMetrics(b *testing.B) {
	p := newFakeProxy()
	p.out.ConnectionsOpened.Add(12)
	p.out.Fail("dial_failed")
	var buf bytes.Buffer
	p.write(&buf)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseMetrics(bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}
