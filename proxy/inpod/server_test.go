package inpod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/netnsx"
	"golang.org/x/sys/unix"
)

// event is one Handler call as a test sees it.
type event struct {
	kind     string // add, del, snapshot
	uid      string
	ino      uint64 // add: inode of the received netns fd
	workload string
}

// recHandler records calls and holds the received descriptors like a proxy.
type recHandler struct {
	events chan event
	nack   string        // Add fails with this when set
	block  chan struct{} // Add waits for it when set

	mu           sync.Mutex
	fds          map[string]int
	disconnected []error
}

func newRec(t *testing.T) *recHandler {
	h := &recHandler{events: make(chan event, 64), fds: map[string]int{}}
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, fd := range h.fds {
			unix.Close(fd)
		}
	})
	return h
}

func (h *recHandler) Add(uid string, fd int, w json.RawMessage) error {
	if h.block != nil {
		<-h.block
	}
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	h.mu.Lock()
	if old, ok := h.fds[uid]; ok {
		unix.Close(old)
	}
	h.fds[uid] = fd
	h.mu.Unlock()
	if err != nil {
		return err
	}
	h.events <- event{kind: "add", uid: uid, ino: st.Ino, workload: string(w)}
	if h.nack != "" {
		return errors.New(h.nack)
	}
	return nil
}

func (h *recHandler) Del(uid string) error {
	h.mu.Lock()
	if fd, ok := h.fds[uid]; ok {
		unix.Close(fd)
		delete(h.fds, uid)
	}
	h.mu.Unlock()
	h.events <- event{kind: "del", uid: uid}
	return nil
}

func (h *recHandler) SnapshotDone() { h.events <- event{kind: "snapshot"} }

func (h *recHandler) Disconnected(err error) {
	h.mu.Lock()
	h.disconnected = append(h.disconnected, err)
	h.mu.Unlock()
}

// next returns the next event or fails after a while.
func (h *recHandler) next(t *testing.T) event {
	t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(5 * time.Second):
		t.Fatal("no handler call within 5s")
		return event{}
	}
}

func (h *recHandler) expect(t *testing.T, want ...event) {
	t.Helper()
	for _, w := range want {
		got := h.next(t)
		if w.ino == 0 {
			got.ino = 0
		}
		if got != w {
			t.Fatalf("handler call %+v, want %+v", got, w)
		}
	}
}

func (h *recHandler) quiet(t *testing.T) {
	t.Helper()
	select {
	case e := <-h.events:
		t.Fatalf("unexpected handler call %+v", e)
	case <-time.After(50 * time.Millisecond):
	}
}

// sockPath is short: a unix socket path has at most 107 bytes.
func sockPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "inpod")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

func newServer(t *testing.T, opts ...ServerOption) (*Server, string) {
	path := sockPath(t)
	opts = append([]ServerOption{WithLogf(t.Logf)}, opts...)
	s, err := NewServer(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// pod is a fresh netns and its inode.
func podNS(t *testing.T) (int, uint64) {
	t.Helper()
	fd, err := netnsx.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return fd, st.Ino
}

// runClient runs Connect for h until the test ends.
func runClient(t *testing.T, path string, h Handler) (cancel func(), done chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- Connect(ctx, path, h) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cancel, done
}

func TestSnapshotAddDel(t *testing.T) {
	s, path := newServer(t)
	fdA, inoA := podNS(t)
	fdB, inoB := podNS(t)
	// Added before any proxy: kept for the snapshot.
	if err := s.Add("ns/b", fdB, json.RawMessage(`{"ip":"10.0.0.2"}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("ns/a", fdA, json.RawMessage(`{"ip":"10.0.0.1"}`)); err != nil {
		t.Fatal(err)
	}
	// The server holds its own duplicates: the caller may close its fd.
	unix.Close(fdB)

	h := newRec(t)
	runClient(t, path, h)
	h.expect(t,
		event{kind: "add", uid: "ns/a", ino: inoA, workload: `{"ip":"10.0.0.1"}`},
		event{kind: "add", uid: "ns/b", ino: inoB, workload: `{"ip":"10.0.0.2"}`},
		event{kind: "snapshot"},
	)

	fdC, inoC := podNS(t)
	if err := s.Add("ns/c", fdC, nil); err != nil {
		t.Fatal(err)
	}
	// Add returned, so the proxy has acked: the call already happened.
	h.expect(t, event{kind: "add", uid: "ns/c", ino: inoC})
	if err := unix.Fstat(fdC, &unix.Stat_t{}); err != nil {
		t.Fatal("caller's fd no longer valid after Add:", err)
	}
	if err := s.Del("ns/a"); err != nil {
		t.Fatal(err)
	}
	h.expect(t, event{kind: "del", uid: "ns/a"})
	if err := s.Del("ns/a"); err != nil { // unknown: no-op
		t.Fatal(err)
	}
	h.quiet(t)
	if s.Connected() != 1 {
		t.Fatalf("Connected() = %d", s.Connected())
	}

	// A proxy connecting now sees the current set.
	h2 := newRec(t)
	runClient(t, path, h2)
	h2.expect(t,
		event{kind: "add", uid: "ns/b", ino: inoB, workload: `{"ip":"10.0.0.2"}`},
		event{kind: "add", uid: "ns/c", ino: inoC},
		event{kind: "snapshot"})

	if err := s.Add("", fdC, nil); err == nil {
		t.Fatal("add with empty uid accepted")
	}
	if err := s.Add("ns/x", int(os.Stdin.Fd()), nil); err == nil || !strings.Contains(err.Error(), "namespace") {
		t.Fatalf("add with a non-netns fd: %v", err)
	}
	if err := s.Add("ns/x", fdC, json.RawMessage(`{`)); err == nil {
		t.Fatal("add with invalid workload JSON accepted")
	}
}

func TestTwoProxiesGetEverything(t *testing.T) {
	s, path := newServer(t)
	old, nu := newRec(t), newRec(t)
	runClient(t, path, old)
	old.expect(t, event{kind: "snapshot"})
	runClient(t, path, nu)
	nu.expect(t, event{kind: "snapshot"})

	fd, ino := podNS(t)
	if err := s.Add("ns/p", fd, json.RawMessage(`"w"`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Del("ns/p"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*recHandler{old, nu} {
		h.expect(t, event{kind: "add", uid: "ns/p", ino: ino, workload: `"w"`}, event{kind: "del", uid: "ns/p"})
	}
}

func TestProxyDisconnectIsDropped(t *testing.T) {
	s, path := newServer(t)
	a, b := newRec(t), newRec(t)
	cancelA, doneA := runClient(t, path, a)
	a.expect(t, event{kind: "snapshot"})
	runClient(t, path, b)
	b.expect(t, event{kind: "snapshot"})
	cancelA()
	if err := <-doneA; !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect after cancel: %v", err)
	}
	doneA <- nil // for the cleanup
	fd, _ := podNS(t)
	if err := s.Add("ns/p", fd, nil); err != nil {
		t.Fatal("Add with a proxy gone:", err)
	}
	b.expect(t, event{kind: "add", uid: "ns/p"})
	waitFor(t, func() bool { return s.Connected() == 1 })
}

func TestNackNamesTheProxy(t *testing.T) {
	s, path := newServer(t)
	good, bad := newRec(t), newRec(t)
	bad.nack = "no room for this pod"
	runClient(t, path, good)
	good.expect(t, event{kind: "snapshot"})
	runClient(t, path, bad)
	bad.expect(t, event{kind: "snapshot"})

	fd, _ := podNS(t)
	err := s.Add("ns/p", fd, nil)
	var nack *NackError
	if !errors.As(err, &nack) {
		t.Fatalf("Add = %v, want a NackError", err)
	}
	want := fmt.Sprintf("proxy 2 (pid %d)", os.Getpid())
	if nack.Proxy != want || nack.Reason != "no room for this pod" || !strings.Contains(err.Error(), "ns/p") {
		t.Fatalf("Add error %q (proxy %q), want it to name %q and the reason", err, nack.Proxy, want)
	}
	good.expect(t, event{kind: "add", uid: "ns/p"})
	bad.expect(t, event{kind: "add", uid: "ns/p"})
	// A NACKing proxy stays connected; the pod is remembered.
	if err := s.Del("ns/p"); err != nil {
		t.Fatal(err)
	}
	bad.expect(t, event{kind: "del", uid: "ns/p"})
}

func TestAckTimeoutDropsProxy(t *testing.T) {
	s, path := newServer(t, WithAckTimeout(200*time.Millisecond))
	h := newRec(t)
	h.block = make(chan struct{}) // Add hangs; the empty snapshot does not call it
	defer close(h.block)
	runClient(t, path, h)
	h.expect(t, event{kind: "snapshot"})

	fd, _ := podNS(t)
	start := time.Now()
	err := s.Add("ns/p", fd, nil)
	if err == nil || !strings.Contains(err.Error(), "proxy 1") || !strings.Contains(err.Error(), "no ack") {
		t.Fatalf("Add = %v, want a timeout naming proxy 1", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Add took %v", d)
	}
	waitFor(t, func() bool { return s.Connected() == 0 })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeAgent accepts one proxy and lets the test send raw packets.
type fakeAgent struct {
	t    *testing.T
	conn *net.UnixConn
}

func newFakeAgent(t *testing.T, h Handler) *fakeAgent {
	path := sockPath(t)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	runClient(t, path, h)
	ln.SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &fakeAgent{t: t, conn: c}
}

// send sends a packet with fds and returns the proxy's ack error.
func (a *fakeAgent) send(pkt string, fds ...int) string {
	a.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := a.conn.WriteMsgUnix([]byte(pkt), oob, nil); err != nil {
		a.t.Fatal(err)
	}
	a.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := a.conn.Read(buf)
	if err != nil {
		a.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		a.t.Fatalf("ack %q: %v", buf[:n], err)
	}
	e, ok := m["error"].(string)
	if m["type"] != "ack" || !ok {
		a.t.Fatalf("ack %q: want type ack and an error field", buf[:n])
	}
	return e
}

func TestMalformedIsNacked(t *testing.T) {
	h := newRec(t)
	a := newFakeAgent(t, h)
	ns, ino := podNS(t)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	fdsBefore := openFDs(t)

	for _, c := range []struct {
		pkt  string
		fds  []int
		want string
	}{
		{`not json`, nil, "malformed message"},
		{`{"type":"add","uid":"ns/p"`, []int{ns}, "malformed message"},
		{`{"uid":"ns/p"}`, nil, "no type"},
		{`{"type":"bogus"}`, nil, `unknown message type "bogus"`},
		{`{"type":"add","uid":"ns/p"}`, nil, "want exactly one netns fd attached, got 0"},
		{`{"type":"add","uid":"ns/p"}`, []int{ns, ns}, "got 2"},
		{`{"type":"add","fd":1}`, []int{ns}, "add without uid"},
		{`{"type":"add","uid":"ns/p"}`, []int{int(devnull.Fd())}, "not a namespace"},
		{`{"type":"del","uid":"ns/p"}`, []int{ns}, "unexpected descriptor"},
		{`{"type":"del"}`, nil, "del without uid"},
		{`{"type":"ack","error":""}`, nil, `unknown message type "ack"`},
	} {
		if got := a.send(c.pkt, c.fds...); !strings.Contains(got, c.want) {
			t.Errorf("%s with %d fds: ack error %q, want %q", c.pkt, len(c.fds), got, c.want)
		}
	}
	h.quiet(t) // nothing malformed reached the handler
	// Every descriptor that came with a rejected message was closed.
	if after := openFDs(t); after != fdsBefore {
		t.Errorf("%d descriptors open after the malformed messages, %d before", after, fdsBefore)
	}
	// And the connection still works.
	if got := a.send(`{"type":"add","uid":"ns/p","workload":{"k":1}}`, ns); got != "" {
		t.Fatalf("valid add NACKed: %s", got)
	}
	h.expect(t, event{kind: "add", uid: "ns/p", ino: ino, workload: `{"k":1}`})
	if got := a.send(`{"type":"snapshot-sent"}`); got != "" {
		t.Fatalf("snapshot-sent NACKed: %s", got)
	}
	h.expect(t, event{kind: "snapshot"})
	if got := a.send(`{"type":"del","uid":"ns/p","extra":true}`); got != "" {
		t.Fatalf("del NACKed: %s", got)
	}
	h.expect(t, event{kind: "del", uid: "ns/p"})
}

func openFDs(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func TestServerDropsMisbehavingProxy(t *testing.T) {
	s, path := newServer(t)
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Read the (empty) snapshot's snapshot-sent, answer with garbage.
	buf := make([]byte, 4096)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil || !strings.Contains(string(buf[:n]), TypeSnapshotSent) {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	c.Write([]byte("garbage"))
	if _, err := c.Read(buf); err == nil {
		// An orderly close reads as an empty packet on SOCK_SEQPACKET.
		if n, _ := c.Read(buf); n != 0 {
			t.Fatal("server kept talking to a proxy that sent garbage")
		}
	}
	if s.Connected() != 0 {
		t.Fatalf("Connected() = %d", s.Connected())
	}
}

func TestRunReconnects(t *testing.T) {
	path := sockPath(t)
	h := newRec(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, path, h) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}()

	// No agent yet: Run retries until one appears.
	time.Sleep(250 * time.Millisecond)
	fd, ino := podNS(t)
	s1, err := NewServer(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Add("ns/p", fd, nil); err != nil {
		t.Fatal(err)
	}
	h.expect(t, event{kind: "add", uid: "ns/p", ino: ino}, event{kind: "snapshot"})

	// The agent restarts: the proxy reconnects and gets a fresh snapshot.
	s1.Close()
	s2, err := NewServer(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Add("ns/q", fd, nil); err != nil {
		t.Fatal(err)
	}
	h.expect(t, event{kind: "add", uid: "ns/q", ino: ino}, event{kind: "snapshot"})
	h.mu.Lock()
	n := len(h.disconnected)
	h.mu.Unlock()
	if n == 0 {
		t.Fatal("Disconnected was never called")
	}
}

func TestNewServerSocketFile(t *testing.T) {
	_, live := newServer(t)
	if s, err := NewServer(live); err == nil {
		s.Close()
		t.Fatal("NewServer took over a live agent's socket")
	}
	// A socket nobody listens on any more (agent killed) is replaced.
	stale := sockPath(t)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: stale, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s, err := NewServer(stale)
	if err != nil {
		t.Fatal("stale socket not replaced:", err)
	}
	s.Close()

	path := sockPath(t)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := NewServer(path); err == nil {
		s.Close()
		t.Fatal("NewServer replaced a regular file")
	}
}

func TestWithPodsIsInTheFirstSnapshot(t *testing.T) {
	fdA, inoA := podNS(t)
	if _, err := NewServer(sockPath(t), WithPods(Pod{UID: "ns/a", NetNSFD: int(os.Stdin.Fd())})); err == nil {
		t.Fatal("a preloaded pod with a non-netns fd accepted")
	}
	_, path := newServer(t, WithPods(Pod{UID: "ns/a", NetNSFD: fdA, Workload: json.RawMessage(`{"ip":"10.0.0.1"}`)}))
	h := newRec(t)
	runClient(t, path, h)
	h.expect(t, event{kind: "add", uid: "ns/a", ino: inoA, workload: `{"ip":"10.0.0.1"}`}, event{kind: "snapshot"})
}
