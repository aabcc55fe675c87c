package ca

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Signer obtains a PEM certificate chain (leaf first) for spiffeID over the
// key of the PKCS#10 csrDER, typically by asking the control plane
// (xds.Client.Sign).
type Signer func(ctx context.Context, csrDER []byte, spiffeID string) (certChainPEM []byte, err error)

// Defaults for the CertManager knobs left zero.
const (
	DefaultCheckInterval = time.Second
	DefaultRetryInterval = 2 * time.Second
	DefaultSignTimeout   = 5 * time.Second
)

// CertManager keeps one workload certificate per identity, in memory only:
// a node proxy must never leave workload keys on disk, and losing them on
// restart is harmless because it fetches new ones.
//
// Certificates are refreshed in the background once half their lifetime has
// passed, which leaves the other half to ride out a control plane outage:
// while the signer fails the old certificate keeps being served until it
// expires, and only then does Get fail.
//
// Exported fields are read by a background goroutine started by the first
// Get, so set them before that and do not change them afterwards.
type CertManager struct {
	// Now is the manager's clock for validity and refresh decisions; nil
	// means time.Now. Tests move it forward instead of sleeping for half a
	// certificate lifetime.
	Now func() time.Time
	// CheckInterval is how often (in real time) the background loop looks
	// for certificates due for refresh. Polling with the injectable clock,
	// rather than arming one timer per certificate, is what lets a fake
	// clock drive rotation.
	CheckInterval time.Duration
	// RetryInterval is how long (on Now's clock) to wait after a failed
	// refresh before trying again, so a down CA is not hammered.
	RetryInterval time.Duration
	// SignTimeout bounds each background signing attempt.
	SignTimeout time.Duration
	// Logf, if set, receives one line per refresh failure and recovery.
	Logf func(format string, args ...any)

	sign  Signer
	roots func() []byte

	mu      sync.Mutex
	entries map[string]*certEntry
	closed  bool

	startOnce sync.Once
	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

type certEntry struct {
	cert      *tls.Certificate // nil until the first successful fetch
	refreshAt time.Time        // half life
	notAfter  time.Time
	retryAt   time.Time // earliest next background attempt after a failure
	lastErr   error     // last fetch error, cleared on success
	inflight  chan struct{}
}

// NewCertManager returns a manager that obtains certificates with sign and,
// when roots is non-nil and returns a non-empty PEM, checks each new chain
// against those roots before using it (a chain that does not verify would
// only make every handshake fail later, far from the cause).
func NewCertManager(sign Signer, roots func() []byte) *CertManager {
	ctx, cancel := context.WithCancel(context.Background())
	return &CertManager{
		sign:    sign,
		roots:   roots,
		entries: map[string]*certEntry{},
		ctx:     ctx,
		cancel:  cancel,
	}
}

func (m *CertManager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *CertManager) logf(format string, args ...any) {
	if m.Logf != nil {
		m.Logf(format, args...)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Get returns a valid certificate for spiffeID, fetching one when none is
// cached or the cached one has expired. It never returns an expired
// certificate: when the cached one has expired and the signer fails, the
// error says so.
func (m *CertManager) Get(ctx context.Context, spiffeID string) (*tls.Certificate, error) {
	if _, _, _, err := ParseSpiffeID(spiffeID); err != nil {
		return nil, err
	}
	m.startOnce.Do(m.start)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errors.New("ca: certificate manager closed")
	}
	e := m.entries[spiffeID]
	if e == nil {
		e = &certEntry{}
		m.entries[spiffeID] = e
	}
	if e.cert != nil && m.now().Before(e.notAfter) {
		c := e.cert
		m.mu.Unlock()
		return c, nil
	}
	if ch := e.inflight; ch != nil {
		// Someone is already fetching this identity: share the result
		// instead of sending the CA a second CSR.
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if e.cert != nil && m.now().Before(e.notAfter) {
			return e.cert, nil
		}
		return nil, m.unavailableLocked(spiffeID, e, e.lastErr)
	}
	ch := make(chan struct{})
	e.inflight = ch
	m.mu.Unlock()

	err := m.fetch(ctx, spiffeID, e, ch)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		return nil, m.unavailableLocked(spiffeID, e, err)
	}
	if !m.now().Before(e.notAfter) {
		return nil, fmt.Errorf("ca: certificate issued for %s is already expired (NotAfter %s): clocks out of sync?", spiffeID, e.notAfter.Format(time.RFC3339))
	}
	return e.cert, nil
}

func (m *CertManager) unavailableLocked(id string, e *certEntry, err error) error {
	if err == nil {
		err = errors.New("unknown error")
	}
	if e.cert != nil {
		return fmt.Errorf("ca: certificate for %s expired at %s and the CA is unreachable: %w", id, e.notAfter.Format(time.RFC3339), err)
	}
	return fmt.Errorf("ca: no certificate for %s and the CA is unreachable: %w", id, err)
}

// fetch signs a new certificate for id and installs it in e, then closes
// done (which must be e.inflight). On failure e keeps its old certificate.
func (m *CertManager) fetch(ctx context.Context, id string, e *certEntry, done chan struct{}) error {
	cert, leaf, err := m.obtain(ctx, id)
	m.mu.Lock()
	defer m.mu.Unlock()
	e.inflight = nil
	close(done)
	if err != nil {
		e.lastErr = err
		e.retryAt = m.now().Add(orDefault(m.RetryInterval, DefaultRetryInterval))
		return err
	}
	e.cert = cert
	e.notAfter = leaf.NotAfter
	// Half life counted from when we got it, not from NotBefore: the CA
	// backdates NotBefore by a minute for clock skew, and with short TTLs
	// (the suite uses 10s to provoke expiry) NotBefore-based half life would
	// already be over at issuance and we would renew continuously.
	start := m.now()
	if leaf.NotBefore.After(start) {
		start = leaf.NotBefore
	}
	e.refreshAt = start.Add(leaf.NotAfter.Sub(start) / 2)
	e.lastErr = nil
	e.retryAt = time.Time{}
	return nil
}

func (m *CertManager) obtain(ctx context.Context, id string) (*tls.Certificate, *x509.Certificate, error) {
	csr, key, err := NewCSR(id)
	if err != nil {
		return nil, nil, err
	}
	chainPEM, err := m.sign(ctx, csr, id)
	if err != nil {
		return nil, nil, err
	}
	return m.assemble(id, key, chainPEM)
}

// assemble checks the chain the signer returned really is for our key and
// identity (a mixed-up response must not be served as someone else's cert).
func (m *CertManager) assemble(id string, key crypto.Signer, chainPEM []byte) (*tls.Certificate, *x509.Certificate, error) {
	var ders [][]byte
	rest := chainPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			ders = append(ders, b.Bytes)
		}
	}
	if len(ders) == 0 {
		return nil, nil, errors.New("ca: signer returned no certificate")
	}
	leaf, err := x509.ParseCertificate(ders[0])
	if err != nil {
		return nil, nil, fmt.Errorf("ca: signer returned a bad certificate: %w", err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pk, ok := key.Public().(equaler); !ok || !pk.Equal(leaf.PublicKey) {
		return nil, nil, errors.New("ca: signer returned a certificate for a different key")
	}
	got, err := IdentityOf(leaf)
	if err != nil {
		return nil, nil, err
	}
	if got != id {
		return nil, nil, fmt.Errorf("ca: asked for %s, signer returned a certificate for %s", id, got)
	}
	if m.roots != nil {
		if rp := m.roots(); len(rp) > 0 {
			pool, err := PoolFromPEM(rp)
			if err != nil {
				return nil, nil, err
			}
			inter := x509.NewCertPool()
			for _, d := range ders[1:] {
				if c, err := x509.ParseCertificate(d); err == nil {
					inter.AddCert(c)
				}
			}
			if _, err := leaf.Verify(x509.VerifyOptions{
				Roots: pool, Intermediates: inter, CurrentTime: m.now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
			}); err != nil {
				return nil, nil, fmt.Errorf("ca: certificate from signer does not verify against the roots: %w", err)
			}
		}
	}
	return &tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf}, leaf, nil
}

// Roots returns the current trust roots as a pool.
func (m *CertManager) Roots() (*x509.CertPool, error) {
	if m.roots == nil {
		return nil, errors.New("ca: no roots source configured")
	}
	return PoolFromPEM(m.roots())
}

// VerifyPeerCertificate is ca.VerifyPeer against the roots current at
// handshake time, so a control plane restart (new root) is picked up without
// rebuilding TLS configs.
func (m *CertManager) VerifyPeerCertificate(rawCerts [][]byte, chains [][]*x509.Certificate) error {
	pool, err := m.Roots()
	if err != nil {
		return err
	}
	return VerifyPeer(pool)(rawCerts, chains)
}

// Forget drops the certificate for spiffeID (e.g. the last pod with that
// identity left the node) so it is no longer refreshed.
func (m *CertManager) Forget(spiffeID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, spiffeID)
}

// Close stops background refreshes and waits for those in flight. Get fails
// afterwards.
func (m *CertManager) Close() {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.closed = true
	m.mu.Unlock()
	m.startOnce.Do(func() {}) // never start the loop after Close
	m.cancel()
	m.wg.Wait()
}

func (m *CertManager) start() {
	m.wg.Add(1)
	go m.loop()
}

func (m *CertManager) loop() {
	defer m.wg.Done()
	t := time.NewTicker(orDefault(m.CheckInterval, DefaultCheckInterval))
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
			m.refreshDue()
		}
	}
}

// refreshDue starts a background fetch for every certificate past its half
// life that is not already being fetched or waiting out a retry delay.
func (m *CertManager) refreshDue() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	now := m.now()
	for id, e := range m.entries {
		if e.cert == nil || e.inflight != nil || now.Before(e.refreshAt) || now.Before(e.retryAt) {
			continue
		}
		ch := make(chan struct{})
		e.inflight = ch
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			// Derived from the manager's context so Close aborts a
			// refresh stuck on an unreachable CA.
			ctx, cancel := context.WithTimeout(m.ctx, orDefault(m.SignTimeout, DefaultSignTimeout))
			defer cancel()
			m.mu.Lock()
			hadErr := e.lastErr != nil
			m.mu.Unlock()
			if err := m.fetch(ctx, id, e, ch); err != nil {
				m.mu.Lock()
				until := e.notAfter
				m.mu.Unlock()
				m.logf("ca: refreshing certificate for %s failed, serving the old one until %s: %v", id, until.Format(time.RFC3339), err)
			} else if hadErr {
				m.logf("ca: certificate for %s refreshed after earlier failures", id)
			}
		}()
	}
}
