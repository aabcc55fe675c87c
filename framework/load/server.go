package load

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"fortio.org/fortio/fhttp"
)

// shutdownGrace bounds how long ServeHTTP lets in-flight requests finish once
// its context ends. Agents are stopped by SIGTERM at the end of a scenario;
// anything still running after this is cut off rather than delaying teardown.
const shutdownGrace = time.Second

// ServeHTTP serves fortio's echo handler on ln until ctx ends, then shuts the
// server down (in-flight requests get shutdownGrace to finish) and returns nil.
// Any other serving error is returned. ln is closed on return.
//
// The listener is passed in rather than an address so the caller owns the
// bind: it can listen on :0 and learn the port, or bind inside a particular
// network namespace before handing the socket over.
//
// fortio's EchoHandler answers every path and takes its behaviour from query
// parameters (size=N for an N-byte payload, status=503, delay=10ms, close=1,
// ...), so clients choose the response shape without server-side options.
func ServeHTTP(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: http.HandlerFunc(fhttp.EchoHandler),
		// Bound a slow-loris header read but leave bodies and idle keep-alive
		// connections alone: IdleTimeout 0 (with ReadTimeout 0) means the
		// server never closes an idle keep-alive connection by itself, so a
		// reset seen by a keep-alive client is the fault's doing, not ours.
		ReadHeaderTimeout: 10 * time.Second,
		// Accept/handler errors are expected while faults are injected; they
		// are measured by the clients, not logged here.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	// A local cancel so that the shutdown goroutine also ends when Serve
	// fails by itself.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
	}()
	err := srv.Serve(ln)
	// Serve returns as soon as Shutdown starts (or on its own failure); wait
	// for the shutdown to finish so that no connection of ours outlives us.
	cancel()
	<-stopped
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ServeTCPEcho accepts connections on ln and writes every byte received back
// to its sender, until ctx ends. Then it closes the listener and every open
// connection, waits for the handlers to exit and returns nil. ln is closed on
// return.
//
// Closing the connections (not only the listener) matters: it is how a test
// makes long-lived streams break, and an agent stopped at the end of a
// scenario must not leave half-open streams behind.
func ServeTCPEcho(ctx context.Context, ln net.Listener) error {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		done  bool
		wg    sync.WaitGroup
	)
	// A local cancel so that returning for any reason runs the cleanup below.
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	defer func() {
		cancel()
		<-stopped
		wg.Wait()
	}()
	go func() {
		defer close(stopped)
		<-ctx.Done()
		_ = ln.Close()
		mu.Lock()
		done = true
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if parent.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Anything else (EMFILE, ECONNABORTED from a connection reset
			// while queued) is transient: back off like net/http does
			// instead of spinning or giving up on the whole server.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
			}
			continue
		}
		backoff = 0
		mu.Lock()
		if done {
			mu.Unlock()
			_ = c.Close()
			continue
		}
		conns[c] = struct{}{}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			// io.Copy ends on EOF (peer closed) or on any error, including
			// the close above; either way the connection is finished.
			_, _ = io.Copy(c, c)
			_ = c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}
