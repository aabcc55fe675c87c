package evidence

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// droppedLabels are the same on every series of one proxy (its node and
// mode, which sources.json records once); keeping them would only lengthen
// every key of every sample.
var droppedLabels = map[string]bool{"node": true, "mode": true}

// ParseMetrics reads Prometheus text exposition and returns its counters by
// key: the family name, then its remaining labels sorted by name as
// {name=value,...} without quotes, e.g.
// hbone_failures_total{direction=outbound,reason=dial_failed}. Gauges and
// other types are left out (an increase of a gauge means nothing), and so
// are counters at zero.
//
// The parsing is Prometheus' own (expfmt, already a dependency of the
// module), so label escapes and the format's other corners are read as a
// Prometheus server would.
func ParseMetrics(r io.Reader) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return parseMetrics(&p, r)
}

func parseMetrics(p *expfmt.TextParser, r io.Reader) (map[string]float64, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(dropZeros(b)))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	var sb strings.Builder
	for name, mf := range mfs {
		if mf.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue()
			if v == 0 {
				continue
			}
			out[metricKey(&sb, name, m.GetLabel())] += v
		}
	}
	return out, nil
}

// dropZeros removes the series whose value is 0 before parsing: they would
// be left out anyway, and they are most of a proxy's output (every HBONE
// failure reason is exported at zero in both directions), so parsing only
// the rest is several times cheaper at 10 scrapes a second per proxy.
// HELP lines go too; TYPE lines stay, so every family keeps its type.
func dropZeros(b []byte) []byte {
	out := b[:0] // in place: the kept text is never longer
	for len(b) > 0 {
		l := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i+1], b[i+1:]
		} else {
			b = nil
		}
		t := bytes.TrimRight(l, " \t\r\n")
		if bytes.HasPrefix(t, []byte("# HELP ")) ||
			len(t) > 0 && t[0] != '#' && (bytes.HasSuffix(t, []byte(" 0")) || bytes.HasSuffix(t, []byte("\t0"))) {
			continue
		}
		out = append(out, l...)
	}
	return out
}

// metricKey builds a counter's key. Label values here are the proxies' own
// snake_case words; a ',', '}' or '=' in one would make the key ambiguous, so
// those become '_'.
func metricKey(sb *strings.Builder, name string, labels []*dto.LabelPair) string {
	var kept []*dto.LabelPair
	for _, l := range labels {
		if !droppedLabels[l.GetName()] {
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		return name
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].GetName() < kept[j].GetName() })
	sb.Reset()
	sb.WriteString(name)
	sb.WriteByte('{')
	for i, l := range kept {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(l.GetName())
		sb.WriteByte('=')
		sb.WriteString(strings.Map(func(r rune) rune {
			if r == ',' || r == '}' || r == '=' {
				return '_'
			}
			return r
		}, l.GetValue()))
	}
	sb.WriteByte('}')
	return sb.String()
}

// SplitKey is the inverse of the key format: the family name and its labels.
func SplitKey(key string) (name string, labels map[string]string) {
	i := strings.IndexByte(key, '{')
	if i < 0 || !strings.HasSuffix(key, "}") {
		return key, nil
	}
	labels = map[string]string{}
	for _, kv := range strings.Split(key[i+1:len(key)-1], ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			labels[k] = v
		}
	}
	return key[:i], labels
}

// scraper reads one proxy's /metrics over a kept-alive connection.
type scraper struct {
	url    string
	client *http.Client
	parser expfmt.TextParser
}

func newScraper(p Proxy) *scraper {
	tr := &http.Transport{
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	if p.Dial != nil {
		dial := p.Dial
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }
	}
	return &scraper{url: p.URL, client: &http.Client{Transport: tr}, parser: expfmt.NewTextParser(model.UTF8Validation)}
}

// scrape GETs the metrics; ctx carries the deadline.
func (s *scraper) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	c, err := parseMetrics(&s.parser, resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	return c, nil
}

func (s *scraper) close() { s.client.CloseIdleConnections() }
