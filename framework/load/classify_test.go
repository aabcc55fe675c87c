package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// acceptThen runs a one-shot server that hands each accepted connection to fn.
func acceptThen(t *testing.T, fn func(*net.TCPConn)) string {
	t.Helper()
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fn(c.(*net.TCPConn))
		}
	}()
	return ln.Addr().String()
}

// rstAfterByte aborts the connection (RST, via SO_LINGER 0) once the client
// has sent a byte. Aborting straight after accept would race the client's
// connect: on loopback the RST can arrive before connect returns, and the
// error would then be the dial's.
func rstAfterByte(c *net.TCPConn) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = c.Read(make([]byte, 1))
	_ = c.SetLinger(0)
	_ = c.Close()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  func(t *testing.T) error
		want events.Class
	}{
		{"nil", func(*testing.T) error { return nil }, events.ClassOK},
		{"refused: dial a closed port", func(t *testing.T) error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			_ = ln.Close()
			_, err = net.DialTimeout("tcp", addr, time.Second)
			return err
		}, events.ClassRefused},
		{"reset: read after RST (SO_LINGER 0)", func(t *testing.T) error {
			c := dial(t, acceptThen(t, rstAfterByte))
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write([]byte("x"))
			_, err := c.Read(make([]byte, 1))
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("read after RST gave %v, not ECONNRESET", err)
			}
			return err
		}, events.ClassReset},
		{"reset: write after RST (EPIPE)", func(t *testing.T) error {
			c := dial(t, acceptThen(t, rstAfterByte))
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write([]byte("x"))
			_, _ = c.Read(make([]byte, 1)) // consumes ECONNRESET
			_, err := c.Write([]byte("x"))
			if !errors.Is(err, syscall.EPIPE) {
				t.Logf("write after reset gave %v, not EPIPE", err)
			}
			return err
		}, events.ClassReset},
		{"reset: EOF from a peer that closed", func(t *testing.T) error {
			c := dial(t, acceptThen(t, func(c *net.TCPConn) { _ = c.Close() }))
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err := c.Read(make([]byte, 1))
			return err
		}, events.ClassReset},
		{"reset: HTTP response cut by a closing peer", func(t *testing.T) error {
			c := dial(t, acceptThen(t, func(c *net.TCPConn) {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"))
				_ = c.Close()
			}))
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			return err
		}, events.ClassReset},
		{"reset: no HTTP response at all", func(t *testing.T) error {
			c := dial(t, acceptThen(t, func(c *net.TCPConn) { _ = c.Close() }))
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err := http.ReadResponse(bufio.NewReader(c), nil)
			return err
		}, events.ClassReset},
		{"timeout: peer accepts and never answers", func(t *testing.T) error {
			c := dial(t, acceptThen(t, func(c *net.TCPConn) { t.Cleanup(func() { _ = c.Close() }) }))
			_ = c.SetDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := c.Read(make([]byte, 1))
			return err
		}, events.ClassTimeout},
		{"timeout: context deadline", func(t *testing.T) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
			defer cancel()
			<-ctx.Done()
			return fmt.Errorf("dial: %w", ctx.Err())
		}, events.ClassTimeout},
		{"timeout: ETIMEDOUT", func(*testing.T) error {
			return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}
		}, events.ClassTimeout},
		// No portable way to get ICMP errors on loopback: these are built the
		// way the net package would wrap them.
		{"unreachable: EHOSTUNREACH", func(*testing.T) error {
			return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}
		}, events.ClassUnreachable},
		{"unreachable: ENETUNREACH", func(*testing.T) error {
			return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ENETUNREACH)}
		}, events.ClassUnreachable},
		{"reset: ECONNABORTED", func(*testing.T) error {
			return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNABORTED)}
		}, events.ClassReset},
		{"other: malformed HTTP response", func(t *testing.T) error {
			c := dial(t, acceptThen(t, func(c *net.TCPConn) {
				_, _ = c.Write([]byte("SSH-2.0-nope\r\n\r\n"))
				t.Cleanup(func() { _ = c.Close() })
			}))
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err := http.ReadResponse(bufio.NewReader(c), nil)
			return err
		}, events.ClassOther},
		{"other: echo mismatch", func(*testing.T) error { return errEchoMismatch }, events.ClassOther},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err(t)
			if tc.want != events.ClassOK && err == nil {
				t.Fatal("the setup produced no error")
			}
			if got := Classify(err); got != tc.want {
				t.Errorf("Classify(%v) = %s, want %s", err, got, tc.want)
			}
		})
	}
}
