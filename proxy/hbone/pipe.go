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

// Streams are built from synchronous one-way pipes rather than handing the
// HTTP/2 bodies straight to callers, because neither end of x/net/http2 offers
// what a net.Conn must: the client's response body and request body have no
// deadlines, and the server's ResponseController read deadline tears the body
// down for good when it fires (net.Conn deadlines are recoverable). A pipe
// gives both ends deadlines that can be moved and half-close semantics we
// control, at the price of one copy.

var (
	errWriteClosed = errors.New("hbone: write after CloseWrite")
	errPipeClosed  = io.ErrClosedPipe
)

// pipe is a synchronous, one-directional in-memory pipe, like io.Pipe but
// with a deadline on each Read and Write and distinct errors for each side.
// Being unbuffered is the point: a Write returns only once the reader has
// taken the bytes, so HTTP/2 flow control stays the only buffer and
// backpressure reaches the writer.
type pipe struct {
	wmu      sync.Mutex    // serialises Writes so one Write's bytes are contiguous
	data     chan []byte   // writer → reader: the bytes on offer
	consumed chan int      // reader → writer: how many the reader took
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
		data:     make(chan []byte),
		consumed: make(chan int),
		wdone:    make(chan struct{}),
		rdone:    make(chan struct{}),
	}
}

// write offers b to the reader until all of it is taken, the pipe closes or
// the deadline channel fires. Bytes already taken are reported in n.
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
		select {
		case p.data <- b:
			k := <-p.consumed
			b = b[k:]
			n += k
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

// read takes what one pending write offers, up to len(b).
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
	select {
	case bw := <-p.data:
		k := copy(b, bw)
		p.consumed <- k
		return k, nil
	case <-p.wdone:
		return 0, p.werr
	case <-p.rdone:
		return 0, p.rerrSelf
	case <-deadline:
		return 0, os.ErrDeadlineExceeded
	}
}

// closeWrite ends the writing side. A nil cause is a clean end: readers get
// io.EOF and later writes errWriteClosed; otherwise both get cause.
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
