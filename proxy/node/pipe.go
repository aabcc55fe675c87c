package node

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// closeWriter is a connection that can half-close.
type closeWriter interface{ CloseWrite() error }

// pipe copies both ways until both directions end, propagating half-closes
// (a client's FIN reaches the server while the answer still flows back), and
// returns how each direction ended: errAB for a→b, errBA for b→a; nil for an
// orderly end (EOF), and nil for a connection the proxy closed itself (the
// drain deadline), which it accounts for where it closes.
func pipe(a, b net.Conn, ab, ba *atomic.Int64) (errAB, errBA error) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn, n *atomic.Int64, end *error) {
		defer wg.Done()
		_, err := io.Copy(counter{dst, n}, src)
		if err != nil && !errors.Is(err, net.ErrClosed) {
			*end = err
		}
		if cw, ok := dst.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	go cp(b, a, ab, &errAB)
	go cp(a, b, ba, &errBA)
	wg.Wait()
	a.Close()
	b.Close()
	return errAB, errBA
}

// counter counts bytes written through it.
type counter struct {
	net.Conn
	n *atomic.Int64
}

func (c counter) Write(p []byte) (int, error) {
	k, err := c.Conn.Write(p)
	if c.n != nil {
		c.n.Add(int64(k))
	}
	return k, err
}

// ReadFrom lets io.Copy hand the source to the destination when it can take
// it (an HBONE stream reads the socket straight into its frame buffer: no
// 32 KiB copy buffer, 64 KiB reads), counting through the reader so that the
// count still moves as bytes flow rather than once at the end.
func (c counter) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok && c.n != nil {
		if _, tcp := c.Conn.(*net.TCPConn); !tcp {
			return rf.ReadFrom(countingReader{r, c.n})
		}
	}
	// A TCP destination would splice from a TCP source, bypassing the
	// count; the plain copy keeps it.
	return io.Copy(struct{ io.Writer }{c}, r)
}

// countingReader counts bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// resetClose closes a TCP connection with a RST, which is what a client sees
// when a proxy that accepted its connection cannot carry it anywhere.
func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
