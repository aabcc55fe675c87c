package node

import (
	"sort"
	"sync"
	"sync/atomic"

	"blastradius.dev/blastradius/internal/promtext"
)

// Metrics are the proxy's own counters (HBONE keeps its own), exposed in the
// Prometheus text format through internal/promtext.
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

// Families are the counters as Prometheus families; labels (node and
// mode) lead every series' own.
func (m *Metrics) Families(labels []promtext.Label) []*promtext.Family {
	dir := func(d string) []promtext.Label {
		return promtext.With(labels, promtext.Label{Name: "direction", Value: d})
	}
	fams := []*promtext.Family{
		promtext.Counter("proxy_connections_opened_total", "").
			Add(float64(m.OutboundOpened.Load()), dir("outbound")...).Add(float64(m.InboundOpened.Load()), dir("inbound")...),
		promtext.Counter("proxy_connections_closed_total", "").
			Add(float64(m.OutboundClosed.Load()), dir("outbound")...).Add(float64(m.InboundClosed.Load()), dir("inbound")...),
		promtext.Counter("proxy_bytes_total", "").
			Add(float64(m.BytesOut.Load()), dir("outbound")...).Add(float64(m.BytesIn.Load()), dir("inbound")...),
		promtext.Counter("proxy_policy_denials_total", "").Add(float64(m.PolicyDenials.Load()), labels...),
	}
	routes := promtext.Counter("proxy_routes_total", "")
	var kinds []string
	m.Routes.Range(func(k, _ any) bool { kinds = append(kinds, k.(string)); return true })
	sort.Strings(kinds)
	for _, k := range kinds {
		routes.Add(float64(m.RouteCount(k)), promtext.With(labels, promtext.Label{Name: "route", Value: k})...)
	}
	failures := promtext.Counter("proxy_failures_total", "")
	m.mu.Lock()
	var reasons []string
	for r := range m.failures {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		failures.Add(float64(m.failures[r].Load()), promtext.With(labels, promtext.Label{Name: "reason", Value: r})...)
	}
	m.mu.Unlock()
	return append(fams, routes, failures)
}
