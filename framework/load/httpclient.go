package load

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"fortio.org/fortio/periodic"

	"blastradius.dev/blastradius/framework/events"
)

// DefaultHTTPPath asks fortio's EchoHandler (which answers any path) for a
// fixed 64-byte payload: a small, constant response, so latency measures the
// network and the proxies rather than payload generation.
const DefaultHTTPPath = "/echo?size=64"

// HTTPClient is the runnable of the "http-keepalive" and "http-newconn"
// profiles: a deliberately minimal HTTP/1.1 client on a raw net.Conn. Use one
// per fortio thread; it holds that thread's connection.
//
// We do not use net/http's Transport or fortio's HTTP clients because both
// retry a request once when a reused keep-alive connection turns out to be
// dead. That retry is right for applications and wrong for us: the first
// request after a fault is exactly the one that sees it, and a silent retry
// would report it as a slow success. Here every request is one attempt; on any
// error the connection is closed, the failure is reported, and the next
// request dials afresh.
type HTTPClient struct {
	Target  string        // ip:port to dial
	Host    string        // Host header; "" means Target
	Path    string        // request target; "" means DefaultHTTPPath
	Timeout time.Duration // whole request: dial + write + response + body; 0 means DefaultTimeout
	// NewConn dials a new connection for every request and sends
	// "Connection: close" (the "http-newconn" profile): every request then
	// exercises connection setup (SYN, proxy accept, upstream selection).
	NewConn bool

	conn net.Conn
	br   *bufio.Reader
	req  []byte
}

var _ periodic.Runnable = (*HTTPClient)(nil)

// Run makes one request. details is the outcome: "ok:200", "http:503",
// "timeout", "reset", ...
func (c *HTTPClient) Run(ctx context.Context, _ periodic.ThreadID) (bool, string) {
	status, err := c.roundTrip(ctx)
	if err != nil {
		c.closeConn()
		return false, failure(err)
	}
	if status < 200 || status > 299 {
		return false, outcome(events.ClassHTTP, status)
	}
	return true, outcome(events.ClassOK, status)
}

// Close releases the connection, if any.
func (c *HTTPClient) Close() error {
	c.closeConn()
	return nil
}

func (c *HTTPClient) roundTrip(ctx context.Context) (int, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// One deadline for everything, so a request's outcome is known within
	// Timeout whether the fault stalls the dial, the write or the response.
	deadline := time.Now().Add(timeout)
	if c.conn == nil {
		d := net.Dialer{Deadline: deadline}
		conn, err := d.DialContext(ctx, "tcp", c.Target)
		if err != nil {
			return 0, err
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 4<<10)
		} else {
			c.br.Reset(conn)
		}
	}
	if err := c.conn.SetDeadline(deadline); err != nil {
		return 0, err
	}
	if _, err := c.conn.Write(c.request()); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(c.br, nil) // nil request: a GET, which it is
	if err != nil {
		return 0, err
	}
	// Read the whole body: a response cut short is a failure (it surfaces as
	// io.ErrUnexpectedEOF, i.e. reset), and the connection can only be
	// reused once the body is consumed.
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return 0, err
	}
	// Close when we asked for it, when the server announced it, or when the
	// server sent more than one response's worth of bytes (the stream is out
	// of step and the next response would be misattributed).
	if c.NewConn || resp.Close || c.br.Buffered() > 0 {
		c.closeConn()
	}
	return resp.StatusCode, nil
}

// request is the request bytes, built once: every request of a client is the
// same.
func (c *HTTPClient) request() []byte {
	if c.req != nil {
		return c.req
	}
	host, path := c.Host, c.Path
	if host == "" {
		host = c.Target
	}
	if path == "" {
		path = DefaultHTTPPath
	}
	b := []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: blastradius\r\n")
	if c.NewConn {
		b = append(b, "Connection: close\r\n"...)
	}
	c.req = append(b, "\r\n"...)
	return c.req
}

func (c *HTTPClient) closeConn() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}
