package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Timeouts both ends use. They are constants rather than knobs because the
// chaos suite measures how the data plane behaves, and a reference data
// plane with one fixed behaviour is easier to reason about.
const (
	// handshakeTimeout bounds TCP-accept-to-h2-ready, even for a caller
	// whose context has no deadline: a black-holed peer must not pin a
	// pooled dial (or a server goroutine) forever.
	handshakeTimeout = 10 * time.Second
	// pingAfter and pingTimeout detect a dead peer on an otherwise idle
	// connection (a killed node sends no FIN): after pingAfter without a
	// frame, PING; no answer within pingTimeout closes the connection.
	pingAfter   = 30 * time.Second
	pingTimeout = 15 * time.Second
	// writeByteTimeout closes a connection whose peer stopped reading
	// (its TCP window stayed shut), so one stuck peer cannot hold the
	// connection's write lock, and every stream on it, forever.
	writeByteTimeout = 30 * time.Second
	// idleConnTimeout closes a pooled connection that carried no stream for
	// this long, so a pool towards pods that are long gone drains itself.
	idleConnTimeout = 5 * time.Minute
)

// ErrDialerClosed is returned (wrapped) by Connect after Close.
var ErrDialerClosed = errors.New("hbone: dialer closed")

// errStreamReset is what a stream's reads (after the bytes that arrived
// first) and writes return once the peer reset it.
var errStreamReset = errors.New("hbone: stream reset")

// Dialer opens HBONE streams. Its zero value plus Cert and Roots is ready to
// use; it must not be copied after first use.
type Dialer struct {
	// Cert returns the certificate of the SOURCE workload identity (the
	// client presents the source's identity, not the proxy's). It is called
	// once per new TLS connection, so it should serve from a cache.
	Cert func(ctx context.Context, identity string) (*tls.Certificate, error)
	// Roots returns the trust bundle the server's chain must verify
	// against; called per handshake so rotation takes effect on new
	// connections.
	Roots func() *x509.CertPool
	// DialContext makes the TCP connection (the node proxy creates it
	// inside the source pod's network namespace with a socket mark); nil
	// means a plain net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Metrics, if set, counts outbound connections, streams, bytes and
	// failures.
	Metrics *Metrics

	initOnce sync.Once

	mu      sync.Mutex
	closed  bool
	pool    map[poolKey][]*clientConn // usable-looking connections per key
	dialing map[poolKey]*dialCall     // at most one dial in flight per key
	all     map[*clientConn]struct{}  // every open connection, pooled or draining
}

// poolKey is what a connection is shared by: the identity it presented and
// the endpoint it reached. Streams to different authorities behind the same
// endpoint (ports of one pod) share it, as in ztunnel.
type poolKey struct{ src, addr string }

type clientConn struct {
	key  poolKey
	peer string // the server's verified SPIFFE identity
	c    *conn
	dead atomic.Bool // set when the connection closes
}

// dialCall lets concurrent Connects for one key wait for a single dial
// instead of each opening its own connection.
type dialCall struct {
	want   string
	done   chan struct{}
	reason string
	err    error
}

func (d *Dialer) init() {
	d.initOnce.Do(func() {
		d.pool = map[poolKey][]*clientConn{}
		d.dialing = map[poolKey]*dialCall{}
		d.all = map[*clientConn]struct{}{}
	})
}

// Connect opens a CONNECT stream to authority (the final target ip:port)
// through the HBONE endpoint hboneAddr (dst pod ip:15008), presenting
// srcIdentity, and verifying the server presents wantServerIdentity (empty =
// any valid identity from Roots).
//
// ctx bounds connecting only, as for net.Dialer: once Connect returns, the
// stream lives until Close. The returned net.Conn is full duplex, supports
// deadlines, and CloseWrite half-closes (the server reads EOF). Close ends
// the stream, not the pooled connection. Every error is a *ConnectError; a
// refusal by the server unwraps to a *StatusError.
//
// header is sent with the CONNECT after :method and :authority, as ztunnel
// sends forwarded, baggage and traceparent; names must be lower case.
func (d *Dialer) Connect(ctx context.Context, srcIdentity, hboneAddr, authority, wantServerIdentity string, header ...Header) (net.Conn, error) {
	d.init()
	c, reason, err := d.connect(ctx, poolKey{srcIdentity, hboneAddr}, authority, wantServerIdentity, header)
	if err != nil {
		if ctxReason := contextReason(ctx); ctxReason != "" {
			reason = ctxReason
		}
		d.Metrics.Fail(reason)
		return nil, &ConnectError{Authority: authority, Via: hboneAddr, Reason: reason, Err: err}
	}
	return c, nil
}

// Close closes every connection, pooled or not, ending their streams.
// Connect fails afterwards.
func (d *Dialer) Close() error {
	d.init()
	d.mu.Lock()
	d.closed = true
	conns := make([]*clientConn, 0, len(d.all))
	for c := range d.all {
		conns = append(conns, c)
	}
	d.pool = map[poolKey][]*clientConn{}
	d.mu.Unlock()
	for _, c := range conns {
		c.c.fail(ErrDialerClosed)
	}
	return nil
}

func (d *Dialer) connect(ctx context.Context, key poolKey, authority, want string, header []Header) (net.Conn, string, error) {
	if _, _, err := net.SplitHostPort(authority); err != nil {
		return nil, FailBadAuthority, fmt.Errorf("invalid authority: %w", err)
	}
	for attempt := 0; ; attempt++ {
		c, fresh, reason, err := d.getConn(ctx, key, want)
		if err != nil {
			return nil, reason, err
		}
		st, reason, err := d.open(ctx, c, authority, header)
		if err == nil {
			return st, "", nil
		}
		if reason == FailStream && !fresh && attempt == 0 && ctx.Err() == nil {
			// A pooled connection can die between the liveness check and
			// the request (the server restarted, a middlebox reset it), or
			// the server can refuse the stream as it drains. Nothing of the
			// caller's has been sent yet, so retry once on a fresh
			// connection. At worst the server got the first CONNECT and
			// dialled the app before the connection died: the app sees one
			// aborted connection, as it would from a TCP client's retry.
			d.evict(c)
			continue
		}
		return nil, reason, err
	}
}

// getConn returns a connection for key with one stream reserved on it,
// dialling if no pooled one can take a stream. fresh reports a connection
// this call (or a dial it waited for) just made.
func (d *Dialer) getConn(ctx context.Context, key poolKey, want string) (c *clientConn, fresh bool, reason string, err error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, false, FailDial, ErrDialerClosed
		}
		if c := d.reserveLocked(key, want); c != nil {
			d.mu.Unlock()
			return c, false, "", nil
		}
		if call := d.dialing[key]; call != nil {
			d.mu.Unlock()
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, false, FailDial, ctx.Err()
			}
			// Share the dial's failure only if it is ours to share: a dial
			// expecting another server identity, or one cut short by its
			// own caller's context, says nothing about this Connect.
			if call.err != nil && call.want == want && !isContextErr(call.err) {
				return nil, false, call.reason, call.err
			}
			continue
		}
		call := &dialCall{want: want, done: make(chan struct{})}
		d.dialing[key] = call
		d.mu.Unlock()

		c, reason, err := d.dial(ctx, key, want)

		d.mu.Lock()
		delete(d.dialing, key)
		closeIt := false
		if err == nil && d.closed {
			closeIt = true
			c, reason, err = nil, FailDial, ErrDialerClosed
		}
		reserved := false
		if err == nil {
			d.pool[key] = append(d.pool[key], c)
			d.all[c] = struct{}{}
			reserved = c.c.reserve()
		}
		call.reason, call.err = reason, err
		close(call.done)
		d.mu.Unlock()
		if closeIt {
			c.c.fail(ErrDialerClosed)
		}
		if err != nil {
			return nil, false, reason, err
		}
		if reserved {
			return c, true, "", nil
		}
		// The waiters filled it first (or it died already): go round.
	}
}

// reserveLocked reserves a stream on a pooled connection for key that proved
// want (any, if empty), dropping dead connections from the pool on the way.
func (d *Dialer) reserveLocked(key poolKey, want string) *clientConn {
	list := d.pool[key]
	live := list[:0]
	for _, c := range list {
		if !c.dead.Load() {
			live = append(live, c)
		}
	}
	clear(list[len(live):])
	if len(live) == 0 {
		delete(d.pool, key)
		return nil
	}
	d.pool[key] = live
	for _, c := range live {
		if want != "" && c.peer != want {
			// The pod behind this IP changed identity (an IP reused by a
			// new pod): never put this stream on it; a fresh dial decides.
			continue
		}
		// False when the connection is at the server's stream limit, got a
		// GOAWAY (draining), or is closing; then the next one, or a dial.
		if c.c.reserve() {
			return c
		}
	}
	return nil
}

// evict takes c out of the pool; it stays open for the streams it carries
// and closes once they end.
func (d *Dialer) evict(c *clientConn) {
	d.mu.Lock()
	list := d.pool[c.key]
	for i, pc := range list {
		if pc == c {
			d.pool[c.key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	d.mu.Unlock()
	c.c.setDoNotReuse()
}

// forget drops a closed connection from the bookkeeping.
func (d *Dialer) forget(c *clientConn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.all, c)
	list := d.pool[c.key]
	for i, pc := range list {
		if pc == c {
			d.pool[c.key] = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(d.pool[c.key]) == 0 {
		delete(d.pool, c.key)
	}
}

// dial makes one TLS + HTTP/2 connection to key.addr presenting key.src.
func (d *Dialer) dial(ctx context.Context, key poolKey, want string) (*clientConn, string, error) {
	if d.Cert == nil {
		return nil, FailCert, errors.New("no certificate source (Dialer.Cert is nil)")
	}
	cert, err := d.Cert(ctx, key.src)
	if err == nil && cert == nil {
		err = errors.New("no certificate")
	}
	if err != nil {
		return nil, FailCert, fmt.Errorf("certificate for %s: %w", key.src, err)
	}
	var roots *x509.CertPool
	if d.Roots != nil {
		roots = d.Roots()
	}
	dialFn := d.DialContext
	if dialFn == nil {
		var nd net.Dialer
		dialFn = nd.DialContext
	}
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	raw, err := dialFn(hctx, "tcp", key.addr)
	if err != nil {
		return nil, FailDial, err
	}

	var peer string
	cfg := tlsBase()
	cfg.Certificates = []tls.Certificate{*cert}
	// crypto/tls would check a DNS name the SVID does not have; the chain
	// and the SPIFFE identity are checked by VerifyPeerCertificate instead,
	// which still runs when InsecureSkipVerify is set.
	cfg.InsecureSkipVerify = true
	cfg.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		id, err := verifyPeer(rawCerts, roots, time.Now())
		if err != nil {
			return err
		}
		if want != "" && id != want {
			return &certError{FailWrongIdentity, fmt.Errorf("%w: got %s, want %s", ErrWrongIdentity, id, want)}
		}
		peer = id
		return nil
	}
	tc := tls.Client(&corkConn{Conn: raw}, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, handshakeReason(err), fmt.Errorf("tls handshake: %w", err)
	}
	if err := checkNegotiated(tc.ConnectionState()); err != nil {
		raw.Close()
		return nil, FailProtocol, err
	}

	h := newConn(tc, raw, false, d.Metrics)
	c := &clientConn{key: key, peer: peer, c: h}
	if err := h.start(); err != nil {
		raw.Close()
		return nil, FailProtocol, fmt.Errorf("http2 preface: %w", err)
	}
	// In TLS 1.3 the client's handshake is over before the server has even
	// looked at our certificate; a refusal arrives as an alert on the first
	// read. So wait for the server's first frame (its SETTINGS, which it
	// sends unprompted once it has accepted us) before any stream is put on
	// the connection: one round trip per new connection, and a refusal is
	// reported as what it is.
	stop := context.AfterFunc(hctx, func() { raw.SetReadDeadline(time.Unix(1, 0)) })
	err = h.readSettings()
	if !stop() {
		err = fmt.Errorf("waiting for the server's HTTP/2 preface: %w", hctx.Err())
		raw.Close()
		return nil, FailTLSHandshake, err
	}
	if err != nil {
		raw.Close()
		if isTLSAlert(err) {
			return nil, FailTLSRejected, fmt.Errorf("server refused the connection: %w", err)
		}
		return nil, FailProtocol, fmt.Errorf("reading the server's HTTP/2 preface: %w", err)
	}
	d.Metrics.connOpened()
	h.onClose = func(error) {
		c.dead.Store(true)
		d.Metrics.connClosed()
		// Not inline: the connection can close from paths that hold d.mu
		// (getConn, when the Dialer closed during a dial).
		go d.forget(c)
	}
	go h.run()
	return c, "", nil
}

// open sends the CONNECT on c (which has a stream reserved) and waits for
// the answer.
func (d *Dialer) open(ctx context.Context, c *clientConn, authority string, header []Header) (net.Conn, string, error) {
	d.Metrics.streamOpened()
	st, err := c.c.open(ctx, authority, header)
	if err != nil {
		d.Metrics.streamClosed()
		reason := FailStream
		if isTLSAlert(err) {
			reason = FailTLSRejected
		}
		return nil, reason, err
	}
	if st.status != http.StatusOK {
		c.c.endStream(st, errStreamReset, true, http2.ErrCodeCancel) // if still open
		d.Metrics.streamClosed()
		return nil, statusReason(st.status), &StatusError{Code: st.status}
	}
	st.onClose = d.Metrics.streamClosed
	return st, "", nil
}

// reserve promises a stream to a Connect, if the connection can take one.
func (c *conn) reserve() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.goingAway || c.doNotReuse || len(c.streams)+c.reserved >= c.peerMaxStream {
		return false
	}
	c.reserved++
	return true
}

// setDoNotReuse stops new streams; the connection closes once idle.
func (c *conn) setDoNotReuse() {
	c.mu.Lock()
	c.doNotReuse = true
	c.mu.Unlock()
	c.closeIfDone()
}

// open turns a reservation into a CONNECT stream and waits for the response
// headers.
func (c *conn) open(ctx context.Context, authority string, header []Header) (*stream, error) {
	st := newStream(c, 0)
	st.respReady = make(chan struct{})
	// The id is taken and the HEADERS written under the write lock, so ids
	// reach the wire in increasing order, as RFC 9113 requires.
	c.lockWrite()
	c.mu.Lock()
	c.reserved--
	if c.closing || c.nextID >= 1<<31 {
		c.doNotReuse = true
		c.mu.Unlock()
		c.unlockWrite()
		c.closeIfDone()
		if err := c.err(); err != nil {
			return nil, err
		}
		return nil, errRefused
	}
	st.id = c.nextID
	c.nextID += 2
	st.sendWin = c.peerInitWin
	c.streams[st.id] = st
	c.mu.Unlock()
	fields := make([]hpack.HeaderField, 0, 2+len(header))
	fields = append(fields,
		hpack.HeaderField{Name: ":method", Value: http.MethodConnect},
		hpack.HeaderField{Name: ":authority", Value: authority})
	for _, h := range header {
		fields = append(fields, hpack.HeaderField{Name: h.Name, Value: h.Value})
	}
	c.writeHeadersLocked(st.id, false, fields...)
	if err := c.unlockWrite(); err != nil {
		c.endStream(st, err, false, 0)
		return nil, err
	}
	select {
	case <-st.respReady:
	case <-ctx.Done():
	}
	if err := ctx.Err(); err != nil {
		// Given up, possibly just as the answer arrived.
		c.resetStream(st, http2.ErrCodeCancel, err)
		return nil, err
	}
	c.mu.Lock()
	got, err := st.gotResponse, st.dead
	c.mu.Unlock()
	if !got {
		return nil, err
	}
	return st, nil
}
func statusReason(code int) string {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return FailPolicyDenied
	case http.StatusBadRequest:
		return FailBadAuthority
	case http.StatusMethodNotAllowed:
		return FailBadMethod
	case http.StatusServiceUnavailable:
		return FailForward
	}
	return FailRejected
}

// contextReason names a failure caused by the caller's own context, which
// says more than the step it interrupted ("timeout" under a black hole).
func contextReason(ctx context.Context) string {
	if ctx.Err() == nil {
		return ""
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return FailTimeout
	}
	return FailCanceled
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
