package hbone

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Streams are built from in-memory pipes rather than handing the HTTP/2
// bodies straight to callers, because neither end of x/net/http2 offers what a
// net.Conn must: the client's response body and request body have no
// deadlines, and the server's ResponseController read deadline tears the body
// down for good when it fires (net.Conn deadlines are recoverable). A pipe
// gives both ends deadlines that can be moved and half-close semantics we
// control, at the price of one copy.

var (
	errWriteClosed = errors.New("hbone: write after CloseWrite")
	errPipeClosed  = io.ErrClosedPipe
)

// pipeBuffer bounds what a pipe holds. A synchronous pipe (a Write returns
// only once the reader took the bytes) made every chunk a lockstep handoff
// between two goroutines, which capped a stream's throughput; a bounded
// buffer lets both sides run while keeping backpressure: a full buffer blocks
// the writer, and HTTP/2 flow control does the rest.
const pipeBuffer = 256 << 10

// pipe is a bounded, one-directional in-memory pipe, like io.Pipe but
// buffered, with a deadline on each Read and Write and distinct errors for
// each side.
type pipe struct {
	wmu      sync.Mutex    // serialises Writes so one Write's bytes are contiguous
	mu       sync.Mutex    // guards ring, r, n
	ring     []byte        // allocated on first write: pipeBuffer bytes
	r, n     int           // start and length of the buffered bytes in ring
	readable chan struct{} // signalled (cap 1) when bytes arrive or the write side closes
	writable chan struct{} // signalled (cap 1) when space frees up
	wdone    chan struct{} // closed by closeWrite
	rdone    chan struct{} // closed by closeRead
	wonce    sync.Once
	ronce    sync.Once
	werr     error // set before wdone closes: what readers get (io.EOF by default)
	rerr     error // set before rdone closes: what writers get
	rerrSelf error // what readers get after the read side closed
	werrSelf error // what writers get after the write side closed
}

func newPipe() *pipe {
	return &pipe{
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
		wdone:    make(chan struct{}),
		rdone:    make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// write copies b into the pipe, waiting for space while it is full, until
// all of it is in, the pipe closes or the deadline channel fires. Bytes
// already in are reported in n.
func (p *pipe) write(b []byte, deadline <-chan struct{}) (n int, err error) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	// Check closure and an expired deadline first, in order: a select with
	// several ready cases picks at random, and a closed pipe must neither
	// take more bytes nor report a different error each time.
	switch {
	case isClosed(p.wdone):
		return 0, p.werrSelf
	case isClosed(p.rdone):
		return 0, p.rerr
	case isClosed(deadline):
		return 0, os.ErrDeadlineExceeded
	}
	for len(b) > 0 {
		if isClosed(p.rdone) {
			return n, p.rerr
		}
		p.mu.Lock()
		if p.ring == nil {
			p.ring = make([]byte, pipeBuffer)
		}
		if room := pipeBuffer - p.n; room > 0 {
			k := min(room, len(b))
			w := (p.r + p.n) % pipeBuffer
			c := copy(p.ring[w:], b[:k])
			copy(p.ring, b[c:k]) // the part that wraps around
			p.n += k
			p.mu.Unlock()
			signal(p.readable)
			b, n = b[k:], n+k
			continue
		}
		p.mu.Unlock()
		select {
		case <-p.writable:
		case <-p.wdone:
			return n, p.werrSelf
		case <-p.rdone:
			return n, p.rerr
		case <-deadline:
			return n, os.ErrDeadlineExceeded
		}
	}
	return n, nil
}

// read takes up to len(b) buffered bytes, waiting while the pipe is empty.
func (p *pipe) read(b []byte, deadline <-chan struct{}) (int, error) {
	switch {
	case isClosed(p.rdone):
		return 0, p.rerrSelf
	case isClosed(deadline):
		return 0, os.ErrDeadlineExceeded
	}
	if len(b) == 0 {
		return 0, nil
	}
	for {
		p.mu.Lock()
		if p.n > 0 {
			k := min(len(b), p.n)
			end := min(p.r+k, pipeBuffer)
			c := copy(b, p.ring[p.r:end])
			copy(b[c:k], p.ring) // the part that wrapped around
			p.r, p.n = (p.r+k)%pipeBuffer, p.n-k
			p.mu.Unlock()
			signal(p.writable)
			return k, nil
		}
		p.mu.Unlock()
		// Empty: a closed write side means the end (after the buffered
		// bytes, which were read above).
		if isClosed(p.wdone) {
			return 0, p.werr
		}
		select {
		case <-p.readable:
		case <-p.wdone:
		case <-p.rdone:
			return 0, p.rerrSelf
		case <-deadline:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// closeWrite ends the writing side. A nil cause is a clean end: readers get
// io.EOF and later writes errWriteClosed; otherwise both get cause. Either
// way readers first get what is already buffered (bytes sent before a reset
// were sent).
func (p *pipe) closeWrite(cause error) {
	p.wonce.Do(func() {
		p.werr, p.werrSelf = io.EOF, errWriteClosed
		if cause != nil {
			p.werr, p.werrSelf = cause, cause
		}
		close(p.wdone)
	})
}

// closeRead ends the reading side. A nil cause is a local close: later reads
// get net.ErrClosed and writers io.ErrClosedPipe; otherwise both get cause.
func (p *pipe) closeRead(cause error) {
	p.ronce.Do(func() {
		p.rerr, p.rerrSelf = errPipeClosed, net.ErrClosed
		if cause != nil {
			p.rerr, p.rerrSelf = cause, cause
		}
		close(p.rdone)
		p.mu.Lock()
		p.ring, p.r, p.n = nil, 0, 0
		p.mu.Unlock()
	})
}

// deadline is a movable deadline as a channel that closes when it passes,
// the same construction net.Pipe uses internally.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

func makeDeadline() deadline { return deadline{cancel: make(chan struct{})} }

// set moves the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for its func to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		c := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(c) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// wait returns a channel that closes when the current deadline passes.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// streamConn is the net.Conn both ends hand out: reads come from in, writes
// go to out, and the pumps on the other side of the pipes talk HTTP/2.
type streamConn struct {
	in, out       *pipe
	rd, wd        deadline
	local, remote net.Addr
	onWrite       func(n int)  // counts bytes sent
	onFirstIO     func()       // server: the first Read or Write accepts the stream
	onCloseWrite  func()       // extra work after out closes cleanly
	onClose       func() error // releases the HTTP/2 stream
	closeOnce     sync.Once
	closeErr      error
	closed        atomic.Bool
}

func newStreamConn(local, remote net.Addr) *streamConn {
	return &streamConn{
		in: newPipe(), out: newPipe(),
		rd: makeDeadline(), wd: makeDeadline(),
		local: local, remote: remote,
	}
}

func (c *streamConn) Read(b []byte) (int, error) {
	if c.onFirstIO != nil {
		c.onFirstIO()
	}
	return c.in.read(b, c.rd.wait())
}

func (c *streamConn) Write(b []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if c.onFirstIO != nil {
		c.onFirstIO()
	}
	n, err := c.out.write(b, c.wd.wait())
	if n > 0 && c.onWrite != nil {
		c.onWrite(n)
	}
	return n, err
}

// CloseWrite half-closes: the peer reads EOF once it has everything written
// so far, and this side can still Read.
func (c *streamConn) CloseWrite() error {
	c.out.closeWrite(nil)
	if c.onCloseWrite != nil {
		c.onCloseWrite()
	}
	return nil
}

// Close ends the stream in both directions, like close(2) on a socket: what
// was written still goes out with a clean end, but reading stops, so if the
// peer is still sending the stream is reset. The pooled TLS connection it
// rode on stays open for other streams.
func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.out.closeWrite(nil)
		c.in.closeRead(nil)
		if c.onClose != nil {
			c.closeErr = c.onClose()
		}
	})
	return c.closeErr
}

func (c *streamConn) LocalAddr() net.Addr  { return c.local }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

func (c *streamConn) SetReadDeadline(t time.Time) error {
	c.rd.set(t)
	return nil
}

func (c *streamConn) SetWriteDeadline(t time.Time) error {
	c.wd.set(t)
	return nil
}
