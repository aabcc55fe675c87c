package node

import (
	"net/http"

	"blastradius.dev/blastradius/internal/promtext"
	"blastradius.dev/blastradius/proxy/hbone"
)

// writeMetrics serves a proxy's /metrics: its own counters, its HBONE
// counters by direction, and the process's goroutine count (go_goroutines,
// client_golang's name, which the soak watches for leaks). labels (node and
// mode) lead every series' own.
func writeMetrics(w http.ResponseWriter, labels []promtext.Label, own *Metrics, in, out *hbone.Metrics) {
	w.Header().Set("Content-Type", promtext.ContentType)
	dir := func(d string) []promtext.Label {
		return promtext.With(labels, promtext.Label{Name: "direction", Value: d})
	}
	fams := own.Families(labels)
	fams = append(fams, hbone.Families(hbone.LabeledMetrics{Labels: dir("inbound"), Metrics: in},
		hbone.LabeledMetrics{Labels: dir("outbound"), Metrics: out})...)
	_ = promtext.Write(w, append(fams, promtext.Goroutines())...)
}
