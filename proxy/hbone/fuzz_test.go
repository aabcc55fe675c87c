package hbone

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Fuzzers of the server side of HBONE: everything a client can send after
// the mutual TLS handshake, through the real Server (serveConn: preface,
// SETTINGS, the frame reader, CONNECT validation, Authorize, Forward). Each
// input gets a fresh in-memory connection (net.Pipe) and a real TLS 1.3
// handshake, so a few hundred inputs a second per worker. Run one with
//
//	go test -run '^$' -fuzz '^FuzzServerFrames$' -fuzztime 1m ./proxy/hbone/
//
// (or `make fuzz`); plain `go test` runs the seeds in testdata/fuzz.

// fuzzCerts are made once per fuzz target: key generation is the slow part.
type fuzzCerts struct {
	ca           *testCA
	server       *tls.Certificate
	clientConfig *tls.Config
}

func newFuzzCerts(f *testing.F) *fuzzCerts {
	ca := newTestCA(f)
	cli := ca.leaf(f, clientID)
	return &fuzzCerts{
		ca:     ca,
		server: ca.leaf(f, serverID),
		clientConfig: &tls.Config{
			Certificates:       []tls.Certificate{*cli},
			InsecureSkipVerify: true,
			MinVersion:         tls.VersionTLS13,
			NextProtos:         []string{"h2"},
		},
	}
}

// Authorize's answers in the fuzz server, by port, so that every way of
// answering a CONNECT is reachable: 81 is denied by policy, 82 is a bad
// authority for the destination, 83 is an app that refuses (Forward fails
// before touching the stream). Anything else is admitted.
const (
	fuzzDeniedPort  = "81"
	fuzzBadPort     = "82"
	fuzzRefusedPort = "83"
)

// fuzzRun is one connection's server and what it saw.
type fuzzRun struct {
	t          *testing.T
	srv        *Server
	m          *Metrics
	goroutines int // before the connection

	mu         sync.Mutex
	authorized []string
	forwarded  []string
}

// checkAuthority is the server's contract: a malformed authority gets 400
// before Authorize or Forward ever see it. Well-formed is host:port with a
// non-empty host and a port of decimal digits in 1..65535.
func checkAuthority(t *testing.T, who, authority string) {
	host, port, err := net.SplitHostPort(authority)
	p, perr := strconv.Atoi(port)
	if err != nil || host == "" || perr != nil || p < 1 || p > 65535 || strings.Trim(port, "0123456789") != "" {
		t.Errorf("%s got malformed authority %q", who, authority)
	}
}

func (c *fuzzCerts) newRun(t *testing.T) *fuzzRun {
	r := &fuzzRun{t: t, m: new(Metrics), goroutines: runtime.NumGoroutine()}
	r.srv = &Server{
		Cert:    func(context.Context) (*tls.Certificate, error) { return c.server, nil },
		Roots:   func() *x509.CertPool { return c.ca.pool },
		Metrics: r.m,
		Authorize: func(peer, authority string) int {
			if peer != clientID {
				t.Errorf("Authorize got peer %q, want %q", peer, clientID)
			}
			checkAuthority(t, "Authorize", authority)
			r.mu.Lock()
			r.authorized = append(r.authorized, authority)
			r.mu.Unlock()
			_, port, _ := net.SplitHostPort(authority)
			switch port {
			case fuzzDeniedPort:
				return http.StatusUnauthorized
			case fuzzBadPort:
				return http.StatusBadRequest
			}
			return http.StatusOK
		},
		Forward: func(ctx context.Context, st net.Conn, peer, authority string) error {
			checkAuthority(t, "Forward", authority)
			r.mu.Lock()
			r.forwarded = append(r.forwarded, authority)
			r.mu.Unlock()
			if _, port, _ := net.SplitHostPort(authority); port == fuzzRefusedPort {
				return &StatusError{Code: http.StatusBadGateway}
			}
			// An app that answers, then reads what the client sends until
			// it ends or the stream dies.
			if _, err := st.Write([]byte("ok")); err != nil {
				return nil
			}
			io.Copy(io.Discard, st)
			return nil
		},
	}
	r.srv.init()
	return r
}

// serve runs the server side of one in-memory connection and returns the
// client's TLS end. done is closed when serveConn has returned.
func (r *fuzzRun) serve(cfg *tls.Config) (tc *tls.Conn, done chan struct{}) {
	t := r.t
	cli, srv := net.Pipe()
	r.srv.mu.Lock()
	r.srv.conns[srv] = nil // as Serve does; serveConn removes it
	r.srv.mu.Unlock()
	done = make(chan struct{})
	go func() {
		defer close(done)
		r.srv.serveConn(srv)
	}()
	tc = tls.Client(cli, cfg)
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return tc, done
}

// finish closes the client end and waits for the server to let go of the
// connection and of every stream: a server still busy a while after its
// client is gone is a hang.
func (r *fuzzRun) finish(tc *tls.Conn, done chan struct{}) {
	t := r.t
	tc.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server still serving the connection 10s after the client closed it")
	}
	// The reader starts a goroutine per stream (serveStream), which may
	// not even have run yet: wait for the goroutine count to come back to
	// what it was before the connection, which also catches any goroutine
	// the server leaves stuck.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > r.goroutines || r.m.StreamsOpened.Load() != r.m.StreamsClosed.Load() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("10s after the connection closed: %d goroutines (%d before), %d streams open\n%s",
				runtime.NumGoroutine(), r.goroutines, r.m.StreamsOpened.Load()-r.m.StreamsClosed.Load(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
	if !r.srv.drained() {
		t.Fatal("server not drained after its only connection closed")
	}
}

// clientStart is what every client sends first: the preface and SETTINGS.
func clientStart() []byte {
	var b bytes.Buffer
	b.WriteString(http2.ClientPreface)
	http2.NewFramer(&b, nil).WriteSettings()
	return b.Bytes()
}

// checkServerOutput parses everything the server wrote: it must be HTTP/2
// frames from the first byte to the last, starting with SETTINGS.
func checkServerOutput(t *testing.T, out []byte) {
	fr := http2.NewFramer(nil, bytes.NewReader(out))
	fr.SetMaxReadFrameSize(maxFrameSize)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for i := 0; ; i++ {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			return
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return // the connection was cut mid-frame (the client closed)
		}
		if err != nil {
			t.Fatalf("server frame #%d does not parse: %v", i, err)
		}
		if _, ok := f.(*http2.SettingsFrame); i == 0 && !ok {
			t.Fatalf("server's first frame is %v, not SETTINGS", f.Header().Type)
		}
	}
}

// frames builds a fuzz seed from frame writes.
func frames(write func(fr *http2.Framer, block func(...string) []byte)) []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func(kv ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	write(fr, block)
	return b.Bytes()
}

// FuzzServerFrames feeds arbitrary bytes to the server after a client's
// preface and SETTINGS: the server must neither panic nor hang, must hand
// Authorize and Forward only well-formed authorities, and must only ever
// write well-formed frames back.
func FuzzServerFrames(f *testing.F) {
	certs := newFuzzCerts(f)
	connect := []string{":method", "CONNECT", ":authority", "10.0.0.1:80"}
	seeds := [][]byte{
		// A CONNECT, data, end of stream.
		frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(connect...), EndHeaders: true})
			fr.WriteData(1, true, []byte("hello"))
		}),
		// Two streams, a PING, a WINDOW_UPDATE, a RST of the first.
		frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(connect...), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":method", "CONNECT", ":authority", "10.0.0.2:"+fuzzDeniedPort), EndHeaders: true})
			fr.WritePing(false, [8]byte{1})
			fr.WriteWindowUpdate(0, 1000)
			fr.WriteRSTStream(1, http2.ErrCodeCancel)
		}),
		// The header block split over CONTINUATION.
		frames(func(fr *http2.Framer, block func(...string) []byte) {
			b := block(connect...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:3]})
			fr.WriteContinuation(1, true, b[3:])
		}),
		// Not a CONNECT; a CONNECT with a :path; a bad authority.
		frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":method", "GET", ":authority", "x", ":path", "/", ":scheme", "https"), EndHeaders: true, EndStream: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":method", "CONNECT", ":authority", "10.0.0.1:80", ":path", "/"), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(":method", "CONNECT", ":authority", "10.0.0.1:+80"), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: block(":method", "CONNECT", ":authority", "10.0.0.1:"+fuzzRefusedPort), EndHeaders: true})
		}),
		// Padded DATA, padding longer than the frame.
		frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(connect...), EndHeaders: true})
			fr.WriteDataPadded(1, false, []byte("abc"), []byte{0, 0})
			fr.WriteRawFrame(http2.FrameData, http2.FlagDataPadded, 1, []byte{9, 'a'})
		}),
		// SETTINGS changing the initial window under an open stream, then
		// trailers.
		frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(connect...), EndHeaders: true})
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-trailer", "1"), EndHeaders: true, EndStream: true})
		}),
		// GOAWAY from the client, PRIORITY, an unknown frame type.
		frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(connect...), EndHeaders: true})
			fr.WritePriority(1, http2.PriorityParam{StreamDep: 0, Weight: 10})
			fr.WriteRawFrame(0x20, 0, 1, []byte("?"))
			fr.WriteGoAway(1, http2.ErrCodeNo, []byte("bye"))
		}),
		// Garbage instead of a frame header; a frame cut short.
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0, 0, 9, byte(http2.FramePing), 0, 0, 0, 0, 0, 1, 2},
		{},
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := certs.newRun(t)
		tc, done := r.serve(certs.clientConfig)
		var out bytes.Buffer
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			io.Copy(&out, tc)
		}()
		// The server may hang up half-way (GOAWAY): a failed write is
		// part of the game.
		tc.Write(append(clientStart(), in...))
		tc.CloseWrite()
		select {
		case <-readDone: // the server closed the connection
		case <-time.After(10 * time.Second):
			t.Fatal("server kept the connection open 10s after the client's close_notify")
		}
		r.finish(tc, done)
		checkServerOutput(t, out.Bytes())
	})
}

// connectAnswer is the server's answer to stream 1 as the client sees it.
type connectAnswer struct {
	status int           // :status of the response HEADERS, 0 if none
	rst    http2.ErrCode // RST_STREAM code, if reset without a response
	reset  bool
	goAway bool
}

// readAnswer reads frames until the server answers stream 1, then keeps
// reading (and dropping) what follows, as a client would: over net.Pipe a
// server whose peer stopped reading blocks in its writes until their
// deadline, which would only slow the fuzzer down.
func readAnswer(t *testing.T, tc *tls.Conn) (ans connectAnswer) {
	fr := http2.NewFramer(nil, tc)
	fr.SetMaxReadFrameSize(maxFrameSize)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer func() {
		tc.SetReadDeadline(time.Time{})
		go io.Copy(io.Discard, tc) // ends when finish closes tc
	}()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no answer to the CONNECT: %v", err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				code, _ := strconv.Atoi(f.PseudoValue("status"))
				return connectAnswer{status: code}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return connectAnswer{reset: true, rst: f.ErrCode}
			}
		case *http2.GoAwayFrame:
			return connectAnswer{goAway: true}
		}
	}
}

// plainToken: a header name (lower-case letters, digits, '-') or value
// (also upper case, '.', '/', ':') that the HTTP/2 framer accepts as is.
func plainToken(s string, value bool) bool {
	if s == "" {
		return value
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-'
		if value {
			ok = ok || r >= 'A' && r <= 'Z' || r == '.' || r == '/' || r == ':'
		}
		if !ok {
			return false
		}
	}
	return true
}

// printable: visible ASCII only, which any header value may carry.
func printable(s string) bool {
	for _, r := range s {
		if r <= ' ' || r >= 0x7f {
			return false
		}
	}
	return true
}

// FuzzServerConnect sends one CONNECT built from the fuzz input (method,
// authority, one extra header, a body) and checks the server's answer
// against the rules: 200 only for a CONNECT with a well-formed authority
// (and Forward got exactly that authority), 405 for other methods, 400 for
// a malformed authority, a stream error for a malformed request, and a
// well-formed CONNECT with a plain extra header is never refused.
func FuzzServerConnect(f *testing.F) {
	certs := newFuzzCerts(f)
	f.Add("CONNECT", "10.0.0.1:80", "", "", []byte("hello"), true)
	f.Add("CONNECT", "[fd00::1]:8080", "x-forwarded-for", "10.0.0.9", []byte(nil), false)
	f.Add("CONNECT", "10.0.0.1:"+fuzzDeniedPort, "", "", []byte("x"), true)
	f.Add("CONNECT", "10.0.0.1:"+fuzzBadPort, "", "", []byte(nil), true)
	f.Add("CONNECT", "10.0.0.1:"+fuzzRefusedPort, "", "", []byte(nil), false)
	f.Add("CONNECT", "10.0.0.1", "", "", []byte(nil), false)
	f.Add("CONNECT", "10.0.0.1:0", "", "", []byte(nil), false)
	f.Add("CONNECT", "10.0.0.1:65536", "", "", []byte(nil), false)
	f.Add("CONNECT", "10.0.0.1:+80", "", "", []byte(nil), false)
	f.Add("CONNECT", ":80", "", "", []byte(nil), false)
	f.Add("CONNECT", "", "", "", []byte(nil), false)
	f.Add("CONNECT", "10.0.0.1:80", ":path", "/", []byte(nil), false)
	f.Add("CONNECT", "10.0.0.1:80", "X-Upper", "1", []byte(nil), false)
	f.Add("GET", "10.0.0.1:80", "", "", []byte(nil), true)
	f.Add("", "10.0.0.1:80", "", "", []byte(nil), true)
	f.Add("connect", "10.0.0.1:80", "", "", []byte(nil), true)
	f.Fuzz(func(t *testing.T, method, authority, name, value string, body []byte, end bool) {
		r := certs.newRun(t)
		tc, done := r.serve(certs.clientConfig)
		defer r.finish(tc, done)

		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		if method != "" {
			enc.WriteField(hpack.HeaderField{Name: ":method", Value: method})
		}
		if authority != "" {
			enc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
		}
		if name != "" {
			enc.WriteField(hpack.HeaderField{Name: name, Value: value})
		}
		var req bytes.Buffer
		req.Write(clientStart())
		fr := http2.NewFramer(&req, nil)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: end && len(body) == 0})
		if len(body) > 0 {
			fr.WriteData(1, end, body)
		}
		// Written from a goroutine: the server may answer (and block on
		// net.Pipe) before it has read everything.
		go tc.Write(req.Bytes())
		ans := readAnswer(t, tc)

		r.mu.Lock()
		forwarded := append([]string(nil), r.forwarded...)
		authorized := append([]string(nil), r.authorized...)
		r.mu.Unlock()
		host, port, splitErr := net.SplitHostPort(authority)
		p, atoiErr := strconv.Atoi(port)
		wellFormed := splitErr == nil && host != "" && atoiErr == nil && p >= 1 && p <= 65535 && strings.Trim(port, "0123456789") == ""
		switch {
		case ans.status == http.StatusOK:
			if method != http.MethodConnect || !wellFormed {
				t.Fatalf("200 for %q %q", method, authority)
			}
			if len(forwarded) != 1 || forwarded[0] != authority {
				t.Fatalf("200 for %q, but Forward got %q", authority, forwarded)
			}
		case ans.status == http.StatusMethodNotAllowed:
			if method == http.MethodConnect || method == "" {
				t.Fatalf("405 for method %q", method)
			}
		case ans.status == http.StatusBadRequest:
			if method != http.MethodConnect || (wellFormed && port != fuzzBadPort) {
				t.Fatalf("400 for %q %q", method, authority)
			}
		case ans.status == http.StatusUnauthorized:
			if port != fuzzDeniedPort || len(authorized) != 1 || authorized[0] != authority {
				t.Fatalf("401 for %q, Authorize got %q", authority, authorized)
			}
		case ans.status == http.StatusBadGateway:
			if port != fuzzRefusedPort {
				t.Fatalf("502 for %q", authority)
			}
		case ans.reset || ans.goAway:
		default:
			t.Fatalf("answer %+v to %q %q", ans, method, authority)
		}
		if ans.status != http.StatusOK && ans.status != http.StatusBadGateway && len(forwarded) != 0 {
			t.Fatalf("answered %+v, yet Forward got %q", ans, forwarded)
		}
		// A well-formed CONNECT whose extra header is plain lower-case
		// text must reach Authorize: a refusal here is a false positive
		// of the server's validation.
		plain := name == "" || (plainToken(name, false) && plainToken(value, true) && name != "connection" && name != "te")
		if method == http.MethodConnect && wellFormed && plain && printable(authority) && (ans.reset || ans.goAway) {
			t.Fatalf("well-formed CONNECT %q (extra %q: %q) answered %+v", authority, name, value, ans)
		}
	})
}
