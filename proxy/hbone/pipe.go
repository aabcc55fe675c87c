package hbone

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// A stream's receive side is an in-memory pipe: the connection's one reader
// goroutine puts DATA payloads in, the stream's user takes them out. The pipe
// is what lets one reader serve many streams without ever waiting for a slow
// one (HTTP/2 flow control keeps each stream within the pipe's bound), and
// what gives reads deadlines that can be moved, as a net.Conn's must.

var (
	errWriteClosed = errors.New("hbone: write after CloseWrite")
	errPipeClosed  = io.ErrClosedPipe
)

// pipeBuffer bounds what a pipe holds. It is also the per-stream receive
// window we advertise, so a peer that respects flow control can never
// overfill it: the connection's reader never blocks on a stream.
const pipeBuffer = 256 << 10

// pipeInitial is the ring's first size. Rings grow (by 4×, up to pipeBuffer)
// only when a stream actually has that much in flight, so the many streams
// that carry small requests cost one small buffer each, which is what keeps
// the node proxy's RSS low.
const pipeInitial = 16 << 10

// pipe is a bounded, one-directional in-memory pipe, like io.Pipe but
// buffered, with a deadline on each read and write and distinct errors for
// each side.
type pipe struct {
	wmu      sync.Mutex    // serialises writes so one write's bytes are contiguous
	mu       sync.Mutex    // guards ring, r, n, filling
	ring     []byte        // allocated on first write, grown on demand up to pipeBuffer
	r, n     int           // start and length of the buffered bytes in ring
	filling  bool          // a reserve is outstanding: bytes are being copied in outside mu
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

	// onConsume, if set, is told how many bytes the reading side took: the
	// stream turns that into flow-control credit for the peer.
	onConsume func(int)
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

// growLocked makes room for need more bytes if the bound allows, keeping
// the buffered bytes in order (moved to the start of the new ring). It
// reports whether there is room.
func (p *pipe) growLocked(need int) bool {
	want := p.n + need
	if want > pipeBuffer {
		return false
	}
	if want <= len(p.ring) {
		return true
	}
	size := max(len(p.ring), pipeInitial/4)
	for size < want {
		size *= 4
	}
	size = min(size, pipeBuffer)
	ring := make([]byte, size)
	if p.n > 0 {
		end := min(p.r+p.n, len(p.ring))
		c := copy(ring, p.ring[p.r:end])
		copy(ring[c:p.n], p.ring)
	}
	p.ring, p.r = ring, 0
	return true
}

// write copies b into the pipe, waiting for space while it is full, until
// all of it is in, the pipe closes or the deadline channel fires. Bytes
// already in are reported in n. (The HBONE connection does not use it: its
// reader uses reserve and commit; write is the general form.)
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
		k := min(pipeBuffer-p.n, len(b))
		if k > 0 && p.growLocked(k) {
			w := (p.r + p.n) % len(p.ring)
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

// errPipeFull is reserve's answer when k bytes do not fit: for the HBONE
// reader that means the peer sent more than the window it was given.
var errPipeFull = errors.New("hbone: receive buffer overflow")

// reserve returns room for exactly k bytes at the end of the buffered ones,
// as up to two slices (the ring may wrap), without waiting. The caller fills
// them outside the lock (the connection's reader reads the TLS stream
// straight into them, saving a copy) and then calls commit. dst is nil (and
// err nil) when the pipe no longer takes bytes: the caller discards them.
// Only one reserve may be outstanding at a time.
func (p *pipe) reserve(k int) (a, b []byte, err error) {
	if isClosed(p.wdone) || isClosed(p.rdone) {
		return nil, nil, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.growLocked(k) {
		return nil, nil, errPipeFull
	}
	p.filling = true
	w := (p.r + p.n) % len(p.ring)
	end := min(w+k, len(p.ring))
	return p.ring[w:end], p.ring[:k-(end-w)], nil
}

// commit makes k reserved bytes readable (k = 0 abandons the reservation).
func (p *pipe) commit(k int) {
	p.mu.Lock()
	p.filling = false
	if p.ring != nil { // nil: the read side closed meanwhile; drop them
		p.n += k
	}
	p.mu.Unlock()
	if k > 0 {
		signal(p.readable)
	}
}

// consumedLocked drops k bytes from the front. An emptied ring restarts at
// offset 0, so a stream of small messages keeps reusing the same first bytes
// (few pages touched) instead of walking the whole ring.
func (p *pipe) consumedLocked(k int) {
	p.r, p.n = (p.r+k)%len(p.ring), p.n-k
	if p.n == 0 && !p.filling {
		p.r = 0
	}
}

// wait blocks until bytes are buffered, returning an error instead when the
// pipe is empty and closed, or the deadline passes.
func (p *pipe) wait(deadline <-chan struct{}) error {
	for {
		p.mu.Lock()
		n := p.n
		p.mu.Unlock()
		if n > 0 {
			return nil
		}
		// Empty: a closed write side means the end (after the buffered
		// bytes, which were taken above).
		if isClosed(p.wdone) {
			return p.werr
		}
		select {
		case <-p.readable:
		case <-p.wdone:
		case <-p.rdone:
			return p.rerrSelf
		case <-deadline:
			return os.ErrDeadlineExceeded
		}
	}
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
			end := min(p.r+k, len(p.ring))
			c := copy(b, p.ring[p.r:end])
			copy(b[c:k], p.ring) // the part that wrapped around
			p.consumedLocked(k)
			p.mu.Unlock()
			signal(p.writable)
			if p.onConsume != nil {
				p.onConsume(k)
			}
			return k, nil
		}
		p.mu.Unlock()
		if err := p.wait(deadline); err != nil {
			if isClosed(p.rdone) {
				return 0, p.rerrSelf
			}
			return 0, err
		}
	}
}

// writeTo writes buffered bytes to w straight from the ring (no copy into an
// intermediate buffer) until the pipe ends: nil at a clean end, as
// io.WriterTo. deadline is asked again before each wait, since the read
// deadline can move while writeTo runs.
func (p *pipe) writeTo(w io.Writer, deadline func() <-chan struct{}) (int64, error) {
	var total int64
	for {
		if isClosed(p.rdone) {
			return total, p.rerrSelf
		}
		if err := p.wait(deadline()); err != nil {
			if err == io.EOF {
				return total, nil
			}
			if isClosed(p.rdone) {
				return total, p.rerrSelf
			}
			return total, err
		}
		p.mu.Lock()
		if p.ring == nil {
			p.mu.Unlock()
			continue // closed meanwhile
		}
		// The slice stays valid outside the lock: the filler only writes
		// past the buffered bytes, and a ring that grows is replaced, not
		// overwritten.
		chunk := p.ring[p.r:min(p.r+p.n, len(p.ring))]
		p.mu.Unlock()
		n, err := w.Write(chunk)
		if n > 0 {
			p.mu.Lock()
			if p.ring != nil {
				p.consumedLocked(n)
			}
			p.mu.Unlock()
			signal(p.writable)
			if p.onConsume != nil {
				p.onConsume(n)
			}
			total += int64(n)
		}
		if err != nil {
			return total, err
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
func (d *deadline) wait() <-chan struct{} {
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
