package hbone

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// This file is a lean HTTP/2 implementation specialised for CONNECT tunnels,
// used by both ends instead of x/net's Transport and Server. It is still
// plain HTTP/2 on the wire (preface, SETTINGS, HEADERS, DATA, WINDOW_UPDATE,
// RST_STREAM, PING, GOAWAY; x/net's Framer and hpack do the encoding), but
// its shape follows what a tunnel needs rather than what a general HTTP
// stack needs:
//
//   - One reader goroutine per connection, which copies DATA payloads
//     straight from the TLS connection into the stream's bounded buffer and
//     never waits for a stream (flow control bounds what each may receive).
//     x/net passes every frame through two or three goroutines.
//   - No writer goroutine: a stream's Write frames its bytes and writes them
//     to the TLS connection itself, under a mutex. Frames written while
//     another writer waits are left in a buffer for that writer to send, so
//     frames that are ready together leave in one TLS record and one
//     write(2). x/net writes and flushes every frame separately, from the
//     serve goroutine.
//   - Large windows (4 MiB per connection, 256 KiB per stream), with credit
//     returned in batches, so a fast stream is not stalled on
//     WINDOW_UPDATE round trips and few of them are sent.

const (
	// streamWindow is the receive window of each stream: exactly what its
	// pipe can hold.
	streamWindow = pipeBuffer
	// connWindow is the connection's receive window. Connection credit is
	// returned as DATA arrives (the stream windows bound memory), so one
	// stream whose reader stopped never blocks its neighbours.
	connWindow = 4 << 20
	// streamCreditAt and connCreditAt batch WINDOW_UPDATEs: credit is sent
	// once this much has accumulated.
	streamCreditAt = streamWindow / 4
	connCreditAt   = connWindow / 4
	// maxFrameSize is the SETTINGS_MAX_FRAME_SIZE both ends advertise and
	// the largest DATA frame they send: one frame per 64 KiB read of the
	// application's socket instead of four.
	maxFrameSize = 64 << 10
	// maxHeaderList bounds a header block; a CONNECT's is tens of bytes.
	maxHeaderList = 16 << 10
	// maxStreams is the server's SETTINGS_MAX_CONCURRENT_STREAMS.
	maxStreams = 250
	// coalesceMax is how much of small frames is gathered before a write:
	// one full TLS record.
	coalesceMax = 16 << 10
	// tickEvery is the housekeeping period (keepalive, idle close).
	tickEvery = 5 * time.Second
)

// Errors a stream can end with.
var (
	// errConnLost wraps the reason a connection went away under each of its
	// streams.
	errConnLost = errors.New("hbone: connection lost")
	// errRefused is a stream the server did not process (GOAWAY, or
	// REFUSED_STREAM): safe to retry elsewhere.
	errRefused  = errors.New("hbone: stream refused by the server")
	errProtocol = errors.New("hbone: HTTP/2 protocol error")
)

// connError is a connection-level protocol error we detected: the peer gets a
// GOAWAY with code before the connection closes.
type connError struct {
	code http2.ErrCode
	err  error
}

func (e *connError) Error() string { return fmt.Sprintf("%v (%v)", e.err, e.code) }
func (e *connError) Unwrap() error { return e.err }

func protoErr(code http2.ErrCode, format string, args ...any) error {
	return &connError{code, fmt.Errorf("%w: "+format, append([]any{errProtocol}, args...)...)}
}

// appendWriter lets a Framer append frames to a byte slice.
type appendWriter struct{ b *[]byte }

func (w appendWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

// conn is one HTTP/2 connection over TLS, either end.
type conn struct {
	server bool
	tc     *tls.Conn
	raw    net.Conn
	cork   *corkConn // between tc and raw, if the caller put one there
	m      *Metrics
	fr     *http2.Framer // reading; the reader goroutine's only

	// Writing. wmu is held while frames are appended to wbuf and written.
	wmu     sync.Mutex
	waiters atomic.Int32 // goroutines blocked in lockWrite: the last one flushes
	wbuf    []byte
	wfr     *http2.Framer // appends to wbuf
	henc    *hpack.Encoder
	hbuf    bytes.Buffer
	wdl     time.Time // write deadline currently set on raw

	// Control frames (SETTINGS ACK, PING ACK, WINDOW_UPDATE, RST_STREAM)
	// from goroutines that must not block on wmu (the reader above all:
	// blocking it behind a writer stuck on a full TCP window can deadlock
	// two proxies writing to each other). Whoever holds or next takes wmu
	// sends them.
	ctrlMu      sync.Mutex
	ctrl        []byte
	cfr         *http2.Framer // appends to ctrl
	ctrlPending atomic.Bool

	mu            sync.Mutex
	streams       map[uint32]*stream
	nextID        uint32 // client: next stream id
	maxPeerID     uint32 // server: highest stream id the client opened
	sendWin       int64  // connection send window
	peerInitWin   int64  // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame  int
	peerMaxStream int
	reserved      int         // client: streams promised to Connects, not yet opened
	goingAway     bool        // GOAWAY sent or received: no new streams
	lingering     atomic.Bool // closed gracefully; the reader drains the socket
	doNotReuse    bool
	closing       bool
	closeErr      error
	idleSince     time.Time
	closed        chan struct{}

	// Reader goroutine only.
	recvWin     int64 // connection window the peer still has
	recvUnacked int64 // credit not yet returned
	scratch     []byte

	// Keepalive: the reader counts frames, the ticker looks for silence.
	frames     atomic.Int64
	timer      *time.Timer
	lastFrames int64
	lastActive time.Time
	pingDue    time.Time // non-zero: a PING is out, answer due by then

	// onRequest (server) is called by the reader for each new stream.
	onRequest func(st *stream, method, authority string, ok bool)
	// onClose is called once, after the connection closed.
	onClose func(err error)
}

func newConn(tc *tls.Conn, raw net.Conn, server bool, m *Metrics) *conn {
	c := &conn{
		server:        server,
		tc:            tc,
		raw:           raw,
		m:             m,
		streams:       map[uint32]*stream{},
		nextID:        1,
		sendWin:       65535,
		peerInitWin:   65535,
		peerMaxFrame:  16384,
		peerMaxStream: 100, // until the server's SETTINGS say otherwise
		recvWin:       connWindow,
		closed:        make(chan struct{}),
		lastActive:    time.Now(),
		idleSince:     time.Now(),
	}
	c.cork, _ = tc.NetConn().(*corkConn)
	// The reader reads the TLS connection directly: tls.Conn already
	// buffers a whole record, and DATA payloads are read into the stream's
	// pipe, so another buffer would only add a copy.
	c.fr = http2.NewFramer(nil, tc)
	c.fr.SetMaxReadFrameSize(maxFrameSize)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = maxHeaderList
	c.wfr = http2.NewFramer(appendWriter{&c.wbuf}, nil)
	c.cfr = http2.NewFramer(appendWriter{&c.ctrl}, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	// No dynamic table: our header blocks are a couple of fields, and
	// without one the peer's SETTINGS_HEADER_TABLE_SIZE cannot matter.
	c.henc.SetMaxDynamicTableSizeLimit(0)
	return c
}

// start sends our preface and settings. The client's preface goes first on
// the wire; the server sends its SETTINGS unprompted, which is what the
// client waits for to learn that it was accepted.
func (c *conn) start() error {
	c.lockWrite()
	if !c.server {
		c.wbuf = append(c.wbuf, http2.ClientPreface...)
	}
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxFrameSize, Val: maxFrameSize},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
		{ID: http2.SettingHeaderTableSize, Val: 4096},
	}
	if c.server {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxStreams})
	} else {
		settings = append(settings, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	}
	c.wfr.WriteSettings(settings...)
	c.wfr.WriteWindowUpdate(0, connWindow-65535)
	return c.unlockWrite()
}

// readPreface reads the client preface (server side).
func (c *conn) readPreface() error {
	var b [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.tc, b[:]); err != nil {
		return err
	}
	if string(b[:]) != http2.ClientPreface {
		return protoErr(http2.ErrCodeProtocol, "bad client preface %q", b[:])
	}
	return nil
}

// readSettings reads the peer's first frame, which must be its SETTINGS.
func (c *conn) readSettings() error {
	f, err := c.fr.ReadFrame()
	if err != nil {
		return c.readErr(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return protoErr(http2.ErrCodeProtocol, "first frame is %v, not SETTINGS", f.Header().Type)
	}
	c.frames.Add(1)
	return c.onSettings(sf)
}

// readErr turns a Framer error into ours.
func (c *conn) readErr(err error) error {
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		detail := c.fr.ErrorDetail()
		if detail == nil {
			detail = errors.New("malformed frame")
		}
		return protoErr(http2.ErrCode(ce), "%v", detail)
	case errors.Is(err, http2.ErrFrameTooLarge):
		return protoErr(http2.ErrCodeFrameSize, "frame larger than %d", maxFrameSize)
	}
	return err
}

// run is the reader goroutine: it returns when the connection closes, having
// closed it.
func (c *conn) run() {
	defer c.raw.Close() // after lingering, if the close was graceful
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.timer = time.AfterFunc(tickEvery, c.tick)
	c.mu.Unlock()
	c.fail(c.readLoop())
}

func (c *conn) readLoop() error {
	for {
		fh, err := c.fr.ReadFrameHeader()
		if c.lingering.Load() {
			// Closed gracefully while this read waited: what arrives now
			// is only drained, never acted on.
			c.drainSocket()
			return nil
		}
		if err != nil {
			return c.readErr(err)
		}
		c.frames.Add(1)
		if fh.Type == http2.FrameData {
			err = c.readData(fh)
		} else {
			err = c.readOther(fh)
		}
		if err != nil {
			return err
		}
	}
}

// readData reads a DATA frame's payload straight into its stream's pipe.
// Parsing it here rather than through the Framer saves a copy of every byte
// the tunnel carries.
func (c *conn) readData(fh http2.FrameHeader) error {
	if fh.StreamID == 0 {
		return protoErr(http2.ErrCodeProtocol, "DATA on stream 0")
	}
	size := int(fh.Length)
	data := size
	var pad int
	if fh.Flags.Has(http2.FlagDataPadded) {
		if size < 1 {
			return protoErr(http2.ErrCodeProtocol, "padded DATA without pad length")
		}
		var b [1]byte
		if _, err := io.ReadFull(c.tc, b[:]); err != nil {
			return err
		}
		pad = int(b[0])
		data = size - 1 - pad
		if data < 0 {
			return protoErr(http2.ErrCodeProtocol, "DATA padding longer than the frame")
		}
	}
	// The connection window is charged for every byte, whatever becomes
	// of the stream, and credited back at once.
	if int64(size) > c.recvWin {
		return protoErr(http2.ErrCodeFlowControl, "DATA beyond the connection window")
	}
	c.recvWin -= int64(size)
	c.recvUnacked += int64(size)
	if c.recvUnacked >= connCreditAt {
		n := c.recvUnacked
		c.recvWin += n
		c.recvUnacked = 0
		c.queueCtrl(func(fr *http2.Framer) { fr.WriteWindowUpdate(0, uint32(n)) })
	}

	c.mu.Lock()
	st := c.streams[fh.StreamID]
	var streamErr http2.ErrCode
	if st == nil {
		if c.idleLocked(fh.StreamID) {
			c.mu.Unlock()
			return protoErr(http2.ErrCodeProtocol, "DATA on idle stream %d", fh.StreamID)
		}
		// A stream that ended: data that crossed our RST_STREAM. Dropped.
	} else if st.recvEnd {
		streamErr = http2.ErrCodeStreamClosed
	} else if int64(size) > st.recvWin {
		streamErr = http2.ErrCodeFlowControl
	} else {
		st.recvWin -= int64(size)
	}
	c.mu.Unlock()
	if streamErr != 0 {
		c.resetStream(st, streamErr, errProtocol)
		st = nil
	}

	if st != nil && data > 0 {
		a, b, err := st.in.reserve(data)
		if err != nil {
			return protoErr(http2.ErrCodeFlowControl, "stream %d overran its buffer", st.id)
		}
		if a != nil {
			if _, err := io.ReadFull(c.tc, a); err != nil {
				st.in.commit(0)
				return err
			}
			if _, err := io.ReadFull(c.tc, b); err != nil {
				st.in.commit(0)
				return err
			}
			st.in.commit(data)
			c.m.received(data)
			data = 0
		} else {
			// Nobody reads this stream any more: drop the bytes, and
			// give their credit back so the peer is not left stuck.
			st.credit(data)
		}
	}
	if err := c.discard(data + pad); err != nil {
		return err
	}
	if st != nil {
		if pad > 0 || fh.Flags.Has(http2.FlagDataPadded) {
			st.credit(pad + 1)
		}
		if fh.Flags.Has(http2.FlagDataEndStream) {
			c.endRecv(st)
		}
	}
	return nil
}

// discard reads and drops n bytes.
func (c *conn) discard(n int) error {
	for n > 0 {
		if c.scratch == nil {
			c.scratch = make([]byte, 4096)
		}
		k, err := io.ReadFull(c.tc, c.scratch[:min(n, len(c.scratch))])
		n -= k
		if err != nil {
			return err
		}
	}
	return nil
}

// idleLocked reports whether id names a stream that was never opened, which
// a peer may not send frames for.
func (c *conn) idleLocked(id uint32) bool {
	if c.server {
		return id%2 == 0 || id > c.maxPeerID
	}
	return id%2 == 0 || id >= c.nextID
}

func (c *conn) readOther(fh http2.FrameHeader) error {
	f, err := c.fr.ReadFrameForHeader(fh)
	if err != nil {
		var se http2.StreamError
		if errors.As(err, &se) {
			// A malformed header block: the stream is refused, the
			// connection (and its hpack state) carries on.
			c.mu.Lock()
			if c.server && fh.Type == http2.FrameHeaders && se.StreamID > c.maxPeerID && se.StreamID%2 == 1 {
				c.maxPeerID = se.StreamID
			}
			st := c.streams[se.StreamID]
			c.mu.Unlock()
			c.m.Fail(FailProtocol)
			if st != nil {
				c.resetStream(st, se.Code, errProtocol)
			} else {
				c.queueRST(se.StreamID, se.Code)
			}
			return nil
		}
		return c.readErr(err)
	}
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		return c.onSettings(f)
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			c.queueCtrl(func(fr *http2.Framer) { fr.WritePing(true, data) })
		}
		return nil
	case *http2.RSTStreamFrame:
		return c.onRST(f)
	case *http2.GoAwayFrame:
		c.onGoAway(f)
		return nil
	case *http2.PushPromiseFrame:
		return protoErr(http2.ErrCodeProtocol, "PUSH_PROMISE (push is disabled)")
	}
	// PRIORITY, PRIORITY_UPDATE and unknown frame types carry nothing a
	// tunnel needs; RFC 9113 says to ignore unknown ones.
	return nil
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return protoErr(http2.ErrCode(err.(http2.ConnectionError)), "invalid setting %v", s)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWin += delta
				if st.sendWin > 1<<31-1 {
					return protoErr(http2.ErrCodeFlowControl, "window overflow")
				}
				signal(st.wake)
			}
		case http2.SettingMaxFrameSize:
			c.peerMaxFrame = min(int(s.Val), maxFrameSize)
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStream = int(min(s.Val, 1<<20))
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.queueCtrl(func(fr *http2.Framer) { fr.WriteSettingsAck() })
	return nil
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	if f.StreamID == 0 {
		c.sendWin += inc
		if c.sendWin > 1<<31-1 {
			c.mu.Unlock()
			return protoErr(http2.ErrCodeFlowControl, "connection window overflow")
		}
		// Rare (once per connCreditAt sent): wake every stream, those
		// not waiting just find their channel signalled once.
		for _, st := range c.streams {
			signal(st.wake)
		}
		c.mu.Unlock()
		return nil
	}
	st := c.streams[f.StreamID]
	if st == nil {
		idle := c.idleLocked(f.StreamID)
		c.mu.Unlock()
		if idle {
			return protoErr(http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream %d", f.StreamID)
		}
		return nil
	}
	st.sendWin += inc
	overflow := st.sendWin > 1<<31-1
	c.mu.Unlock()
	if overflow {
		c.resetStream(st, http2.ErrCodeFlowControl, errProtocol)
		return nil
	}
	signal(st.wake)
	return nil
}

func (c *conn) onRST(f *http2.RSTStreamFrame) error {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st == nil {
		idle := c.idleLocked(f.StreamID)
		c.mu.Unlock()
		if idle {
			return protoErr(http2.ErrCodeProtocol, "RST_STREAM on idle stream %d", f.StreamID)
		}
		return nil
	}
	c.mu.Unlock()
	err := errStreamReset
	if f.ErrCode == http2.ErrCodeRefusedStream {
		err = errRefused
	}
	c.endStream(st, err, false, 0)
	return nil
}

func (c *conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goingAway = true
	var refused []*stream
	if !c.server {
		for id, st := range c.streams {
			if id > f.LastStreamID {
				refused = append(refused, st)
			}
		}
	}
	c.mu.Unlock()
	// Streams above the last one the server processed never reached it:
	// their Connects fail as refused and are retried on a new connection.
	for _, st := range refused {
		c.endStream(st, errRefused, false, 0)
	}
	c.closeIfDone()
}

// onHeaders handles a header block: a new request (server) or a response
// (client); any later block must be trailers, which end the stream.
func (c *conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	st := c.streams[id]
	if st == nil && c.server {
		if id%2 == 0 || id <= c.maxPeerID {
			c.mu.Unlock()
			return protoErr(http2.ErrCodeProtocol, "HEADERS opening stream %d out of order", id)
		}
		c.maxPeerID = id
		if c.goingAway || c.closing || len(c.streams) >= maxStreams {
			c.mu.Unlock()
			c.queueRST(id, http2.ErrCodeRefusedStream)
			return nil
		}
		st = newStream(c, id)
		c.streams[id] = st
		c.mu.Unlock()
		if f.StreamEnded() {
			c.endRecv(st)
		}
		method := f.PseudoValue("method")
		authority := f.PseudoValue("authority")
		// A CONNECT has only :method and :authority (RFC 9113 8.5).
		ok := method != "" && (method != "CONNECT" || (f.PseudoValue("path") == "" && f.PseudoValue("scheme") == "" && f.PseudoValue("protocol") == ""))
		st.header = f.RegularFields()
		c.onRequest(st, method, authority, ok)
		return nil
	}
	if st == nil {
		idle := c.idleLocked(id)
		c.mu.Unlock()
		if idle {
			return protoErr(http2.ErrCodeProtocol, "HEADERS on idle stream %d", id)
		}
		return nil // a stream we already gave up on
	}
	if st.recvEnd {
		c.mu.Unlock()
		c.resetStream(st, http2.ErrCodeStreamClosed, errProtocol)
		return nil
	}
	gotResponse := st.gotResponse
	c.mu.Unlock()

	if c.server || gotResponse {
		// Trailers: fine at the end of a stream, never in the middle.
		if !f.StreamEnded() {
			c.resetStream(st, http2.ErrCodeProtocol, errProtocol)
			return nil
		}
		c.endRecv(st)
		return nil
	}
	var code int
	if s := f.PseudoValue("status"); len(s) == 3 {
		fmt.Sscanf(s, "%d", &code)
	}
	switch {
	case code < 100 || code > 999:
		c.resetStream(st, http2.ErrCodeProtocol, fmt.Errorf("%w: response without a valid :status", errProtocol))
		return nil
	case code < 200:
		if f.StreamEnded() {
			c.resetStream(st, http2.ErrCodeProtocol, fmt.Errorf("%w: END_STREAM on a 1xx response", errProtocol))
		}
		return nil // informational: the final answer follows
	}
	c.mu.Lock()
	st.gotResponse = true
	st.status = code
	c.mu.Unlock()
	st.releaseResponse()
	if f.StreamEnded() {
		c.endRecv(st)
	}
	return nil
}

// endRecv records the peer's END_STREAM.
func (c *conn) endRecv(st *stream) {
	c.mu.Lock()
	st.recvEnd = true
	c.retireLocked(st)
	c.mu.Unlock()
	st.in.closeWrite(nil)
	c.closeIfDone()
}

// retireLocked drops a stream from the table once neither side can send on
// it any more.
func (c *conn) retireLocked(st *stream) {
	if st.dead != nil || (st.sentEnd && st.recvEnd) {
		if c.streams[st.id] == st {
			delete(c.streams, st.id)
			if len(c.streams) == 0 {
				c.idleSince = time.Now()
			}
		}
	}
}

// endStream kills a stream: err is what its reads (after the buffered bytes)
// and writes return from now on. With sendRST, the peer is told with code.
func (c *conn) endStream(st *stream, err error, sendRST bool, code http2.ErrCode) {
	c.mu.Lock()
	if st.dead != nil {
		c.mu.Unlock()
		return
	}
	st.dead = err
	finished := st.sentEnd && st.recvEnd
	onDead := st.onDead
	c.retireLocked(st)
	c.mu.Unlock()
	st.in.closeWrite(err)
	signal(st.wake)
	st.releaseResponse()
	if onDead != nil {
		onDead()
	}
	if sendRST && !finished && st.id != 0 {
		c.queueRST(st.id, code)
	}
	c.closeIfDone()
}

// resetStream ends a stream with a RST_STREAM of code.
func (c *conn) resetStream(st *stream, code http2.ErrCode, err error) {
	c.endStream(st, err, true, code)
}

func (c *conn) queueRST(id uint32, code http2.ErrCode) {
	c.queueCtrl(func(fr *http2.Framer) { fr.WriteRSTStream(id, code) })
}

// closeIfDone closes a connection that takes no new streams once its last
// stream ended.
func (c *conn) closeIfDone() {
	c.mu.Lock()
	done := (c.goingAway || c.doNotReuse) && len(c.streams) == 0 && c.reserved == 0 && !c.closing
	c.mu.Unlock()
	if done {
		c.fail(nil)
	}
}

// lockWrite takes the write side. Frames appended before unlockWrite leave
// together.
func (c *conn) lockWrite() {
	if c.wmu.TryLock() {
		return
	}
	c.waiters.Add(1)
	c.wmu.Lock()
	c.waiters.Add(-1)
}

// unlockWrite sends what was appended, unless another writer is already
// waiting for the lock: that one will send it together with its own frames.
// It returns the write's error. A connection that closes after a successful
// write is not an error of this write (the frames went out); callers check
// for a closed connection before appending (stream.sendable).
func (c *conn) unlockWrite() error {
	c.takeCtrlLocked()
	var err error
	if c.waiters.Load() == 0 {
		err = c.flushLocked()
	}
	c.wmu.Unlock()
	c.kick()
	return err
}

// kick sends queued control frames if nobody holds the write side (if
// somebody does, it sends them as it leaves).
func (c *conn) kick() {
	for c.ctrlPending.Load() && c.wmu.TryLock() {
		c.takeCtrlLocked()
		var err error
		if c.waiters.Load() == 0 {
			err = c.flushLocked()
		}
		c.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

func (c *conn) takeCtrlLocked() {
	if !c.ctrlPending.Load() {
		return
	}
	c.ctrlMu.Lock()
	c.wbuf = append(c.wbuf, c.ctrl...)
	c.ctrl = c.ctrl[:0]
	c.ctrlPending.Store(false)
	c.ctrlMu.Unlock()
}

// queueCtrl appends a control frame for the next flush, never blocking.
func (c *conn) queueCtrl(write func(fr *http2.Framer)) {
	c.ctrlMu.Lock()
	write(c.cfr)
	c.ctrlPending.Store(true)
	c.ctrlMu.Unlock()
	c.kick()
}

// flushLocked writes wbuf out.
func (c *conn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	err := c.writeLocked(c.wbuf)
	c.wbuf = c.wbuf[:0]
	if cap(c.wbuf) > 4*maxFrameSize {
		c.wbuf = nil // a burst of many frames: do not keep its buffer
	}
	return err
}

// writeLocked writes b to the TLS connection. The write deadline is the
// dead-peer bound (writeByteTimeout); it is only moved when it has drifted a
// second, to keep timer updates off the per-write path.
func (c *conn) writeLocked(b []byte) error {
	if now := time.Now(); c.wdl.Sub(now) < writeByteTimeout-time.Second {
		c.wdl = now.Add(writeByteTimeout)
		c.raw.SetWriteDeadline(c.wdl)
	}
	// More than one record: gather them into one write(2).
	cork := c.cork != nil && len(b) > 16<<10
	if cork {
		c.cork.cork()
	}
	_, err := c.tc.Write(b)
	if cork {
		if uerr := c.cork.uncork(); err == nil {
			err = uerr
		}
	}
	if err != nil {
		c.fail(err)
		return c.err()
	}
	return nil
}

// appendDataHeader appends a DATA frame header.
func appendDataHeader(b []byte, n int, end bool, id uint32) []byte {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameData), flags,
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

// putDataHeader writes a DATA frame header into h[:9].
func putDataHeader(h []byte, n int, id uint32) {
	h[0], h[1], h[2], h[3], h[4] = byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameData), 0
	binary.BigEndian.PutUint32(h[5:9], id)
}

// writeHeadersLocked appends a header block as HEADERS (+ CONTINUATION).
func (c *conn) writeHeadersLocked(id uint32, end bool, fields ...hpack.HeaderField) {
	c.hbuf.Reset()
	for _, f := range fields {
		c.henc.WriteField(f)
	}
	block := c.hbuf.Bytes()
	c.mu.Lock()
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()
	first := block[:min(len(block), maxFrame)]
	block = block[len(first):]
	c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0})
	for len(block) > 0 {
		frag := block[:min(len(block), maxFrame)]
		block = block[len(frag):]
		c.wfr.WriteContinuation(id, len(block) == 0, frag)
	}
}

// goAway tells the peer no new streams will be accepted (graceful
// shutdown); the connection closes once its streams have ended.
func (c *conn) goAway() {
	c.mu.Lock()
	if c.goingAway || c.closing {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	last := c.maxPeerID
	c.mu.Unlock()
	c.queueCtrl(func(fr *http2.Framer) { fr.WriteGoAway(last, http2.ErrCodeNo, nil) })
	c.closeIfDone()
}

// fail closes the connection: every stream still on it ends with err (nil:
// a graceful close). A protocol error is reported to the peer first.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	streamErr := err
	if err == nil {
		err = net.ErrClosed
		streamErr = io.EOF
	}
	c.closeErr = err
	streams := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	last := c.maxPeerID
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()

	graceful := false
	var ce *connError
	if errors.As(err, &ce) {
		// Tell the peer why before hanging up. Protocol errors are found
		// by the reader, which never holds wmu, so waiting for it is safe;
		// the write deadline bounds a holder stuck on a full TCP window.
		c.m.Fail(FailProtocol)
		c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		c.wmu.Lock()
		c.takeCtrlLocked()
		c.wfr.WriteGoAway(last, ce.code, []byte(ce.err.Error()))
		c.tc.Write(c.wbuf)
		c.wbuf = nil
		c.wmu.Unlock()
	} else if errors.Is(err, net.ErrClosed) && c.wmu.TryLock() {
		// Graceful: say goodbye if nothing is stuck writing.
		c.wfr.WriteGoAway(last, http2.ErrCodeNo, nil)
		c.raw.SetWriteDeadline(time.Now().Add(time.Second))
		c.takeCtrlLocked()
		_, werr := c.tc.Write(c.wbuf)
		c.wbuf = nil
		c.wmu.Unlock()
		graceful = werr == nil
	}
	close(c.closed)
	if graceful {
		c.lingerClose()
	} else {
		c.raw.Close()
	}
	for _, st := range streams {
		c.endStream(st, fmt.Errorf("%w: %w", errConnLost, streamErr), false, 0)
	}
	if c.onClose != nil {
		c.onClose(err)
	}
}

// lingerTimeout bounds how long a gracefully closed connection keeps
// reading, waiting for its peer to close too.
const lingerTimeout = 2 * time.Second

// lingerClose ends a graceful close: it sends FIN and leaves the socket to
// the reader goroutine, which discards what still arrives until the peer
// closes (or lingerTimeout) and then closes it. Closing at once would answer
// anything the peer sends meanwhile (a WINDOW_UPDATE for the last response,
// a HEADERS that crossed the GOAWAY) with a RST, and a RST makes the peer's
// kernel drop whatever it had received and not yet read: the last response
// of a stream that had ended cleanly, lost on the way to its application.
// That was the one failed request in thousands across a graceful restart,
// when a draining proxy closed an HBONE connection whose last stream had
// just ended.
func (c *conn) lingerClose() {
	c.lingering.Store(true)
	if cw, ok := c.raw.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
		c.raw.Close()
		return
	}
	c.raw.SetReadDeadline(time.Now().Add(lingerTimeout))
}

// drainSocket reads and drops what the peer still sends on a lingering
// connection until it closes or the linger deadline passes.
func (c *conn) drainSocket() {
	_, _ = io.Copy(io.Discard, c.raw)
}

// err is the connection's error once it is closed, else nil.
func (c *conn) err() error {
	select {
	case <-c.closed:
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("%w: %w", errConnLost, c.closeErr)
	default:
		return nil
	}
}

// tick is the housekeeping timer: PING a silent peer and close the
// connection if the answer does not come (a killed node sends no FIN), and
// close a client connection that carried no stream for idleConnTimeout.
func (c *conn) tick() {
	now := time.Now()
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	if n := c.frames.Load(); n != c.lastFrames {
		c.lastFrames, c.lastActive, c.pingDue = n, now, time.Time{}
	}
	var ping, dead, idle bool
	switch {
	case !c.pingDue.IsZero() && now.After(c.pingDue):
		dead = true
	case c.pingDue.IsZero() && now.Sub(c.lastActive) >= pingAfter:
		ping = true
		c.pingDue = now.Add(pingTimeout)
	}
	if !c.server && len(c.streams) == 0 && c.reserved == 0 && now.Sub(c.idleSince) >= idleConnTimeout {
		idle = true
	}
	next := tickEvery
	if ping {
		next = min(next, pingTimeout)
	}
	c.timer.Reset(next)
	c.mu.Unlock()
	switch {
	case dead:
		c.fail(fmt.Errorf("no answer to PING within %v", pingTimeout))
	case idle:
		c.fail(nil)
	case ping:
		c.queueCtrl(func(fr *http2.Framer) { fr.WritePing(false, [8]byte{'h', 'b', 'o', 'n', 'e'}) })
	}
}
