package node

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
)

// Metrics are the proxy's own counters (HBONE keeps its own), exposed in the
// Prometheus text format without a client library: a handful of counters does
// not justify the dependency.
type Metrics struct {
	OutboundOpened, OutboundClosed atomic.Int64
	InboundOpened, InboundClosed   atomic.Int64
	BytesOut, BytesIn              atomic.Int64 // out: from the local pod's side; in: towards it
	PolicyDenials                  atomic.Int64
	Routes                         sync.Map // kind -> *atomic.Int64

	mu       sync.Mutex
	failures map[string]*atomic.Int64
}

// Fail counts a failure by reason.
func (m *Metrics) Fail(reason string) {
	m.mu.Lock()
	if m.failures == nil {
		m.failures = map[string]*atomic.Int64{}
	}
	c, ok := m.failures[reason]
	if !ok {
		c = new(atomic.Int64)
		m.failures[reason] = c
	}
	m.mu.Unlock()
	c.Add(1)
}

// Failures returns the count for one reason.
func (m *Metrics) Failures(reason string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.failures[reason]; ok {
		return c.Load()
	}
	return 0
}

// Route counts an outbound connection by route kind.
func (m *Metrics) Route(kind string) {
	v, _ := m.Routes.LoadOrStore(kind, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// RouteCount returns the count for one route kind.
func (m *Metrics) RouteCount(kind string) int64 {
	if v, ok := m.Routes.Load(kind); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// WritePrometheus writes the counters; labels (e.g. `node="node-1"`) are
// added to every series.
func (m *Metrics) WritePrometheus(w io.Writer, labels string) {
	l := func(extra string) string {
		switch {
		case labels == "" && extra == "":
			return ""
		case labels == "":
			return "{" + extra + "}"
		case extra == "":
			return "{" + labels + "}"
		}
		return "{" + labels + "," + extra + "}"
	}
	fmt.Fprintln(w, "# TYPE proxy_connections_opened_total counter")
	fmt.Fprintf(w, "proxy_connections_opened_total%s %d\n", l(`direction="outbound"`), m.OutboundOpened.Load())
	fmt.Fprintf(w, "proxy_connections_opened_total%s %d\n", l(`direction="inbound"`), m.InboundOpened.Load())
	fmt.Fprintln(w, "# TYPE proxy_connections_closed_total counter")
	fmt.Fprintf(w, "proxy_connections_closed_total%s %d\n", l(`direction="outbound"`), m.OutboundClosed.Load())
	fmt.Fprintf(w, "proxy_connections_closed_total%s %d\n", l(`direction="inbound"`), m.InboundClosed.Load())
	fmt.Fprintln(w, "# TYPE proxy_bytes_total counter")
	fmt.Fprintf(w, "proxy_bytes_total%s %d\n", l(`direction="outbound"`), m.BytesOut.Load())
	fmt.Fprintf(w, "proxy_bytes_total%s %d\n", l(`direction="inbound"`), m.BytesIn.Load())
	fmt.Fprintln(w, "# TYPE proxy_policy_denials_total counter")
	fmt.Fprintf(w, "proxy_policy_denials_total%s %d\n", l(""), m.PolicyDenials.Load())
	fmt.Fprintln(w, "# TYPE proxy_routes_total counter")
	var kinds []string
	m.Routes.Range(func(k, _ any) bool { kinds = append(kinds, k.(string)); return true })
	sort.Strings(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "proxy_routes_total%s %d\n", l(`route="`+k+`"`), m.RouteCount(k))
	}
	fmt.Fprintln(w, "# TYPE proxy_failures_total counter")
	m.mu.Lock()
	var reasons []string
	for r := range m.failures {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "proxy_failures_total%s %d\n", l(`reason="`+r+`"`), m.failures[r].Load())
	}
	m.mu.Unlock()
}
