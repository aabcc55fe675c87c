package hbone

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one CONNECT stream, and the net.Conn both ends hand out for it.
// Reads come from its pipe, which the connection's reader fills; writes are
// framed and written to the connection by the writing goroutine itself.
type stream struct {
	c    *conn
	id   uint32
	in   *pipe
	wake chan struct{} // signalled (cap 1) when the send window grows or the stream dies
	// header is a CONNECT's regular header fields (server side), set
	// before the stream is handed to the server and not changed after.
	header []hpack.HeaderField

	// Guarded by c.mu.
	sendWin     int64
	recvWin     int64
	sentEnd     bool  // END_STREAM sent (or we will send no more)
	recvEnd     bool  // END_STREAM received (or we take no more)
	dead        error // reset, or its connection died: what reads and writes get
	gotResponse bool
	status      int

	// Client: closed once the response arrived or the stream died.
	respReady chan struct{}
	respOnce  sync.Once

	unacked atomic.Int64 // bytes consumed, not yet credited to the peer

	// Server: the 200 still to be sent, in front of the stream's first
	// frame. Guarded by c.wmu.
	respPending bool
	started     atomic.Bool // the first Read, Write or CloseWrite happened
	startOnce   sync.Once   // the 200 sent by begin(true)
	onDead      func()      // server: cancels Forward's context
	ctx         context.Context

	rd, wd    deadline
	wmu       sync.Mutex // one Write at a time, so each Write's bytes stay contiguous
	closeOnce sync.Once
	closed    atomic.Bool
	onClose   func()
}

func newStream(c *conn, id uint32) *stream {
	st := &stream{
		c:       c,
		id:      id,
		in:      newPipe(),
		wake:    make(chan struct{}, 1),
		sendWin: c.peerInitWin,
		recvWin: streamWindow,
		rd:      makeDeadline(),
		wd:      makeDeadline(),
	}
	st.in.onConsume = st.credit
	return st
}

func (st *stream) releaseResponse() {
	if st.respReady != nil {
		st.respOnce.Do(func() { close(st.respReady) })
	}
}

// credit returns consumed bytes to the peer's window, in batches.
func (st *stream) credit(k int) {
	if st.unacked.Add(int64(k)) < streamCreditAt {
		return
	}
	n := st.unacked.Swap(0)
	if n <= 0 {
		return
	}
	c := st.c
	c.mu.Lock()
	if st.dead != nil || st.recvEnd {
		c.mu.Unlock()
		return
	}
	st.recvWin += n
	c.mu.Unlock()
	id := st.id
	c.queueCtrl(func(fr *http2.Framer) { fr.WriteWindowUpdate(id, uint32(n)) })
}

// begin marks the stream's first use; on the server, the 200 goes out then.
// With now unset (Write, CloseWrite) it rides in front of the frame the
// caller is about to write; otherwise (Read, WriteTo, and ReadFrom, which
// may wait long for its first byte) it is sent at once, so the client is
// not left waiting for it.
func (st *stream) begin(now bool) {
	if !st.c.server {
		return
	}
	st.started.Store(true)
	if now {
		st.startOnce.Do(func() {
			st.c.lockWrite()
			st.headersLocked()
			st.c.unlockWrite()
		})
	}
}

// headersLocked writes the pending 200, if any. c.wmu is held.
func (st *stream) headersLocked() {
	if st.respPending {
		st.respPending = false
		st.c.writeHeadersLocked(st.id, false, hpack.HeaderField{Name: ":status", Value: "200"})
	}
}

// respond sends a final status with END_STREAM (server refusals).
func (st *stream) respond(code int, extra ...hpack.HeaderField) {
	c := st.c
	c.mu.Lock()
	if st.dead != nil || st.sentEnd {
		c.mu.Unlock()
		return
	}
	st.sentEnd = true
	rst := !st.recvEnd
	st.recvEnd = true
	c.retireLocked(st)
	c.mu.Unlock()
	c.lockWrite()
	st.respPending = false
	fields := append([]hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(code)}}, extra...)
	c.writeHeadersLocked(st.id, true, fields...)
	if rst {
		// The request is answered: the client need not send the rest.
		c.wfr.WriteRSTStream(st.id, http2.ErrCodeNo)
	}
	c.unlockWrite()
	st.in.closeWrite(nil)
	c.closeIfDone()
}

// awaitWindow takes up to want bytes of send window, waiting for some.
func (st *stream) awaitWindow(want int) (int, error) {
	c := st.c
	for {
		c.mu.Lock()
		switch {
		case st.sentEnd:
			c.mu.Unlock()
			return 0, errWriteClosed
		case st.dead != nil:
			err := st.dead
			c.mu.Unlock()
			return 0, err
		}
		n := min(int64(want), st.sendWin, c.sendWin, int64(c.peerMaxFrame))
		if n > 0 {
			st.sendWin -= n
			c.sendWin -= n
			c.mu.Unlock()
			return int(n), nil
		}
		c.mu.Unlock()
		select {
		case <-st.wake:
		case <-c.closed:
		case <-st.wd.wait():
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// sendable reports, with c.wmu held, whether DATA may still go out: a Close
// or reset that came in while the writer waited wins.
func (st *stream) sendable() error {
	c := st.c
	c.mu.Lock()
	closing := c.closing
	defer c.mu.Unlock()
	switch {
	case st.sentEnd:
		return errWriteClosed
	case st.dead != nil:
		return st.dead
	case closing:
		return fmt.Errorf("%w: %w", errConnLost, c.closeErr)
	}
	return nil
}

func (st *stream) checkWrite() error {
	if st.closed.Load() {
		return net.ErrClosed
	}
	if isClosed(st.wd.wait()) {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// Write sends b as DATA frames, as flow control allows.
func (st *stream) Write(b []byte) (int, error) {
	if err := st.checkWrite(); err != nil {
		return 0, err
	}
	st.begin(false)
	st.wmu.Lock()
	defer st.wmu.Unlock()
	c := st.c
	n := 0
	for len(b) > 0 {
		k, err := st.awaitWindow(len(b))
		if err != nil {
			return n, err
		}
		c.lockWrite()
		if err := st.sendable(); err != nil {
			c.unlockWrite()
			return n, err
		}
		st.headersLocked()
		c.wbuf = appendDataHeader(c.wbuf, k, false, st.id)
		c.wbuf = append(c.wbuf, b[:k]...)
		if len(c.wbuf) >= coalesceMax {
			c.flushLocked()
		}
		if err := c.unlockWrite(); err != nil {
			return n, err
		}
		c.m.sent(k)
		n += k
		b = b[k:]
	}
	return n, nil
}

// frameBufs are read buffers with room for a DATA frame header in front, so
// ReadFrom can frame what it read without copying it.
var frameBufs = sync.Pool{New: func() any {
	b := make([]byte, 9+maxFrameSize)
	return &b
}}

// ReadFrom sends everything r yields, reading straight into a frame buffer:
// io.Copy(stream, socket) takes this path, and the payload is copied only
// by TLS as it encrypts.
func (st *stream) ReadFrom(r io.Reader) (int64, error) {
	if err := st.checkWrite(); err != nil {
		return 0, err
	}
	st.begin(true)
	st.wmu.Lock()
	defer st.wmu.Unlock()
	bp := frameBufs.Get().(*[]byte)
	defer frameBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := r.Read(buf[9:])
		if n > 0 {
			if err := st.sendBuffered(buf, n); err != nil {
				return total, err
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
		if st.closed.Load() {
			return total, net.ErrClosed
		}
	}
}

// sendBuffered sends the n bytes at buf[9:] as DATA frames. Each frame's
// header goes in the 9 bytes just before its payload: the headroom for the
// first, and bytes already sent for the others.
func (st *stream) sendBuffered(buf []byte, n int) error {
	c := st.c
	for off := 0; off < n; {
		k, err := st.awaitWindow(n - off)
		if err != nil {
			return err
		}
		c.lockWrite()
		if err := st.sendable(); err != nil {
			c.unlockWrite()
			return err
		}
		st.headersLocked()
		frame := buf[off : off+9+k]
		putDataHeader(frame, k, st.id)
		if len(c.wbuf)+len(frame) <= coalesceMax {
			c.wbuf = append(c.wbuf, frame...)
		} else if err := c.flushLocked(); err == nil {
			c.writeLocked(frame)
		}
		if err := c.unlockWrite(); err != nil {
			return err
		}
		c.m.sent(k)
		off += k
	}
	return nil
}

// Read reads what the peer sent.
func (st *stream) Read(b []byte) (int, error) {
	st.begin(true)
	return st.in.read(b, st.rd.wait())
}

// WriteTo writes what the peer sends to w until the peer ends the stream:
// io.Copy(socket, stream) takes this path and writes straight from the
// stream's buffer.
func (st *stream) WriteTo(w io.Writer) (int64, error) {
	st.begin(true)
	return st.in.writeTo(w, st.rd.wait)
}

// CloseWrite half-closes: the peer reads EOF once it has everything written
// so far, and this side can still Read. On the server it also ends reading
// (see the caveat on Server.Forward).
//
// Like shutdown(2), it does not wait for a Write in progress (one blocked on
// flow control could wait forever); such a Write fails with errWriteClosed.
func (st *stream) CloseWrite() error {
	st.begin(false)
	return st.sendEnd()
}

// sendEnd sends END_STREAM once. On the server, a client that has not
// finished sending is told to stop (RST_STREAM NO_ERROR) and reads end:
// that keeps the contract Forward has always had, where the server's
// half-close ends the exchange and an app closing first reaches the client
// as EOF.
func (st *stream) sendEnd() error {
	c := st.c
	c.mu.Lock()
	if st.sentEnd || st.dead != nil {
		c.mu.Unlock()
		return nil
	}
	st.sentEnd = true
	rst := false
	if c.server && !st.recvEnd {
		rst = true
		st.recvEnd = true
	}
	c.retireLocked(st)
	c.mu.Unlock()
	signal(st.wake) // a Write waiting for window gives up
	c.lockWrite()
	st.headersLocked()
	c.wbuf = appendDataHeader(c.wbuf, 0, true, st.id)
	if rst {
		c.wfr.WriteRSTStream(st.id, http2.ErrCodeNo)
	}
	err := c.unlockWrite()
	if c.server {
		st.in.closeWrite(nil)
	}
	c.closeIfDone()
	return err
}

// Close ends the stream in both directions, like close(2) on a socket: what
// was written still goes out with a clean end, but reading stops, so if the
// peer is still sending the stream is reset. The pooled TLS connection it
// rode on stays open for other streams.
func (st *stream) Close() error {
	st.closeOnce.Do(func() {
		st.closed.Store(true)
		c := st.c
		if c.server {
			// Forward's goroutine finishes the stream when Forward
			// returns; here only what close(2) would do.
			st.sendEnd()
			st.in.closeRead(nil)
			return
		}
		c.mu.Lock()
		alive := st.dead == nil
		needEnd := alive && !st.sentEnd
		needRST := alive && !st.recvEnd
		st.sentEnd = true
		c.mu.Unlock()
		if needEnd || needRST {
			c.lockWrite()
			if needEnd {
				c.wbuf = appendDataHeader(c.wbuf, 0, true, st.id)
			}
			if needRST {
				c.wfr.WriteRSTStream(st.id, http2.ErrCodeCancel)
			}
			c.unlockWrite()
		}
		st.in.closeRead(nil)
		c.endStream(st, net.ErrClosed, false, 0)
		if st.onClose != nil {
			st.onClose()
		}
	})
	return nil
}

func (st *stream) LocalAddr() net.Addr  { return st.c.tc.LocalAddr() }
func (st *stream) RemoteAddr() net.Addr { return st.c.tc.RemoteAddr() }

func (st *stream) SetDeadline(t time.Time) error {
	st.rd.set(t)
	st.wd.set(t)
	st.signalDeadline()
	return nil
}

func (st *stream) SetReadDeadline(t time.Time) error {
	st.rd.set(t)
	return nil
}

func (st *stream) SetWriteDeadline(t time.Time) error {
	st.wd.set(t)
	st.signalDeadline()
	return nil
}

// signalDeadline wakes a writer waiting for window, so that it picks up the
// new deadline channel.
func (st *stream) signalDeadline() { signal(st.wake) }

// Header is a regular header field of a CONNECT (lower-case name).
type Header struct{ Name, Value string }

// RequestHeader returns the value of the CONNECT's header field name (lower
// case), "" when absent; on a client's stream always "". ztunnel sends
// forwarded, baggage and traceparent; the server carries them for whoever
// serves the stream and never refuses a CONNECT over them.
func (s *stream) RequestHeader(name string) string {
	for _, f := range s.header {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}
