package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var (
	// ErrServerClosed is what Serve returns once Shutdown has begun.
	ErrServerClosed = errors.New("hbone: server closed")
	// errDraining is what Forward's stream reads and writes return when
	// Shutdown's deadline cuts the stream.
	errDraining = errors.New("hbone: server shut down before the stream finished")
)

// drainPoll is how often Shutdown checks whether everything has drained.
const drainPoll = 25 * time.Millisecond

// Server accepts HBONE: mutual TLS 1.3 with h2, then CONNECT streams that are
// authorized and handed to Forward. Set the exported fields, then call Serve;
// it must not be copied after first use.
type Server struct {
	// Cert returns the DESTINATION workload's certificate, per handshake.
	Cert func(ctx context.Context) (*tls.Certificate, error)
	// Roots returns the bundle client chains must verify against, per
	// handshake.
	Roots func() *x509.CertPool
	// Authorize decides a CONNECT: peer is the verified client SPIFFE
	// identity; return 200 to proceed, 401 to deny by policy, 400 for a bad
	// authority (e.g. not the destination's IP). Any other code is sent as
	// is. nil admits every authenticated peer. A malformed authority gets
	// 400 before Authorize is asked.
	Authorize func(peer, authority string) int
	// Forward carries the stream to the application once authorized (the
	// node proxy dials the app inside the pod); it must return when done,
	// and should give up when ctx is done (the client reset the stream, or
	// Shutdown's deadline passed).
	//
	// The 200 goes out on the stream's first Read or Write, so Forward
	// should dial the app first: returning an error before touching the
	// stream answers 503 (or the Code of a *StatusError in the chain), as
	// ztunnel does when the app refuses. Returning an error after data
	// flowed resets the stream so the client sees an error, not a clean
	// EOF. CloseWrite (or Close, or returning) ends the response with
	// END_STREAM; see CloseWrite's caveat below.
	//
	// Caveat: once Forward half-closes its write side, Reads return EOF
	// (after what had already arrived) and anything the client sends
	// afterwards is dropped (the client is told to stop with RST_STREAM
	// NO_ERROR). A server app closing first thus reaches the client as EOF
	// (what keep-alive clients need to notice), at the cost of the rare
	// protocol that keeps uploading after the server's FIN.
	Forward func(ctx context.Context, stream net.Conn, peer, authority string) error
	// Metrics, if set, counts inbound connections, streams, bytes and
	// failures.
	Metrics *Metrics

	initOnce   sync.Once
	baseCtx    context.Context
	cancelBase context.CancelFunc

	mu           sync.Mutex
	shuttingDown bool
	listeners    map[net.Listener]struct{}
	conns        map[net.Conn]*conn // raw conn → its HTTP/2 connection once serving (nil while handshaking)
	streams      map[*stream]struct{}
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]*conn{}
		s.streams = map[*stream]struct{}{}
	})
}

// Serve accepts connections on ln and serves each (TLS, then h2) on its own
// goroutine. It returns when ln is closed: ErrServerClosed after Shutdown,
// otherwise the accept error.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.shuttingDown {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.isShuttingDown() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Anything else (EMFILE, ECONNABORTED) is taken as transient,
			// as net/http does: back off and keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.shuttingDown {
			s.mu.Unlock()
			raw.Close()
			continue
		}
		s.conns[raw] = nil
		s.mu.Unlock()
		go s.serveConn(raw)
	}
}

// Shutdown stops accepting (listeners close, so new connections are refused
// and handshakes in progress are cut), sends every connection a GOAWAY so
// clients open no new streams on it, and waits for the open streams to
// finish. At ctx's deadline it closes whatever is left, counting each cut
// stream as "draining", and returns ctx's error; nil if everything drained.
// A Server is not reusable after Shutdown (a restarted proxy makes a new
// one).
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.shuttingDown = true
	for ln := range s.listeners {
		ln.Close()
	}
	var serving []*conn
	for raw, c := range s.conns {
		if c == nil {
			raw.Close()
		} else {
			serving = append(serving, c)
		}
	}
	s.mu.Unlock()
	// A connection registers as serving only while shuttingDown is false
	// (see serveConn), so this reaches every one of them.
	for _, c := range serving {
		c.goAway()
	}

	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		if s.drained() {
			return nil
		}
		select {
		case <-ctx.Done():
			s.forceClose()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes everything at once, as a Shutdown whose deadline has passed.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func (s *Server) drained() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns) == 0 && len(s.streams) == 0
}

func (s *Server) forceClose() {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	// Streams first, so Forward learns it was the drain deadline rather
	// than the loss of the connection a moment later.
	for _, st := range streams {
		s.Metrics.Fail(FailDraining)
		st.c.endStream(st, errDraining, true, http2.ErrCodeCancel)
	}
	s.cancelBase()
	s.mu.Lock()
	for raw := range s.conns {
		raw.Close()
	}
	s.mu.Unlock()
}

func (s *Server) isShuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shuttingDown
}

func (s *Server) serveConn(raw net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, raw)
		s.mu.Unlock()
	}()

	// reason records why a handshake failed where crypto/tls's error loses
	// it (what the ClientHello lacked).
	var peer, reason string
	cfg := tlsBase()
	// A certificate is required, but by VerifyPeerCertificate (verifyPeer
	// refuses an empty chain), not by crypto/tls: roots come from Roots per
	// handshake, and the failure reason (expired, untrusted, no identity)
	// gets counted. With RequireAnyClientCert crypto/tls would fail a
	// client without a certificate before verifyPeer runs, and it would
	// be counted as a generic tls_handshake instead of no_identity.
	cfg.ClientAuth = tls.RequestClientCert
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		// Refuse a client that cannot do TLS 1.3 + h2 here, where we can
		// still say why, rather than via a generic handshake failure.
		if !slices.Contains(hello.SupportedVersions, tls.VersionTLS13) || !slices.Contains(hello.SupportedProtos, "h2") {
			reason = FailProtocol
			return nil, fmt.Errorf("client offers versions %x, ALPN %q; want TLS 1.3 and h2", hello.SupportedVersions, hello.SupportedProtos)
		}
		return nil, nil
	}
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if s.Cert == nil {
			return nil, &certError{FailCert, errors.New("no certificate source (Server.Cert is nil)")}
		}
		c, err := s.Cert(hello.Context())
		if err == nil && c == nil {
			err = errors.New("no certificate")
		}
		if err != nil {
			return nil, &certError{FailCert, err}
		}
		return c, nil
	}
	cfg.VerifyPeerCertificate = func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		var roots *x509.CertPool
		if s.Roots != nil {
			roots = s.Roots()
		}
		id, err := verifyPeer(rawCerts, roots, time.Now())
		if err != nil {
			return err
		}
		peer = id
		return nil
	}
	tc := tls.Server(&corkConn{Conn: raw}, cfg)
	hctx, cancel := context.WithTimeout(s.baseCtx, handshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err == nil {
		err = checkNegotiated(tc.ConnectionState())
		if err != nil {
			reason = FailProtocol
		}
	}
	if err != nil {
		if reason == "" {
			reason = handshakeReason(err)
		}
		s.Metrics.Fail(reason)
		raw.Close()
		return
	}

	c := newConn(tc, raw, true, s.Metrics)
	s.mu.Lock()
	if s.shuttingDown {
		// Handshake finished after Shutdown began: refused like a new one.
		s.mu.Unlock()
		raw.Close()
		return
	}
	s.conns[raw] = c
	s.mu.Unlock()

	s.Metrics.connOpened()
	defer s.Metrics.connClosed()
	ci := &connInfo{peer: peer}
	c.onRequest = func(st *stream, method, authority string, ok bool) {
		go s.serveStream(ci, st, method, authority, ok)
	}
	// The client's preface and SETTINGS must come within the handshake
	// timeout, like the handshake itself.
	raw.SetReadDeadline(time.Now().Add(handshakeTimeout))
	err = c.start()
	if err == nil {
		err = c.readPreface()
	}
	if err == nil {
		err = c.readSettings()
	}
	if err != nil {
		var ce *connError
		if errors.As(err, &ce) {
			c.fail(err) // counts it, and tells the client
		} else {
			c.fail(fmt.Errorf("reading the client's HTTP/2 preface: %w", err))
		}
		return
	}
	raw.SetReadDeadline(time.Time{})
	c.run()
}

// connInfo is what every stream of a connection shares.
type connInfo struct {
	peer string
}

// authorize answers the status for a CONNECT before any stream exists.
func (s *Server) authorize(peer, authority string) int {
	host, port, err := net.SplitHostPort(authority)
	if err != nil || host == "" {
		return http.StatusBadRequest
	}
	// Digits only: Atoi also takes "+80", which no dialer would resolve
	// to the same target as "80" (found by FuzzServerConnect).
	if strings.Trim(port, "0123456789") != "" {
		return http.StatusBadRequest
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return http.StatusBadRequest
	}
	if s.Authorize == nil {
		return http.StatusOK
	}
	return s.Authorize(peer, authority)
}

// serveStream answers one request and, for an authorized CONNECT, runs
// Forward on it. It runs on a goroutine of its own: the connection's reader
// must never wait for Authorize or Forward.
func (s *Server) serveStream(ci *connInfo, st *stream, method, authority string, ok bool) {
	s.Metrics.streamOpened()
	defer s.Metrics.streamClosed()
	if !ok {
		s.Metrics.Fail(FailProtocol)
		st.c.resetStream(st, http2.ErrCodeProtocol, errProtocol)
		return
	}
	if method != http.MethodConnect {
		s.Metrics.Fail(FailBadMethod)
		st.respond(http.StatusMethodNotAllowed, hpack.HeaderField{Name: "allow", Value: http.MethodConnect})
		return
	}
	if code := s.authorize(ci.peer, authority); code != http.StatusOK {
		s.Metrics.Fail(statusReason(code))
		st.respond(code)
		return
	}
	if s.Forward == nil {
		s.Metrics.Fail(FailForward)
		st.respond(http.StatusServiceUnavailable)
		return
	}

	ctx, cancel := context.WithCancel(s.baseCtx)
	defer cancel()
	// Nothing else writes for this stream before Forward runs, so no lock.
	st.respPending = true
	st.c.mu.Lock()
	// The client reset the stream or the connection died: Forward should
	// give up.
	st.onDead = cancel
	dead := st.dead != nil
	st.c.mu.Unlock()
	if dead {
		return
	}
	s.mu.Lock()
	s.streams[st] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
	}()

	err := s.Forward(ctx, st, ci.peer, authority)

	st.c.mu.Lock()
	gone := st.dead != nil
	ended := st.sentEnd
	st.c.mu.Unlock()
	switch {
	case err != nil && !st.started.Load():
		// Forward gave up before any byte flowed: the app is not there.
		code := http.StatusServiceUnavailable
		var se *StatusError
		if errors.As(err, &se) && se.Code >= 400 && se.Code <= 599 {
			code = se.Code
		}
		s.Metrics.Fail(statusReason(code))
		st.respond(code)
	case err != nil && !gone && !ended:
		// Resets the stream, so the client sees an error rather than a
		// clean EOF.
		s.Metrics.Fail(FailForward)
		st.c.resetStream(st, http2.ErrCodeConnect, errStreamReset)
	default:
		st.sendEnd()
	}
	st.in.closeRead(nil)
}
