package dataplane

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/evidence"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/proxy/netnsx"
)

// MetricsTargets lists the node proxies (not the control plane), and their
// real /metrics, scraped over loopback inside each proxy's pod as the
// runner does, counts the HBONE streams a request through the mesh opened,
// while the pods' namespaces count its segments.
func TestMetricsTargetsSampled(t *testing.T) {
	e := deploy(t, "ambient")
	targets := e.ref.MetricsTargets()
	want := []scenario.MetricsTarget{}
	for i := 1; i <= 2; i++ {
		p, _ := e.cl.Pod(ZtunnelPod(i))
		want = append(want, scenario.MetricsTarget{Pod: p.Name, Role: "node-proxy",
			URL: fmt.Sprintf("http://%s:%d/metrics", p.IP, ProxyAdminPort)})
	}
	if !reflect.DeepEqual(targets, want) {
		t.Fatalf("MetricsTargets = %+v\nwant %+v", targets, want)
	}

	cfg := evidence.Config{Dir: filepath.Join(t.TempDir(), "evidence"), Interval: 50 * time.Millisecond, ScrapeTimeout: 40 * time.Millisecond}
	for _, tg := range targets {
		p, _ := e.cl.Pod(tg.Pod)
		fd := p.NetNSFD()
		cfg.Proxies = append(cfg.Proxies, evidence.Proxy{
			Source: evidence.Source{Name: "proxy." + p.Name, Pod: p.Name, Node: p.Node.Name},
			// Unroutable on purpose: only the in-pod loopback dial reaches it.
			URL: "http://192.0.2.1:15020/metrics",
			Dial: func(ctx context.Context) (net.Conn, error) {
				return netnsx.DialTCP(ctx, fd, fmt.Sprintf("127.0.0.1:%d", ProxyAdminPort), 0, 0)
			},
		})
	}
	cfg.Namespaces = []evidence.Namespace{{Source: evidence.Source{Name: "netns.a", Pod: "a"}, FD: e.a.NetNSFD()}}
	s, err := evidence.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	time.Sleep(200 * time.Millisecond)
	from := time.Now()
	for i := 0; i < 3; i++ {
		if code, err := e.httpGet("/evidence"); err != nil || code != 200 {
			t.Fatalf("request through the mesh: %d %v", code, err)
		}
	}
	to := time.Now()
	time.Sleep(200 * time.Millisecond)
	s.Stop()

	f := evidence.Open(cfg.Dir)
	for _, src := range []string{"proxy." + ZtunnelPod(1), "proxy." + ZtunnelPod(2)} {
		samples, err := f.Samples(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range samples {
			if x.Err != "" {
				t.Errorf("%s: failed sample at %s: %s", src, x.Time.Format(time.StampMilli), x.Err)
			}
		}
	}
	out := f.Evidence(from, to, []string{"proxy." + ZtunnelPod(1)})
	in := f.Evidence(from, to, []string{"proxy." + ZtunnelPod(2)})
	if out == nil || in == nil {
		t.Fatal("no evidence from the node proxies")
	}
	if out.HBONEStreamsOpened["outbound"] < 3 || in.HBONEStreamsOpened["inbound"] < 3 {
		t.Errorf("HBONE streams over 3 requests: node-1 outbound %v, node-2 inbound %v; want ≥ 3 each",
			out.HBONEStreamsOpened, in.HBONEStreamsOpened)
	}
	a := f.Evidence(from, to, []string{"netns.a"})
	if a == nil || a.TCPOutSegs == 0 || a.TCPInSegs == 0 {
		t.Errorf("pod a's namespace counted no segments for 3 requests: %+v", a)
	}
}
