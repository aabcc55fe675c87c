package load_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/load"
)

// startSink serves a sink on a loopback port; the returned channel gets every
// connection report, stop ends the sink and checks its error.
func startSink(t *testing.T) (addr string, reports <-chan load.SinkConn, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan load.SinkConn, 16)
	errc := make(chan error, 1)
	go func() { errc <- load.ServeSink(ctx, ln, func(c load.SinkConn) { ch <- c }) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("ServeSink returned %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("ServeSink did not return within 5s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), ch, stop
}

func TestSendBulkToSink(t *testing.T) {
	addr, reports, _ := startSink(t)
	const d = 300 * time.Millisecond
	res, err := load.SendBulk(context.Background(), addr, d)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Acked {
		t.Fatalf("not acknowledged: %s", res.AckError)
	}
	if res.Bytes < load.BulkBufferSize {
		t.Errorf("only %d bytes written in %v", res.Bytes, d)
	}
	if res.Delivered != res.Bytes {
		t.Errorf("sink counted %d bytes, sender wrote %d", res.Delivered, res.Bytes)
	}
	if res.Seconds < d.Seconds()*0.9 || res.Seconds > d.Seconds()+2 {
		t.Errorf("sent for %.3fs, want about %v", res.Seconds, d)
	}
	if res.DeliveredSeconds < res.Seconds {
		t.Errorf("confirmed after %.3fs, before the sending ended (%.3fs)", res.DeliveredSeconds, res.Seconds)
	}
	if res.MBps() <= 0 {
		t.Errorf("rate %v", res.MBps())
	}
	select {
	case c := <-reports:
		if c.Err != nil || c.Bytes != res.Bytes {
			t.Errorf("sink report %+v, want %d bytes and no error", c, res.Bytes)
		}
		if c.MBps() <= 0 {
			t.Errorf("sink rate %v", c.MBps())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no sink report")
	}
}

func TestSendBulkNoListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := load.SendBulk(context.Background(), addr, 100*time.Millisecond); err == nil {
		t.Fatal("SendBulk to a closed port: no error")
	}
}

func TestSendBulkCancelled(t *testing.T) {
	addr, _, _ := startSink(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if _, err := load.SendBulk(ctx, addr, time.Minute); err == nil {
		t.Fatal("cancelled SendBulk: no error")
	}
	if el := time.Since(t0); el > 5*time.Second {
		t.Errorf("cancelled SendBulk took %v", el)
	}
}

// A sender that never half-closes is cut off when the sink stops, and the
// sink still returns promptly.
func TestSinkStopClosesOpenConnections(t *testing.T) {
	addr, reports, stop := startSink(t)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	stop()
	select {
	case r := <-reports:
		if r.Bytes != 1000 {
			t.Errorf("sink counted %d bytes, want 1000", r.Bytes)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report for the cut-off connection")
	}
}

func TestBulkResultMBps(t *testing.T) {
	r := load.BulkResult{Bytes: 4e6, Seconds: 2}
	if got := r.MBps(); got != 2 {
		t.Errorf("unacknowledged: %v MB/s, want 2", got)
	}
	r.Acked, r.Delivered, r.DeliveredSeconds = true, 4e6, 4
	if got := r.MBps(); got != 1 {
		t.Errorf("acknowledged: %v MB/s, want 1", got)
	}
}
