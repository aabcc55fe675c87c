package hbonebench

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// TestBothHBONEImplementationsCarryBytes checks what the benchmarks rely
// on: through each implementation, bytes reach the echo target and come
// back unchanged, over a kept stream and over fresh streams, and the HBONE
// server saw the client's certificate. A benchmark that only timed a failing
// dial or an empty read would otherwise look fast.
func TestBothHBONEImplementationsCarryBytes(t *testing.T) {
	for _, im := range impls {
		t.Run("impl="+im.name, func(t *testing.T) {
			echo := newEcho(t)
			tun := im.setup(t, newTestCA(t), echo)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			// A kept stream: a small message, then more than one TLS
			// record, HTTP/2 frame and flow-control window's worth.
			c, err := tun.open(ctx)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if dl, ok := ctx.Deadline(); ok {
				_ = c.SetDeadline(dl)
			}
			big := make([]byte, 1<<20)
			for i := range big {
				big[i] = byte(i * 7)
			}
			for _, msg := range [][]byte{[]byte("hello through hbone"), big} {
				errc := make(chan error, 1)
				go func() { _, err := c.Write(msg); errc <- err }()
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil {
					t.Fatalf("read echo of %d bytes: %v", len(msg), err)
				}
				if err := <-errc; err != nil {
					t.Fatalf("write %d bytes: %v", len(msg), err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("echo of %d bytes differs", len(msg))
				}
			}
			c.Close()

			// Fresh streams, as the newstream benchmark opens them.
			for i := range 5 {
				msg := []byte{byte(i), 'n', 'e', 'w'}
				c, err := tun.open(ctx)
				if err != nil {
					t.Fatalf("open stream %d: %v", i, err)
				}
				got := make([]byte, len(msg))
				if _, err := c.Write(msg); err != nil {
					t.Fatalf("stream %d write: %v", i, err)
				}
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("stream %d: echo %q, %v; want %q", i, got, err, msg)
				}
				c.Close()
			}

			want := int64(len("hello through hbone") + len(big) + 5*4)
			deadline := time.Now().Add(5 * time.Second)
			for echo.echoed.Load() < want && time.Now().Before(deadline) {
				// The echo adds its count when a stream's copy ends, a
				// moment after the client closed it.
				time.Sleep(10 * time.Millisecond)
			}
			if got := echo.echoed.Load(); got != want {
				t.Errorf("echo target carried %d bytes, want %d", got, want)
			}
			if n := tun.peerCerts(); n == 0 {
				t.Error("HBONE server saw no client certificate")
			}
		})
	}
}
