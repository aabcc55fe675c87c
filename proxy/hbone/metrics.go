package hbone

import (
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"blastradius.dev/blastradius/internal/promtext"
)

// Failure reasons, the values of the reason label. They are fixed strings so
// that a dashboard or an expectation can name them; both ends use the same
// vocabulary so a refusal can be matched across the tunnel.
const (
	FailTLSHandshake  = "tls_handshake"    // handshake failed for a reason not listed below (e.g. timeout)
	FailPlaintext     = "plaintext"        // the peer did not speak TLS at all
	FailProtocol      = "protocol"         // TLS but not 1.3 + ALPN h2, or the HTTP/2 preface failed
	FailUntrusted     = "untrusted"        // the certificate chain does not verify against Roots
	FailExpired       = "expired"          // the certificate is expired or not yet valid
	FailNoIdentity    = "no_identity"      // the certificate lacks exactly one spiffe:// URI SAN
	FailWrongIdentity = "wrong_identity"   // the server is not the identity the client expected
	FailTLSRejected   = "tls_rejected"     // client: the server refused our certificate (TLS alert)
	FailCert          = "cert_unavailable" // our own certificate could not be obtained
	FailDial          = "dial_failed"      // client: TCP connect to the HBONE endpoint failed
	FailStream        = "stream_failed"    // client: the CONNECT got no response (connection lost, reset)
	FailBadMethod     = "bad_method"       // not a CONNECT (405)
	FailPolicyDenied  = "policy_denied"    // 401 or 403: authorization policy said no
	FailBadAuthority  = "bad_authority"    // 400: the authority is malformed or not this destination
	FailForward       = "forward_failed"   // server: Forward failed before any byte flowed (503); client: got 503
	FailRejected      = "rejected"         // any other non-200 status
	FailDraining      = "draining"         // server: shutdown cut streams still open at its deadline
	FailTimeout       = "timeout"          // client: the caller's context deadline passed first
	FailCanceled      = "canceled"         // client: the caller's context was canceled first
)

// knownFailures are always exported, at zero if need be, so that a rate()
// over a reason that has not happened yet has a series to work on.
var knownFailures = []string{
	FailTLSHandshake, FailPlaintext, FailProtocol, FailUntrusted, FailExpired,
	FailNoIdentity, FailWrongIdentity, FailTLSRejected, FailCert, FailDial,
	FailStream, FailBadMethod, FailPolicyDenied, FailBadAuthority, FailForward,
	FailRejected, FailDraining, FailTimeout, FailCanceled,
}

// Metrics counts one side of HBONE (a Dialer is outbound, a Server inbound).
// Every method is safe on a nil *Metrics, which counts nothing, so Metrics
// can stay optional without nil checks at every call site. Counters are
// monotonic; the active gauges are derived as opened − closed.
type Metrics struct {
	ConnectionsOpened atomic.Int64 // TLS connections established (handshake and ALPN done)
	ConnectionsClosed atomic.Int64
	StreamsOpened     atomic.Int64 // CONNECT streams, accepted or not
	StreamsClosed     atomic.Int64
	BytesSent         atomic.Int64 // payload bytes this side put into tunnels
	BytesReceived     atomic.Int64 // payload bytes this side took out of tunnels

	mu       sync.Mutex
	failures map[string]*atomic.Int64
}

// Fail counts one failure by reason (one of the Fail* constants, or any
// other short snake_case word a caller needs).
func (m *Metrics) Fail(reason string) {
	if m == nil {
		return
	}
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
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.failures[reason]; ok {
		return c.Load()
	}
	return 0
}

// FailureCounts returns a snapshot of every non-zero failure count.
func (m *Metrics) FailureCounts() map[string]int64 {
	out := map[string]int64{}
	if m == nil {
		return out
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for r, c := range m.failures {
		if v := c.Load(); v != 0 {
			out[r] = v
		}
	}
	return out
}

// inc adds n to a counter of m; a nil m counts nothing.
func (m *Metrics) inc(field func(*Metrics) *atomic.Int64, n int) {
	if m != nil && n != 0 {
		field(m).Add(int64(n))
	}
}

func connsOpened(m *Metrics) *atomic.Int64   { return &m.ConnectionsOpened }
func connsClosed(m *Metrics) *atomic.Int64   { return &m.ConnectionsClosed }
func streamsOpened(m *Metrics) *atomic.Int64 { return &m.StreamsOpened }
func streamsClosed(m *Metrics) *atomic.Int64 { return &m.StreamsClosed }
func bytesSent(m *Metrics) *atomic.Int64     { return &m.BytesSent }
func bytesReceived(m *Metrics) *atomic.Int64 { return &m.BytesReceived }

func (m *Metrics) connOpened()    { m.inc(connsOpened, 1) }
func (m *Metrics) connClosed()    { m.inc(connsClosed, 1) }
func (m *Metrics) streamOpened()  { m.inc(streamsOpened, 1) }
func (m *Metrics) streamClosed()  { m.inc(streamsClosed, 1) }
func (m *Metrics) sent(n int)     { m.inc(bytesSent, n) }
func (m *Metrics) received(n int) { m.inc(bytesReceived, n) }

// LabeledMetrics pairs a Metrics with the labels its series carry, for
// Families.
type LabeledMetrics struct {
	Labels  []promtext.Label // e.g. direction="inbound"; may be empty
	Metrics *Metrics
}

// Families are the counters of several Metrics (typically inbound and
// outbound) as Prometheus families, each family's samples grouped under one
// TYPE line as the format requires.
func Families(sets ...LabeledMetrics) []*promtext.Family {
	var fams []*promtext.Family
	family := func(f *promtext.Family, value func(*Metrics) int64) {
		for _, s := range sets {
			f.Add(float64(value(s.Metrics)), s.Labels...)
		}
		fams = append(fams, f)
	}
	load := func(field func(*Metrics) *atomic.Int64) func(*Metrics) int64 {
		return func(m *Metrics) int64 {
			if m == nil {
				return 0
			}
			return field(m).Load()
		}
	}
	active := func(opened, closed func(*Metrics) *atomic.Int64) func(*Metrics) int64 {
		return func(m *Metrics) int64 { return load(opened)(m) - load(closed)(m) }
	}
	family(promtext.Counter("hbone_connections_total", "HBONE TLS connections established."), load(connsOpened))
	family(promtext.Counter("hbone_connections_closed_total", "HBONE TLS connections closed."), load(connsClosed))
	family(promtext.Gauge("hbone_connections_active", "HBONE TLS connections open now."), active(connsOpened, connsClosed))
	family(promtext.Counter("hbone_streams_total", "HBONE CONNECT streams opened."), load(streamsOpened))
	family(promtext.Counter("hbone_streams_closed_total", "HBONE CONNECT streams closed."), load(streamsClosed))
	family(promtext.Gauge("hbone_streams_active", "HBONE CONNECT streams open now."), active(streamsOpened, streamsClosed))
	family(promtext.Counter("hbone_bytes_sent_total", "Payload bytes sent into HBONE tunnels."), load(bytesSent))
	family(promtext.Counter("hbone_bytes_received_total", "Payload bytes received from HBONE tunnels."), load(bytesReceived))

	failures := promtext.Counter("hbone_failures_total", "HBONE failures by reason.")
	for _, s := range sets {
		counts := s.Metrics.FailureCounts()
		reasons := append([]string(nil), knownFailures...)
		for r := range counts {
			if !slices.Contains(knownFailures, r) {
				reasons = append(reasons, r)
			}
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			failures.Add(float64(counts[r]), promtext.With(s.Labels, promtext.Label{Name: "reason", Value: r})...)
		}
	}
	return append(fams, failures)
}

// WritePrometheus writes one Metrics' counters in the Prometheus text
// format, labels added to every series.
func (m *Metrics) WritePrometheus(w io.Writer, labels ...promtext.Label) error {
	return promtext.Write(w, Families(LabeledMetrics{Labels: labels, Metrics: m})...)
}
