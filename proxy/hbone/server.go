package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
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
	// Caveat: x/net's server cannot half-close. It sends END_STREAM only
	// when the handler returns and then refuses the rest of the request
	// body (RST_STREAM NO_ERROR). So once Forward half-closes its write
	// side, Reads return EOF and anything the client sends afterwards is
	// dropped. A server app closing first thus reaches the client as EOF
	// (what keep-alive clients need to notice), at the cost of the rare
	// protocol that keeps uploading after the server's FIN.
	Forward func(ctx context.Context, stream net.Conn, peer, authority string) error
	// Metrics, if set, counts inbound connections, streams, bytes and
	// failures.
	Metrics *Metrics

	initOnce   sync.Once
	initErr    error
	h1         *http.Server // carries x/net's graceful-shutdown hook only
	h2         *http2.Server
	baseCtx    context.Context
	cancelBase context.CancelFunc

	mu           sync.Mutex
	shuttingDown bool
	listeners    map[net.Listener]struct{}
	conns        map[net.Conn]bool // raw conn → past its handshake and serving
	streams      map[*serverStream]struct{}
}

func (s *Server) init() error {
	s.initOnce.Do(func() {
		s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]bool{}
		s.streams = map[*serverStream]struct{}{}
		// Failures are counted, not logged: x/net's log lines (a client
		// that went away mid-preface) are noise under fault injection.
		s.h1 = &http.Server{ErrorLog: log.New(io.Discard, "", 0)}
		s.h2 = &http2.Server{
			// The per-connection window must be well above the per-stream
			// one: x/net returns connection credit only as a handler reads,
			// so with the defaults (1 MiB each) one stream whose app stopped
			// reading stalls every stream sharing the connection.
			MaxUploadBufferPerStream:     1 << 20,
			MaxUploadBufferPerConnection: 32 << 20,
			ReadIdleTimeout:              pingAfter,
			PingTimeout:                  pingTimeout,
			WriteByteTimeout:             writeByteTimeout,
		}
		// ConfigureServer is the only way to reach x/net's graceful
		// shutdown (GOAWAY, then close once streams end): it hooks it to
		// h1.Shutdown. h1 never serves anything itself.
		s.initErr = http2.ConfigureServer(s.h1, s.h2)
	})
	return s.initErr
}

// Serve accepts connections on ln and serves each (TLS, then h2) on its own
// goroutine. It returns when ln is closed: ErrServerClosed after Shutdown,
// otherwise the accept error.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.init(); err != nil {
		return err
	}
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
		s.conns[raw] = false
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
	if err := s.init(); err != nil {
		return err
	}
	s.mu.Lock()
	s.shuttingDown = true
	for ln := range s.listeners {
		ln.Close()
	}
	for raw, serving := range s.conns {
		if !serving {
			raw.Close()
		}
	}
	s.mu.Unlock()

	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for {
		// Repeated on every tick: x/net only reaches connections already in
		// its registry, and a connection whose handshake finished just as
		// Shutdown began registers a moment later. Each connection sends
		// its GOAWAY once.
		s.goAway()
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

func (s *Server) goAway() {
	// h1 tracks no connections of its own, so its Shutdown returns at once
	// after starting the registered hooks (x/net's GOAWAY) on goroutines.
	_ = s.h1.Shutdown(context.Background())
}

func (s *Server) drained() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns) == 0 && len(s.streams) == 0
}

func (s *Server) forceClose() {
	s.mu.Lock()
	streams := make([]*serverStream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	// Streams first, so Forward learns it was the drain deadline rather
	// than the reset that closing the connections causes a moment later.
	for _, st := range streams {
		s.Metrics.Fail(FailDraining)
		st.abort(errDraining)
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

// connInfo travels to the handler in the request context.
type connInfo struct {
	peer          string
	local, remote net.Addr
}

type connInfoKey struct{}

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
	// Any certificate is required here and the chain is checked by
	// VerifyPeerCertificate: roots come from Roots per handshake, and the
	// failure reason (expired, untrusted, no identity) gets counted.
	cfg.ClientAuth = tls.RequireAnyClientCert
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
	tc := tls.Server(raw, cfg)
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

	s.mu.Lock()
	if s.shuttingDown {
		// Handshake finished after Shutdown began: refused like a new one.
		s.mu.Unlock()
		raw.Close()
		return
	}
	s.conns[raw] = true
	s.mu.Unlock()

	s.Metrics.connOpened()
	defer s.Metrics.connClosed()
	ci := &connInfo{peer: peer, local: tc.LocalAddr(), remote: tc.RemoteAddr()}
	// ServeConn is marked deprecated in favour of net/http's server, but
	// that one cannot serve a connection we accepted and handshook
	// ourselves. It closes tc when it returns.
	s.h2.ServeConn(tc, &http2.ServeConnOpts{
		Context:    context.WithValue(s.baseCtx, connInfoKey{}, ci),
		BaseConfig: s.h1,
		Handler:    http.HandlerFunc(s.handle),
	})
}

// authorize answers the status for a CONNECT before any stream exists.
func (s *Server) authorize(peer, authority string) int {
	host, port, err := net.SplitHostPort(authority)
	if err != nil || host == "" {
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

// serverStream is one accepted CONNECT as Forward sees it. It is released
// twice, by the handler and by Forward's goroutine, and counted closed when
// both are done: the handler can end first (Forward half-closed) while
// Forward still drains the app.
type serverStream struct {
	*streamConn
	cancel    context.CancelFunc
	started   chan struct{}
	startOnce sync.Once
	refs      atomic.Int32
}

func (ss *serverStream) start() { ss.startOnce.Do(func() { close(ss.started) }) }

// abort fails both directions and Forward's context.
func (ss *serverStream) abort(cause error) {
	ss.in.closeWrite(cause)
	ss.out.closeRead(cause)
	ss.cancel()
}

// forwardError marks the end of the response direction as Forward failing,
// so the handler resets the stream instead of ending it cleanly.
type forwardError struct{ err error }

func (e *forwardError) Error() string { return "forward: " + e.err.Error() }
func (e *forwardError) Unwrap() error { return e.err }

func (s *Server) release(ss *serverStream) {
	if ss.refs.Add(-1) != 0 {
		return
	}
	ss.cancel()
	s.mu.Lock()
	delete(s.streams, ss)
	s.mu.Unlock()
	s.Metrics.streamClosed()
}

// handle serves one HTTP/2 stream.
func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	ci, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if ci == nil {
		panic(http.ErrAbortHandler) // cannot happen: every conn carries one
	}
	s.Metrics.streamOpened()
	if r.Method != http.MethodConnect {
		s.Metrics.Fail(FailBadMethod)
		s.Metrics.streamClosed()
		w.Header().Set("Allow", http.MethodConnect)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if s.isShuttingDown() {
		// This connection missed the GOAWAY (see Shutdown); a response
		// carrying "Connection: close" makes x/net send one now. The
		// stream itself is served: the client sent it in good faith and
		// the drain deadline bounds it.
		w.Header().Set("Connection", "close")
	}
	// For CONNECT, x/net puts :authority in Host (and URL.Host).
	authority := r.Host
	if code := s.authorize(ci.peer, authority); code != http.StatusOK {
		s.Metrics.Fail(statusReason(code))
		s.Metrics.streamClosed()
		w.WriteHeader(code)
		return
	}
	if s.Forward == nil {
		s.Metrics.Fail(FailForward)
		s.Metrics.streamClosed()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}

	ctx, cancel := context.WithCancel(s.baseCtx)
	ss := &serverStream{
		streamConn: newStreamConn(ci.local, ci.remote),
		cancel:     cancel,
		started:    make(chan struct{}),
	}
	ss.onFirstIO = ss.start
	ss.refs.Store(2)
	s.mu.Lock()
	s.streams[ss] = struct{}{}
	s.mu.Unlock()

	// While the handler runs, r.Context ends when the client resets the
	// stream or the connection dies: pass that on. After the handler
	// returns x/net cancels it anyway, which must not abort a Forward that
	// is still delivering the client's last bytes.
	var handlerDone atomic.Bool
	defer handlerDone.Store(true)
	stopWatch := context.AfterFunc(r.Context(), func() {
		if !handlerDone.Load() {
			ss.abort(errStreamReset)
		}
	})
	defer stopWatch()

	fwdDone := make(chan error, 1)
	go func() {
		err := s.Forward(ctx, ss, ci.peer, authority)
		if err != nil && isClosed(ss.started) {
			ss.out.closeWrite(&forwardError{err})
		} else {
			ss.out.closeWrite(nil)
		}
		ss.in.closeRead(nil)
		fwdDone <- err
		s.release(ss)
	}()

	select {
	case <-ss.started:
	case err := <-fwdDone:
		if err != nil && !isClosed(ss.started) {
			// Forward gave up before any byte flowed: the app is not there.
			code := http.StatusServiceUnavailable
			var se *StatusError
			if errors.As(err, &se) && se.Code >= 400 && se.Code <= 599 {
				code = se.Code
			}
			s.Metrics.Fail(statusReason(code))
			w.WriteHeader(code)
			s.release(ss)
			return
		}
	}

	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		ss.abort(errStreamReset)
		s.release(ss)
		return
	}

	// Upload: request body → Forward's reads. The handler must not return
	// while this goroutine is inside r.Body.Read (net/http forbids reading
	// the body after the handler), hence bodyMu; closing the body first
	// unblocks a Read in progress.
	var (
		bodyMu      sync.Mutex
		bodyDone    bool
		closingBody atomic.Bool
	)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			bodyMu.Lock()
			n, err := 0, io.EOF
			if !bodyDone {
				n, err = r.Body.Read(buf)
			}
			bodyMu.Unlock()
			if n > 0 {
				s.Metrics.received(n)
				if _, werr := ss.in.write(buf[:n], nil); werr != nil {
					return // Forward closed its read side
				}
			}
			switch {
			case err == nil:
				continue
			case err == io.EOF || closingBody.Load():
				// The client half-closed, or the response ended first
				// and x/net refuses the rest (see Forward's caveat).
				ss.in.closeWrite(nil)
			default:
				// The client reset the stream or the connection died.
				// Abort before Forward sees the error, so that its
				// failing is not mistaken for a forward failure.
				ss.abort(errStreamReset)
			}
			return
		}
	}()

	// Download: Forward's writes → response, flushed per write so bytes
	// flow as they come rather than when a buffer fills.
	buf := make([]byte, 32<<10)
	var endErr error
	for {
		n, err := ss.out.read(buf, nil)
		if n > 0 {
			_, werr := w.Write(buf[:n])
			if werr == nil {
				werr = rc.Flush()
			}
			if werr != nil {
				ss.abort(errStreamReset)
				endErr = werr
				break
			}
			s.Metrics.sent(n)
		}
		if err != nil {
			if err != io.EOF {
				endErr = err
			}
			break
		}
	}

	closingBody.Store(true)
	r.Body.Close()
	bodyMu.Lock()
	bodyDone = true
	bodyMu.Unlock()
	handlerDone.Store(true)
	s.release(ss)

	var fe *forwardError
	if errors.As(endErr, &fe) {
		s.Metrics.Fail(FailForward)
		// Resets the stream (RST_STREAM) instead of a clean END_STREAM.
		panic(http.ErrAbortHandler)
	}
}
