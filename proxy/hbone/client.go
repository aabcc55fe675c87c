package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
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

// errStreamReset is what a stream's Write returns once the HTTP/2 stream
// underneath is gone (reset by the peer, or the connection died). x/net
// only tells us by closing the request body, not why.
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
	t        *http2.Transport

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
	tc   *tls.Conn
	cc   *http2.ClientConn
	dead atomic.Bool // set when the TLS connection closes
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
		d.t = &http2.Transport{
			// Without this x/net adds "accept-encoding: gzip" to the CONNECT
			// and would transparently gunzip a tunnel whose server answered
			// with a content-encoding.
			DisableCompression: true,
			ReadIdleTimeout:    pingAfter,
			PingTimeout:        pingTimeout,
			WriteByteTimeout:   writeByteTimeout,
			IdleConnTimeout:    idleConnTimeout,
		}
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
func (d *Dialer) Connect(ctx context.Context, srcIdentity, hboneAddr, authority, wantServerIdentity string) (net.Conn, error) {
	d.init()
	c, reason, err := d.connect(ctx, poolKey{srcIdentity, hboneAddr}, authority, wantServerIdentity)
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
		c.cc.Close()
	}
	return nil
}

func (d *Dialer) connect(ctx context.Context, key poolKey, authority, want string) (net.Conn, string, error) {
	if _, _, err := net.SplitHostPort(authority); err != nil {
		return nil, FailBadAuthority, fmt.Errorf("invalid authority: %w", err)
	}
	for attempt := 0; ; attempt++ {
		c, fresh, reason, err := d.getConn(ctx, key, want)
		if err != nil {
			return nil, reason, err
		}
		st, reason, err := d.open(ctx, c, authority)
		if err == nil {
			return st, "", nil
		}
		if reason == FailStream && !fresh && attempt == 0 && ctx.Err() == nil {
			// A pooled connection can die between the liveness check and
			// the request (the server restarted, a middlebox reset it).
			// Nothing of the caller's has been sent yet, so retry once on
			// a fresh connection, as x/net's own Transport does. At worst
			// the server got the first CONNECT and dialled the app before
			// the connection died: the app sees one aborted connection,
			// as it would from a TCP client's retry.
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
		if err == nil && d.closed {
			c.cc.Close()
			c, reason, err = nil, FailDial, ErrDialerClosed
		}
		reserved := false
		if err == nil {
			d.pool[key] = append(d.pool[key], c)
			d.all[c] = struct{}{}
			reserved = c.cc.ReserveNewRequest()
		}
		call.reason, call.err = reason, err
		close(call.done)
		d.mu.Unlock()
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
// It deliberately avoids ClientConn.State, which takes the connection's write
// lock and so can block behind a write to a stalled peer while d.mu is held.
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
		if c.cc.ReserveNewRequest() {
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
	c.cc.SetDoNotReuse()
	if st := c.cc.State(); st.StreamsActive == 0 && st.StreamsReserved == 0 && st.StreamsPending == 0 {
		c.cc.Close()
	}
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
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, handshakeReason(err), fmt.Errorf("tls handshake: %w", err)
	}
	if err := checkNegotiated(tc.ConnectionState()); err != nil {
		raw.Close()
		return nil, FailProtocol, err
	}

	c := &clientConn{key: key, peer: peer, tc: tc}
	// The connection counts as opened only once the server accepted us,
	// and as closed only if it was opened; the two can race.
	const pending, opened, closed = 0, 1, 2
	var state atomic.Int32
	tracked := &trackedConn{Conn: tc, first: make(chan struct{}), onClose: func() {
		c.dead.Store(true)
		if !state.CompareAndSwap(pending, closed) && state.CompareAndSwap(opened, closed) {
			d.Metrics.connClosed()
		}
		// Not inline: x/net may close the connection from paths that hold
		// its own locks, and d.mu is taken around calls into it.
		go d.forget(c)
	}}
	cc, err := d.t.NewClientConn(tracked) // sends our preface and SETTINGS
	if err != nil {
		tracked.Close()
		return nil, FailProtocol, fmt.Errorf("http2 preface: %w", err)
	}
	// In TLS 1.3 the client's handshake is over before the server has even
	// looked at our certificate; a refusal arrives as an alert on the first
	// read. Left to x/net, that read races the CONNECT, which then fails
	// with "client conn could not be established" or "broken pipe", and
	// the reason is lost. So wait for the server's first bytes (its
	// SETTINGS, which it sends unprompted once it has accepted us): one
	// round trip per new connection, and no stream is ever put on a
	// connection the server refused.
	select {
	case <-tracked.first:
	case <-hctx.Done():
		cc.Close()
		return nil, FailTLSHandshake, fmt.Errorf("waiting for the server's HTTP/2 preface: %w", hctx.Err())
	}
	if err := tracked.firstErr; err != nil {
		cc.Close()
		if isTLSAlert(err) {
			return nil, FailTLSRejected, fmt.Errorf("server refused the connection: %w", err)
		}
		return nil, FailProtocol, fmt.Errorf("reading the server's HTTP/2 preface: %w", err)
	}
	if !state.CompareAndSwap(pending, opened) {
		return nil, FailStream, errors.New("connection lost right after the handshake")
	}
	d.Metrics.connOpened()
	c.cc = cc
	return c, "", nil
}

// open sends the CONNECT on c (which has a stream reserved) and waits for
// the answer.
func (d *Dialer) open(ctx context.Context, c *clientConn, authority string) (net.Conn, string, error) {
	st := newStreamConn(c.tc.LocalAddr(), c.tc.RemoteAddr())
	// x/net ties a request's context to the whole stream, body included,
	// not just to the exchange of headers; a caller's dial timeout would
	// reset the tunnel when it fires. So the stream gets a context of its
	// own, and the caller's context cancels it only until the response.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	req := (&http.Request{
		Method: http.MethodConnect,
		// A CONNECT has no :scheme or :path, only :authority, which x/net
		// takes from Host.
		URL:    &url.URL{Host: authority},
		Host:   authority,
		Header: http.Header{},
		// The request body is the upload direction: x/net reads it for as
		// long as the stream lives, sending each Write as DATA and EOF
		// (CloseWrite) as END_STREAM. -1: length unknown, no
		// content-length header.
		Body:          pipeBody{st.out},
		ContentLength: -1,
	}).WithContext(sctx)

	d.Metrics.streamOpened()
	res, err := c.cc.RoundTrip(req)
	if !stop() && err == nil {
		// The caller gave up just as the answer arrived.
		res.Body.Close()
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		d.Metrics.streamClosed()
		reason := FailStream
		if isTLSAlert(err) {
			reason = FailTLSRejected
		}
		return nil, reason, err
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		cancel()
		d.Metrics.streamClosed()
		return nil, statusReason(res.StatusCode), &StatusError{Code: res.StatusCode}
	}

	st.onWrite = d.Metrics.sent
	var once sync.Once
	st.onClose = func() error {
		once.Do(func() {
			// Resets the stream (RST_STREAM CANCEL) unless the server has
			// already ended its side; then cancel whatever is left.
			res.Body.Close()
			cancel()
			d.Metrics.streamClosed()
		})
		return nil
	}
	go pump(res.Body, st.in, d.Metrics.received)
	return st, "", nil
}

// pipeBody is the request body x/net reads: the stream's upload pipe.
type pipeBody struct{ p *pipe }

func (b pipeBody) Read(x []byte) (int, error) { return b.p.read(x, nil) }

// Close is x/net telling us the stream will send no more: after EOF, or
// because it was reset. Writes fail from then on.
func (b pipeBody) Close() error {
	b.p.closeRead(errStreamReset)
	return nil
}

// pump copies src into dst until either ends, then closes dst's write side
// with src's outcome (clean on EOF). A failed delivery (dst's reader went
// away) stops it without closing.
func pump(src io.Reader, dst *pipe, count func(int)) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			count(n)
			if _, werr := dst.write(buf[:n], nil); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				dst.closeWrite(nil)
			} else {
				dst.closeWrite(err)
			}
			return
		}
	}
}

// trackedConn counts the TLS connection's close, marks it dead the moment
// x/net gives up on it, and reports how its first read went.
type trackedConn struct {
	*tls.Conn
	once    sync.Once
	onClose func()

	firstOnce sync.Once
	first     chan struct{} // closed by the first Read that returns data or an error
	firstErr  error         // that Read's error if it returned no data
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 || err != nil {
		c.firstOnce.Do(func() {
			if n == 0 {
				c.firstErr = err
			}
			close(c.first)
		})
	}
	return n, err
}

func (c *trackedConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.onClose()
		// tls.Conn.Close sends close_notify and can block for seconds on a
		// dead peer. x/net force-closes the socket after 250ms, but only
		// when handed a *tls.Conn itself, which this wrapper hides; so
		// repeat that here.
		t := time.AfterFunc(250*time.Millisecond, func() { c.Conn.NetConn().Close() })
		defer t.Stop()
		err = c.Conn.Close()
	})
	return err
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
