package hbone

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkStreamThroughput sends 64 KiB writes through one HBONE stream over
// loopback to a sink: the per-byte cost of the tunnel (TLS, HTTP/2, pipes).
func BenchmarkStreamThroughput(b *testing.B) {
	e := newEnv(b, withForward(func(_ context.Context, st net.Conn, _, _ string) error {
		_, err := io.Copy(io.Discard, st)
		return err
	}))
	d, _ := e.dialer(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.Connect(ctx, clientID, e.addr, "10.0.0.1:80", serverID)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequestRoundTrip is one small request and its echo on a kept
// stream: the per-request latency cost of the tunnel.
func BenchmarkRequestRoundTrip(b *testing.B) {
	e := newEnv(b)
	d, _ := e.dialer(nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.Connect(ctx, clientID, e.addr, "10.0.0.1:80", serverID)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	got := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
	}
}
