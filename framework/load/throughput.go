package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Single-stream throughput: SendBulk writes as fast as it can on one TCP
// connection for a while and ServeSink reads and discards. The protocol has
// one extra step so that the result counts bytes delivered, not bytes that
// merely reached the sender's socket buffer: after the sender half-closes,
// the sink answers with the number of bytes it received (8 bytes, big endian)
// and closes.

// BulkBufferSize is the size of every write SendBulk makes.
const BulkBufferSize = 64 << 10

// sinkReadSize is the sink's read buffer: large, so the sink is never the
// bottleneck of the measurement.
const sinkReadSize = 256 << 10

// ackTimeout bounds how long SendBulk waits, after its half-close, for the
// sink to confirm the byte count (the sink must first drain what is in flight).
const ackTimeout = 10 * time.Second

// BulkResult is what SendBulk measured. Times are measured from the first
// write, so the connection setup is not part of the rate.
type BulkResult struct {
	Target    string  `json:"target"`
	ConnectMs float64 `json:"connectMs"` // dial time
	Bytes     int64   `json:"bytes"`     // bytes written to the connection
	Seconds   float64 `json:"seconds"`   // first write to the return of the last
	// Acked: the sink confirmed its count after the half-close; Delivered and
	// DeliveredSeconds are only meaningful then.
	Acked            bool    `json:"acked"`
	Delivered        int64   `json:"delivered"`        // bytes the sink received
	DeliveredSeconds float64 `json:"deliveredSeconds"` // first write to the sink's confirmation
	AckError         string  `json:"ackError,omitempty"`
}

// MBps is the throughput in MB/s (10^6 bytes): delivered bytes over the time
// to their confirmation when the sink confirmed, bytes written over the
// sending time otherwise.
func (r BulkResult) MBps() float64 {
	if r.Acked && r.DeliveredSeconds > 0 {
		return float64(r.Delivered) / r.DeliveredSeconds / 1e6
	}
	if r.Seconds > 0 {
		return float64(r.Bytes) / r.Seconds / 1e6
	}
	return 0
}

// SendBulk dials target (ip:port) once and writes BulkBufferSize buffers on
// that one connection for d, then half-closes and waits for the sink's count.
// It returns an error when it cannot connect or a write fails before d is up;
// a missing confirmation is not an error (AckError says why).
func SendBulk(ctx context.Context, target string, d time.Duration) (BulkResult, error) {
	res := BulkResult{Target: target}
	if d <= 0 {
		return res, fmt.Errorf("send: duration must be positive, got %v", d)
	}
	t0 := time.Now()
	dialer := net.Dialer{Timeout: 5 * time.Second}
	conn, err := dialer.DialContext(ctx, "tcp", target)
	if err != nil {
		return res, fmt.Errorf("send: %w", err)
	}
	res.ConnectMs = float64(time.Since(t0)) / 1e6
	defer conn.Close()
	// Closing the connection is the only way to interrupt a blocked write.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	buf := make([]byte, BulkBufferSize)
	for i := range buf {
		buf[i] = byte(i * 131) // not all zeros, in case anything on the path compresses
	}
	start := time.Now()
	end := start.Add(d)
	// The deadline ends a write stalled by a slow path at d, not later.
	if err := conn.SetWriteDeadline(end); err != nil {
		return res, fmt.Errorf("send: %w", err)
	}
	var werr error
	for time.Now().Before(end) {
		n, err := conn.Write(buf)
		res.Bytes += int64(n)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				werr = err
			}
			break
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if werr != nil {
		return res, fmt.Errorf("send: after %d bytes: %w", res.Bytes, werr)
	}

	tc, ok := conn.(*net.TCPConn)
	if !ok {
		res.AckError = "not a TCP connection: cannot half-close"
		return res, nil
	}
	if err := tc.CloseWrite(); err != nil {
		res.AckError = "half-close: " + err.Error()
		return res, nil
	}
	_ = conn.SetReadDeadline(time.Now().Add(ackTimeout))
	var ack [8]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		res.AckError = "no byte count from the sink: " + err.Error()
		return res, nil
	}
	res.DeliveredSeconds = time.Since(start).Seconds()
	res.Delivered = int64(binary.BigEndian.Uint64(ack[:]))
	res.Acked = true
	return res, nil
}

// SinkConn is what ServeSink saw on one connection.
type SinkConn struct {
	Remote  string
	Bytes   int64
	Seconds float64 // first byte to end of stream (0 when nothing arrived)
	Err     error   // a read error other than the sender's half-close
}

// MBps is the rate the sink received at, in MB/s (10^6 bytes).
func (c SinkConn) MBps() float64 {
	if c.Seconds <= 0 {
		return 0
	}
	return float64(c.Bytes) / c.Seconds / 1e6
}

// ServeSink accepts connections on ln and reads and discards everything sent
// on each. At the end of a stream it answers with the byte count (see
// SendBulk) and closes; then it calls report, if not nil, from the
// connection's goroutine. It runs until ctx ends, then closes the listener
// and every open connection, waits for the handlers and returns nil. ln is
// closed on return.
func ServeSink(ctx context.Context, ln net.Listener, report func(SinkConn)) error {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	}()
	var err error
	for {
		var c net.Conn
		c, err = ln.Accept()
		if err != nil {
			break
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			_ = c.Close()
			continue // the listener is closing: Accept fails next
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			sc := sinkConn(c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			if report != nil {
				report(sc)
			}
		})
	}
	close(stopped)
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// sinkConn reads c to its end, answers with the count and closes c.
func sinkConn(c net.Conn) SinkConn {
	defer c.Close()
	sc := SinkConn{Remote: c.RemoteAddr().String()}
	buf := make([]byte, sinkReadSize)
	var first time.Time
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if sc.Bytes == 0 {
				first = time.Now()
			}
			sc.Bytes += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			sc.Err = err
			break
		}
	}
	if !first.IsZero() {
		sc.Seconds = time.Since(first).Seconds()
	}
	if sc.Err == nil {
		var ack [8]byte
		binary.BigEndian.PutUint64(ack[:], uint64(sc.Bytes))
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(ack[:])
	}
	return sc
}
