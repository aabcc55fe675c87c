package node

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tcpPair is a connected pair of TCP connections on loopback.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// pipe says how each direction ended: nil for an orderly end (FIN both
// ways), the error for a side that was reset, so a connection broken under
// a client's is counted, and which side broke is known.
func TestPipeReportsHowEachDirectionEnded(t *testing.T) {
	var ab, ba atomic.Int64
	run := func(a, b net.Conn) chan [2]error {
		done := make(chan [2]error, 1)
		go func() {
			e1, e2 := pipe(a, b, &ab, &ba)
			done <- [2]error{e1, e2}
		}()
		return done
	}
	wait := func(done chan [2]error) [2]error {
		select {
		case r := <-done:
			return r
		case <-time.After(5 * time.Second):
			t.Fatal("pipe did not return")
			return [2]error{}
		}
	}

	// Orderly: both ends half-close after an exchange.
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	done := run(a, b)
	client.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}
	server.Write([]byte("pong"))
	server.CloseWrite()
	if _, err := io.ReadFull(client, buf); err != nil {
		t.Fatal(err)
	}
	client.CloseWrite()
	if r := wait(done); r[0] != nil || r[1] != nil {
		t.Errorf("orderly end: %v", r)
	}

	// The upstream side resets: b→a ends with ECONNRESET, a→b does not.
	client, a = tcpPair(t)
	b, server = tcpPair(t)
	done = run(a, b)
	client.Write([]byte("ping"))
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}
	server.SetLinger(0)
	server.Close()
	io.Copy(io.Discard, client)
	client.Close()
	r := wait(done)
	if !errors.Is(r[1], syscall.ECONNRESET) {
		t.Errorf("upstream reset: b→a ended with %v, want ECONNRESET", r[1])
	}

	// A side the proxy closes itself (the drain deadline) is not an error
	// here: it is counted where it is closed.
	_, a = tcpPair(t)
	b, _ = tcpPair(t)
	done = run(a, b)
	time.Sleep(20 * time.Millisecond)
	a.Close()
	b.Close()
	if r := wait(done); r[0] != nil || r[1] != nil {
		t.Errorf("closed by the proxy: %v, want no error", r)
	}
}
