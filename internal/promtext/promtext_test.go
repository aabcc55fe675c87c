package promtext

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// What Write produces is what a Prometheus scraper parses back: families
// typed, series in the order added with their labels in the order given,
// label values escaped; an empty family is kept as its TYPE line (the
// parser drops it: it has no sample).
func TestWriteParsesBack(t *testing.T) {
	var b strings.Builder
	base := L("node", "node-3", "mode", "ztunnel")
	err := Write(&b,
		Counter("proxy_failures_total", "").Add(2, With(base, Label{"reason", `odd "quoted"\ value` + "\n"})...).Add(1234567, With(base, Label{"reason", "b"})...),
		Gauge("hbone_streams_active", "HBONE CONNECT streams open now.").Add(-1, base...),
		Counter("proxy_routes_total", ""),
		Goroutines())
	if err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		`proxy_failures_total{node="node-3",mode="ztunnel",reason="odd \"quoted\"\\ value\n"} 2` + "\n",
		"# HELP hbone_streams_active HBONE CONNECT streams open now.\n# TYPE hbone_streams_active gauge\n",
		"# TYPE proxy_routes_total counter\n# HELP go_goroutines",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q in\n%s", want, text)
		}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("a scraper cannot parse it: %v\n%s", err, text)
	}
	f := fams["proxy_failures_total"]
	if f == nil || len(f.Metric) != 2 || f.Metric[1].GetCounter().GetValue() != 1234567 {
		t.Errorf("proxy_failures_total parsed as %v", f)
	}
	if g := fams["go_goroutines"]; g == nil || g.Metric[0].GetGauge().GetValue() < 1 {
		t.Errorf("go_goroutines parsed as %v", g)
	}
}

func TestOddLabelsPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("L with an odd number of strings did not panic")
		}
	}()
	L("node")
}
