package hbonebench

import (
	"context"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// Sizes shared by both implementations: a small request for latency, and
// 64 KiB writes (what proxy/hbone's own BenchmarkStreamThroughput uses) for
// throughput.
const (
	msgSize   = 64
	chunkSize = 64 << 10
)

// BenchmarkHBONE runs the same three cases over each implementation, each
// on loopback with TLS 1.3 and crypto/tls's default key exchange on both
// ends, a test CA's certificates on both sides, and the same TCP echo
// target behind the HBONE server. The TLS connection (and, where the case
// keeps one, the stream) is set up before the timer starts.
//
//   - roundtrip: one 64-byte message and its echo on a kept stream.
//   - newstream: a CONNECT per request on the pooled TLS connection, then
//     the same 64-byte exchange, then close.
//   - throughput: 64 KiB writes on one stream while the echoed bytes are
//     read back; MB/s counts bytes echoed back, each of which crossed the
//     tunnel twice.
//
// roundtrip and newstream report the median iteration as p50-µs; ns/op is
// the mean.
func BenchmarkHBONE(b *testing.B) {
	for _, im := range impls {
		b.Run("impl="+im.name, func(b *testing.B) {
			tun := im.setup(b, newTestCA(b), newEcho(b))
			b.Run("roundtrip", func(b *testing.B) { benchRoundTrip(b, tun) })
			b.Run("newstream", func(b *testing.B) { benchNewStream(b, tun) })
			b.Run("throughput", func(b *testing.B) { benchThroughput(b, tun) })
		})
	}
}

func benchCtx(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// exchange writes msg and reads its echo into got.
func exchange(c net.Conn, msg, got []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(c, got)
	return err
}

func benchRoundTrip(b *testing.B, tun *tunnel) {
	ctx := benchCtx(b)
	c, err := tun.open(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg, got := make([]byte, msgSize), make([]byte, msgSize)
	if err := exchange(c, msg, got); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := exchange(c, msg, got); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	reportP50(b, lat)
}

func benchNewStream(b *testing.B, tun *tunnel) {
	ctx := benchCtx(b)
	msg, got := make([]byte, msgSize), make([]byte, msgSize)
	one := func() error {
		c, err := tun.open(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		return exchange(c, msg, got)
	}
	// The first stream makes the TLS connection; later ones reuse it.
	if err := one(); err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := one(); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	reportP50(b, lat)
}

func benchThroughput(b *testing.B, tun *tunnel) {
	ctx := benchCtx(b)
	c, err := tun.open(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk, got := make([]byte, chunkSize), make([]byte, chunkSize)
	if err := exchange(c, chunk, got); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(chunkSize)
	b.ResetTimer()
	errc := make(chan error, 1)
	go func() {
		for range b.N {
			if _, err := c.Write(chunk); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	if _, err := io.CopyN(io.Discard, c, int64(b.N)*chunkSize); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

func reportP50(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
}
