// Package promtext is the one Prometheus text writer of the project: every
// /metrics (node proxies, waypoints, sidecars, the control plane) builds its
// families here and has them encoded by the Prometheus client library's own
// encoder (expfmt), so escaping, number formatting and TYPE/HELP lines are
// the library's, not hand-written.
package promtext

import (
	"fmt"
	"io"
	"runtime"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Label is one label pair of a series.
type Label struct{ Name, Value string }

// L builds labels from name, value pairs: L("node", "node-1", "mode", "ztunnel").
func L(pairs ...string) []Label {
	if len(pairs)%2 != 0 {
		panic(fmt.Sprintf("promtext.L: odd number of strings %q", pairs))
	}
	out := make([]Label, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, Label{pairs[i], pairs[i+1]})
	}
	return out
}

// With returns labels followed by more, leaving labels as it was.
func With(labels []Label, more ...Label) []Label {
	return append(append(make([]Label, 0, len(labels)+len(more)), labels...), more...)
}

// Family is one metric family: a name, its type and help, and its series
// in the order they were added (labels too keep their order).
type Family struct{ mf *dto.MetricFamily }

// Counter starts a counter family; help may be empty.
func Counter(name, help string) *Family { return newFamily(name, help, dto.MetricType_COUNTER) }

// Gauge starts a gauge family; help may be empty.
func Gauge(name, help string) *Family { return newFamily(name, help, dto.MetricType_GAUGE) }

func newFamily(name, help string, t dto.MetricType) *Family {
	mf := &dto.MetricFamily{Name: proto.String(name), Type: t.Enum()}
	if help != "" {
		mf.Help = proto.String(help)
	}
	return &Family{mf: mf}
}

// Add adds a series with value v and labels.
func (f *Family) Add(v float64, labels ...Label) *Family {
	m := &dto.Metric{}
	for _, l := range labels {
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)})
	}
	switch f.mf.GetType() {
	case dto.MetricType_COUNTER:
		m.Counter = &dto.Counter{Value: proto.Float64(v)}
	default:
		m.Gauge = &dto.Gauge{Value: proto.Float64(v)}
	}
	f.mf.Metric = append(f.mf.Metric, m)
	return f
}

// Write encodes families in the text exposition format. A family with no
// series is written as its TYPE line alone, so a scraper still learns it.
func Write(w io.Writer, families ...*Family) error {
	for _, f := range families {
		if len(f.mf.Metric) == 0 {
			if _, err := fmt.Fprintf(w, "# TYPE %s %s\n", f.mf.GetName(), typeName(f.mf.GetType())); err != nil {
				return err
			}
			continue
		}
		if _, err := expfmt.MetricFamilyToText(w, f.mf); err != nil {
			return err
		}
	}
	return nil
}

func typeName(t dto.MetricType) string {
	if t == dto.MetricType_COUNTER {
		return "counter"
	}
	return "gauge"
}

// ContentType is the text format's Content-Type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Goroutines is the process's goroutine count under the name client_golang
// uses (go_goroutines), so a scraper or the soak (framework/soak) can watch
// for goroutine leaks without a profile.
func Goroutines() *Family {
	return Gauge("go_goroutines", "Number of goroutines that currently exist.").Add(float64(runtime.NumGoroutine()))
}
