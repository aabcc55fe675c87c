package hbone

import (
	"net"
	"sync"
)

// corkConn sits between crypto/tls and the TCP connection. crypto/tls
// writes every TLS record (at most 16 KiB) with its own write(2); a corked
// corkConn gathers the records of one large tls.Conn.Write instead and sends
// them with a single write(2) when uncorked. Each write(2) on TCP pays for a
// trip through the whole network stack (on a veth, the receiver's too), so a
// 64 KiB DATA frame costs one trip instead of four.
type corkConn struct {
	net.Conn
	mu     sync.Mutex // crypto/tls can write (alerts) from its reader too
	corked bool
	buf    *[]byte
}

// corkBufs hold gathered records only for the duration of one flush, so
// idle connections keep none.
var corkBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, maxFrameSize+maxFrameSize/8)
	return &b
}}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.corked {
		*c.buf = append(*c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	if c.buf == nil {
		c.buf = corkBufs.Get().(*[]byte)
	}
	c.mu.Unlock()
}

// uncork sends what was gathered.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	bp := c.buf
	c.buf = nil
	if bp == nil {
		return nil
	}
	var err error
	if len(*bp) > 0 {
		_, err = c.Conn.Write(*bp)
	}
	*bp = (*bp)[:0]
	if cap(*bp) <= 4*maxFrameSize {
		corkBufs.Put(bp)
	}
	return err
}
