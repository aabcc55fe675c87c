package inpod

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/proxy/netnsx"
)

// event is one Handler call as a test sees it.
type event struct {
	kind     string // add, keep, del, snapshot
	uid      string
	ino      uint64 // add: inode of the received netns fd
	workload string // add: the workload info, as infoString prints it
}

// wi is a workload info.
func wi(ns, name, sa string) *zdsapi.WorkloadInfo {
	return &zdsapi.WorkloadInfo{Namespace: ns, Name: name, ServiceAccount: sa}
}

// infoString prints a workload info for comparison in events: "" for none.
func infoString(w *zdsapi.WorkloadInfo) string {
	if w == nil {
		return ""
	}
	return fmt.Sprintf("%s/%s sa=%s", w.GetNamespace(), w.GetName(), w.GetServiceAccount())
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

func (h *recHandler) Add(uid string, fd int, w *zdsapi.WorkloadInfo) error {
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
	h.events <- event{kind: "add", uid: uid, ino: st.Ino, workload: infoString(w)}
	if h.nack != "" {
		return errors.New(h.nack)
	}
	return nil
}

func (h *recHandler) Keep(uid string) error {
	h.events <- event{kind: "keep", uid: uid}
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
	if err := s.Add("ns/b", fdB, wi("ns", "b", "sa-b")); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("ns/a", fdA, wi("ns", "a", "sa-a")); err != nil {
		t.Fatal(err)
	}
	// The server holds its own duplicates: the caller may close its fd.
	unix.Close(fdB)

	h := newRec(t)
	runClient(t, path, h)
	h.expect(t,
		event{kind: "add", uid: "ns/a", ino: inoA, workload: "ns/a sa=sa-a"},
		event{kind: "add", uid: "ns/b", ino: inoB, workload: "ns/b sa=sa-b"},
		event{kind: "snapshot"},
	)
	waitFor(t, func() bool { return s.Connected() == 1 })

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
		event{kind: "add", uid: "ns/b", ino: inoB, workload: "ns/b sa=sa-b"},
		event{kind: "add", uid: "ns/c", ino: inoC},
		event{kind: "snapshot"})

	for _, c := range []struct {
		name string
		uid  string
		fd   int
		info *zdsapi.WorkloadInfo
		want string
	}{
		{"empty uid", "", fdC, nil, "empty uid"},
		{"non-netns fd", "ns/x", int(os.Stdin.Fd()), nil, "namespace"},
		{"no netns", "ns/x", -1, nil, "no network namespace"},
		{"uid not UTF-8", "ns/\xff", fdC, nil, "not UTF-8"},
		{"workload not UTF-8", "ns/x", fdC, wi("ns", "x\xff", "sa"), "not UTF-8"},
	} {
		if err := s.Add(c.uid, c.fd, c.info); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("add with %s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	// None of them reached a proxy.
	h.quiet(t)
	h2.quiet(t)
}

// As in istio-cni, a pod added once proxies are connected goes to the newest
// one only (a graceful restart hands the node over to it), a delete to every
// one.
func TestAddGoesToNewestDelToAll(t *testing.T) {
	s, path := newServer(t)
	old, nu := newRec(t), newRec(t)
	runClient(t, path, old)
	old.expect(t, event{kind: "snapshot"})
	runClient(t, path, nu)
	nu.expect(t, event{kind: "snapshot"})
	waitFor(t, func() bool { return s.Connected() == 2 })

	fd, ino := podNS(t)
	if err := s.Add("ns/p", fd, wi("ns", "p", "w")); err != nil {
		t.Fatal(err)
	}
	nu.expect(t, event{kind: "add", uid: "ns/p", ino: ino, workload: "ns/p sa=w"})
	old.quiet(t)

	if err := s.Del("ns/p"); err != nil {
		t.Fatal(err)
	}
	nu.expect(t, event{kind: "del", uid: "ns/p"})
	old.expect(t, event{kind: "del", uid: "ns/p"})
	old.quiet(t)
	nu.quiet(t)
}

// A proxy that goes away is dropped: the next Add goes to the newest proxy
// still connected.
func TestProxyDisconnectIsDropped(t *testing.T) {
	s, path := newServer(t)
	a, b := newRec(t), newRec(t)
	runClient(t, path, a)
	a.expect(t, event{kind: "snapshot"})
	cancelB, doneB := runClient(t, path, b)
	b.expect(t, event{kind: "snapshot"})
	waitFor(t, func() bool { return s.Connected() == 2 })
	cancelB()
	if err := <-doneB; !errors.Is(err, context.Canceled) {
		t.Fatalf("Connect after cancel: %v", err)
	}
	doneB <- nil // for the cleanup
	waitFor(t, func() bool { return s.Connected() == 1 })
	fd, _ := podNS(t)
	if err := s.Add("ns/p", fd, nil); err != nil {
		t.Fatal("Add with a proxy gone:", err)
	}
	a.expect(t, event{kind: "add", uid: "ns/p"})
	b.quiet(t)
}

func TestNackNamesTheProxy(t *testing.T) {
	s, path := newServer(t)
	good, bad := newRec(t), newRec(t)
	bad.nack = "no room for this pod"
	runClient(t, path, good)
	good.expect(t, event{kind: "snapshot"})
	runClient(t, path, bad)
	bad.expect(t, event{kind: "snapshot"})
	waitFor(t, func() bool { return s.Connected() == 2 })

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
	bad.expect(t, event{kind: "add", uid: "ns/p"})
	good.quiet(t) // not the newest
	// A NACKing proxy stays connected; the pod is remembered.
	if err := s.Del("ns/p"); err != nil {
		t.Fatal(err)
	}
	bad.expect(t, event{kind: "del", uid: "ns/p"})
	good.expect(t, event{kind: "del", uid: "ns/p"})
}

// A handler error of any length is sent back in an ack that fits istio-cni's
// 1024-byte buffer: the reason the agent reports is cut, on a character
// boundary, and stays one line.
func TestLongNackReasonIsTruncated(t *testing.T) {
	s, path := newServer(t)
	h := newRec(t)
	// 10 000 characters, many of them several bytes long, with line
	// breaks.
	long := string([]rune(strings.Repeat("pod ü 🙂 rejected\n", 600))[:10_000])
	h.nack = long
	runClient(t, path, h)
	h.expect(t, event{kind: "snapshot"})
	waitFor(t, func() bool { return s.Connected() == 1 })

	fd, _ := podNS(t)
	err := s.Add("ns/p", fd, nil)
	var nack *NackError
	if !errors.As(err, &nack) {
		t.Fatalf("Add = %v, want a NackError (the proxy must not be dropped over a long reason)", err)
	}
	h.expect(t, event{kind: "add", uid: "ns/p"})
	r := nack.Reason
	if len(r) > maxAck || len(r) < maxAck/2 {
		t.Errorf("NACK reason of %d bytes, want it cut to fit %d", len(r), maxAck)
	}
	if !utf8.ValidString(r) || strings.ContainsAny(r, "\r\n") {
		t.Errorf("NACK reason is not one line of valid UTF-8: %q", r)
	}
	if !strings.HasSuffix(r, "…") || !strings.HasPrefix(oneline.Escape(long), strings.TrimSuffix(r, "…")) {
		t.Errorf("NACK reason %q is not the start of the handler's error and an ellipsis", r)
	}
	// The proxy is still connected and in step.
	if s.Connected() != 1 {
		t.Fatalf("Connected() = %d after a long NACK", s.Connected())
	}
	if err := s.Del("ns/p"); err != nil {
		t.Fatal(err)
	}
	h.expect(t, event{kind: "del", uid: "ns/p"})
}

func TestAckTimeoutDropsProxy(t *testing.T) {
	s, path := newServer(t, WithAckTimeout(200*time.Millisecond))
	h := newRec(t)
	h.block = make(chan struct{}) // Add hangs; the empty snapshot does not call it
	defer close(h.block)
	runClient(t, path, h)
	h.expect(t, event{kind: "snapshot"})
	waitFor(t, func() bool { return s.Connected() == 1 })

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

// A server built with a pod it has no namespace for (NetNSFD < 0) sends it as
// keep in every snapshot, and add for the others, then snapshot_sent.
func TestSnapshotAddAndKeep(t *testing.T) {
	fdA, inoA := podNS(t)
	logs := &logBuf{}
	s, path := newServer(t, WithLogf(logs.logf(t)), WithPods(
		Pod{UID: "ns/a", NetNSFD: fdA, Workload: wi("ns", "a", "sa-a")},
		Pod{UID: "ns/k", NetNSFD: -1, Workload: wi("ns", "k", "sa-k")},
	))
	for i := range 2 { // the first proxy, and one that connects later
		h := newRec(t)
		runClient(t, path, h)
		h.expect(t,
			event{kind: "add", uid: "ns/a", ino: inoA, workload: "ns/a sa=sa-a"},
			event{kind: "keep", uid: "ns/k"},
			event{kind: "snapshot"})
		h.quiet(t)
		// Every message of the snapshot was acked: the proxy is a member.
		waitFor(t, func() bool { return s.Connected() == i+1 })
	}
	if logs.has("rejected") || logs.has("snapshot") {
		t.Errorf("the server logged a problem with the snapshot: %q", logs.lines)
	}
	// The kept pod is known: deleting it tells the proxies.
	h := newRec(t)
	runClient(t, path, h)
	h.expect(t, event{kind: "add", uid: "ns/a", workload: "ns/a sa=sa-a"}, event{kind: "keep", uid: "ns/k"}, event{kind: "snapshot"})
	waitFor(t, func() bool { return s.Connected() == 3 })
	if err := s.Del("ns/k"); err != nil {
		t.Fatal(err)
	}
	h.expect(t, event{kind: "del", uid: "ns/k"})
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

// newFakeAgent lets a proxy (Connect with h) connect and checks that its
// first packet is a ZDS hello for version 1.
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
	a := &fakeAgent{t: t, conn: c}
	pkt := a.read()
	var hello zdsapi.ZdsHello
	if err := proto.Unmarshal(pkt, &hello); err != nil || hello.Version != zdsapi.Version_V1 {
		t.Fatalf("the proxy's first packet %x is not a V1 hello (%v, %v)", pkt, hello.Version, err)
	}
	return a
}

// read returns the proxy's next packet, which must fit in an ack buffer.
func (a *fakeAgent) read() []byte {
	a.t.Helper()
	a.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4*maxAck)
	n, err := a.conn.Read(buf)
	if err != nil {
		a.t.Fatal(err)
	}
	if n > maxAck {
		a.t.Fatalf("the proxy sent %d bytes; istio-cni reads at most %d", n, maxAck)
	}
	return buf[:n]
}

// sendRaw sends a packet with fds and returns the proxy's ack error.
func (a *fakeAgent) sendRaw(pkt []byte, fds ...int) string {
	a.t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := a.conn.WriteMsgUnix(pkt, oob, nil); err != nil {
		a.t.Fatal(err)
	}
	b := a.read()
	var r zdsapi.WorkloadResponse
	if err := proto.Unmarshal(b, &r); err != nil || r.GetAck() == nil {
		a.t.Fatalf("answer %x is not an ack: %v", b, err)
	}
	return r.GetAck().GetError()
}

// send sends a request with fds and returns the proxy's ack error.
func (a *fakeAgent) send(r *zdsapi.WorkloadRequest, fds ...int) string {
	a.t.Helper()
	b, err := proto.Marshal(r)
	if err != nil {
		a.t.Fatal(err)
	}
	return a.sendRaw(b, fds...)
}

// noMore fails if the proxy sends anything unasked.
func (a *fakeAgent) noMore() {
	a.t.Helper()
	a.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 4*maxAck)
	if n, err := a.conn.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		a.t.Fatalf("the proxy sent %x (%v) when nothing was asked", buf[:n], err)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
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

	add := mustMarshal(t, addRequest("ns/p", nil))
	del := mustMarshal(t, delRequest("ns/p"))
	for _, c := range []struct {
		name string
		pkt  []byte
		fds  []int
		want string
	}{
		{"garbage", []byte("not protobuf"), nil, "malformed message"},
		{"cut add", add[:len(add)-2], []int{ns}, "malformed message"},
		// An empty packet cannot carry descriptors: the kernel is sent a
		// zero byte instead, an invalid protobuf field.
		{"empty with an fd", nil, []int{ns}, "malformed message"},
		{"unknown field only", []byte{0x78, 0x01}, nil, "no payload"}, // field 15, varint
		{"a hello", helloPacket(), nil, "malformed message"},
		{"an ack", mustMarshal(t, &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{}}}), []int{ns}, "add without uid"},
		{"add without fd", add, nil, `add "ns/p": want exactly one netns fd attached, got 0`},
		{"add with two fds", add, []int{ns, ns}, "got 2"},
		{"add without uid", mustMarshal(t, addRequest("", wi("ns", "p", "sa"))), []int{ns}, "add without uid"},
		{"add with a file", add, []int{int(devnull.Fd())}, "not a namespace"},
		{"add uid not UTF-8", []byte("\x0a\x06\x0a\x04ns/\xff"), []int{ns}, "malformed message"},
		{"del with fd", del, []int{ns}, "del: unexpected descriptor"},
		{"del without uid", mustMarshal(t, delRequest("")), nil, "del without uid"},
		{"keep with fd", mustMarshal(t, keepRequest("ns/p")), []int{ns}, "keep: unexpected descriptor"},
		{"keep without uid", mustMarshal(t, keepRequest("")), nil, "keep without uid"},
		{"snapshot_sent with fd", mustMarshal(t, snapshotSentRequest()), []int{ns}, "snapshot_sent: unexpected descriptor"},
	} {
		got := a.sendRaw(c.pkt, c.fds...)
		if !strings.Contains(got, c.want) {
			t.Errorf("%s (%x) with %d fds: ack error %q, want %q", c.name, c.pkt, len(c.fds), got, c.want)
		}
		a.noMore() // exactly one ack
	}
	h.quiet(t) // nothing malformed reached the handler
	// Every descriptor that came with a rejected message was closed. (Fewer
	// is no leak: a previous test's connections may close meanwhile.)
	if after := openFDs(t); after > fdsBefore {
		t.Errorf("%d descriptors open after the malformed messages, %d before", after, fdsBefore)
	}
	// And the connection still works.
	if got := a.send(addRequest("ns/p", wi("ns", "p", "sa")), ns); got != "" {
		t.Fatalf("valid add NACKed: %s", got)
	}
	h.expect(t, event{kind: "add", uid: "ns/p", ino: ino, workload: "ns/p sa=sa"})
	if got := a.send(keepRequest("ns/q")); got != "" {
		t.Fatalf("keep NACKed: %s", got)
	}
	h.expect(t, event{kind: "keep", uid: "ns/q"})
	if got := a.send(snapshotSentRequest()); got != "" {
		t.Fatalf("snapshot_sent NACKed: %s", got)
	}
	h.expect(t, event{kind: "snapshot"})
	if got := a.send(delRequest("ns/p")); got != "" {
		t.Fatalf("del NACKed: %s", got)
	}
	h.expect(t, event{kind: "del", uid: "ns/p"})
}

// Keep only means something while a snapshot decides what survives, and a
// connection has one snapshot: the proxy NACKs a keep after snapshot_sent and
// a second snapshot_sent, without calling its handler.
func TestKeepAfterSnapshotAndSecondSnapshotAreNacked(t *testing.T) {
	h := newRec(t)
	a := newFakeAgent(t, h)
	if got := a.send(keepRequest("ns/k")); got != "" {
		t.Fatalf("keep during the snapshot NACKed: %s", got)
	}
	h.expect(t, event{kind: "keep", uid: "ns/k"})
	if got := a.send(snapshotSentRequest()); got != "" {
		t.Fatalf("snapshot_sent NACKed: %s", got)
	}
	h.expect(t, event{kind: "snapshot"})

	if got := a.send(keepRequest("ns/k")); !strings.Contains(got, `keep "ns/k" after the snapshot`) {
		t.Errorf("keep after snapshot_sent: ack error %q, want a NACK", got)
	}
	a.noMore()
	if got := a.send(snapshotSentRequest()); !strings.Contains(got, "snapshot_sent twice") {
		t.Errorf("second snapshot_sent: ack error %q, want a NACK", got)
	}
	a.noMore()
	h.quiet(t)
	// Still in step: a del after them is handled.
	if got := a.send(delRequest("ns/k")); got != "" {
		t.Fatalf("del NACKed: %s", got)
	}
	h.expect(t, event{kind: "del", uid: "ns/k"})
}

// Every agent message gets exactly one ack, of at most maxAck bytes, even
// when the handler's error is 10 000 characters long.
func TestOneShortAckPerMessage(t *testing.T) {
	h := newRec(t)
	h.nack = strings.Repeat("é", 9_999) + "\n"
	a := newFakeAgent(t, h)
	ns, _ := podNS(t)
	for _, c := range []struct {
		name string
		req  *zdsapi.WorkloadRequest
		fds  []int
		call string // the handler call it makes, if any
		nack bool
	}{
		{"add", addRequest("ns/p", wi("ns", "p", "sa")), []int{ns}, "add", true},
		{"keep", keepRequest("ns/q"), nil, "keep", false},
		{"snapshot_sent", snapshotSentRequest(), nil, "snapshot", false},
		{"del", delRequest("ns/p"), nil, "del", false},
		{"keep after snapshot", keepRequest("ns/q"), nil, "", true},
		{"malformed", &zdsapi.WorkloadRequest{}, []int{ns}, "", true},
		{"add again", addRequest("ns/p", nil), []int{ns}, "add", true},
	} {
		got := a.send(c.req, c.fds...) // fails on a packet over maxAck
		if (got != "") != c.nack {
			t.Errorf("%s: ack error %.80q, want NACK %v", c.name, got, c.nack)
		}
		if !utf8.ValidString(got) || strings.ContainsAny(got, "\r\n") {
			t.Errorf("%s: ack error is not one line of valid UTF-8: %q", c.name, got)
		}
		a.noMore()
		if c.call == "" {
			h.quiet(t)
		} else if e := h.next(t); e.kind != c.call {
			t.Errorf("%s: handler call %+v, want %s", c.name, e, c.call)
		}
	}
}

// A handler error that is not valid UTF-8 (protobuf strings must be) is
// still answered with a NACK the agent can read, not an empty packet that
// looks like a hang-up.
func TestNackReasonNotUTF8(t *testing.T) {
	b := ackPacket("bad \xff byte\nhere")
	reason, err := decodeAck(b, 0)
	if err != nil || reason == "" || !utf8.ValidString(reason) || strings.ContainsAny(reason, "\r\n") {
		t.Fatalf("ackPacket of an invalid UTF-8 reason: %x decodes to %q, %v; want a one-line UTF-8 NACK", b, reason, err)
	}
	if !strings.HasPrefix(reason, "bad ") || !strings.HasSuffix(reason, `byte\nhere`) {
		t.Errorf("reason %q lost the valid part", reason)
	}

	// End to end: the agent gets the NACK and keeps the proxy.
	s, path := newServer(t)
	h := newRec(t)
	h.nack = "bad \xff byte"
	runClient(t, path, h)
	h.expect(t, event{kind: "snapshot"})
	waitFor(t, func() bool { return s.Connected() == 1 })
	fd, _ := podNS(t)
	err = s.Add("ns/p", fd, nil)
	var nack *NackError
	if !errors.As(err, &nack) || nack.Reason != "bad \uFFFD byte" {
		t.Fatalf("Add = %v, want a NACK with reason %q", err, "bad \uFFFD byte")
	}
	h.expect(t, event{kind: "add", uid: "ns/p"})
	if s.Connected() != 1 {
		t.Fatalf("Connected() = %d: the proxy was dropped over its NACK", s.Connected())
	}
}

func openFDs(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// rawProxy dials the server as a proxy would, without speaking yet.
func rawProxy(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readRequest reads the server's next packet; closed reports an orderly
// close (or a reset) instead.
func readRequest(t *testing.T, c *net.UnixConn, within time.Duration) (req *zdsapi.WorkloadRequest, closed bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	closeFDs(oob[:oobn])
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server neither sent anything nor hung up within %v", within)
	}
	if err != nil || n == 0 {
		return nil, true
	}
	var r zdsapi.WorkloadRequest
	if err := proto.Unmarshal(buf[:n], &r); err != nil {
		t.Fatalf("the server sent %x: %v", buf[:n], err)
	}
	return &r, false
}

// The server waits for a proxy's V1 hello, within its ack timeout, before it
// sends anything: without one the proxy is disconnected and gets no pod.
func TestServerNeedsHello(t *testing.T) {
	fd, _ := podNS(t)
	for _, c := range []struct {
		name  string
		hello []byte // nil: send nothing
		want  string // in the server's log
	}{
		{"none", nil, "sent no hello within 200ms"},
		{"version NOT_USED", []byte{0x08, 0x00}, "hello with version NOT_USED, want V1"},
		{"unknown version", []byte{0x08, 0x02}, "hello with version 2, want V1"},
		{"garbage", []byte("hello, agent"), "not a hello"},
		// Field 1 of the wrong wire type: an unknown field, so version 0.
		{"an ack", mustMarshal(t, &zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{}}}), "hello with version NOT_USED"},
		{"oversized", make([]byte, 2*maxAck), "oversized hello"},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs := &logBuf{}
			s, path := newServer(t, WithAckTimeout(200*time.Millisecond), WithLogf(logs.logf(t)),
				WithPods(Pod{UID: "ns/a", NetNSFD: fd}))
			conn := rawProxy(t, path)
			start := time.Now()
			if c.hello != nil {
				if _, err := conn.Write(c.hello); err != nil {
					t.Fatal(err)
				}
			}
			if r, closed := readRequest(t, conn, 3*time.Second); !closed {
				t.Fatalf("the server sent %v to a proxy without a proper hello", r)
			}
			if c.hello == nil && time.Since(start) < 150*time.Millisecond {
				t.Errorf("disconnected after %v, before the ack timeout", time.Since(start))
			}
			eventually(t, "the server logs "+c.want, func() bool { return logs.has(c.want) })
			if s.Connected() != 0 {
				t.Errorf("Connected() = %d", s.Connected())
			}
		})
	}
	t.Run("V1", func(t *testing.T) {
		s, path := newServer(t, WithAckTimeout(200*time.Millisecond), WithPods(Pod{UID: "ns/a", NetNSFD: fd, Workload: wi("ns", "a", "sa")}))
		conn := rawProxy(t, path)
		// Late, but within the timeout.
		time.Sleep(50 * time.Millisecond)
		if _, err := conn.Write(helloPacket()); err != nil {
			t.Fatal(err)
		}
		r, closed := readRequest(t, conn, 3*time.Second)
		if closed || r.GetAdd().GetUid() != "ns/a" || infoString(r.GetAdd().GetWorkloadInfo()) != "ns/a sa=sa" {
			t.Fatalf("first message %v (closed %v), want the add of ns/a", r, closed)
		}
		if _, err := conn.Write(ackPacket("")); err != nil {
			t.Fatal(err)
		}
		if r, closed = readRequest(t, conn, 3*time.Second); closed || r.GetSnapshotSent() == nil {
			t.Fatalf("second message %v (closed %v), want snapshot_sent", r, closed)
		}
		if _, err := conn.Write(ackPacket("")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return s.Connected() == 1 })
	})
}

// helloAndSnapshot says hello as a raw proxy and reads the (empty)
// snapshot's snapshot_sent, without acking it.
func helloAndSnapshot(t *testing.T, c *net.UnixConn) {
	t.Helper()
	if _, err := c.Write(helloPacket()); err != nil {
		t.Fatal(err)
	}
	if r, closed := readRequest(t, c, 5*time.Second); closed || r.GetSnapshotSent() == nil {
		t.Fatalf("read %v (closed %v), want snapshot_sent", r, closed)
	}
}

func TestServerDropsMisbehavingProxy(t *testing.T) {
	logs := &logBuf{}
	s, path := newServer(t, WithLogf(logs.logf(t)))
	c := rawProxy(t, path)
	helloAndSnapshot(t, c)
	// Answer with garbage instead of an ack.
	c.Write([]byte("garbage"))
	if r, closed := readRequest(t, c, 5*time.Second); !closed {
		t.Fatalf("server kept talking (%v) to a proxy that sent garbage", r)
	}
	eventually(t, "the server logs the garbage", func() bool { return logs.has("not an ack") })
	if s.Connected() != 0 {
		t.Fatalf("Connected() = %d", s.Connected())
	}
}

// A proxy sends nothing but the hello and one ack per message: one that
// speaks when nothing was asked is out of step and dropped.
func TestServerDropsUnsolicitedAck(t *testing.T) {
	logs := &logBuf{}
	s, path := newServer(t, WithLogf(logs.logf(t)))
	c := rawProxy(t, path)
	helloAndSnapshot(t, c)
	if _, err := c.Write(ackPacket("")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return s.Connected() == 1 })
	if _, err := c.Write(ackPacket("")); err != nil { // nothing asked
		t.Fatal(err)
	}
	if r, closed := readRequest(t, c, 5*time.Second); !closed {
		t.Fatalf("server kept talking (%v) to a proxy that sent an unsolicited ack", r)
	}
	eventually(t, "the server logs the unsolicited ack", func() bool { return logs.has("unsolicited ack") })
	waitFor(t, func() bool { return s.Connected() == 0 })
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
	if _, err := NewServer(sockPath(t), WithPods(Pod{UID: "ns/a", NetNSFD: fdA, Workload: wi("ns", "a\xff", "")})); err == nil {
		t.Fatal("a preloaded pod with a workload that is not UTF-8 accepted")
	}
	_, path := newServer(t, WithPods(Pod{UID: "ns/a", NetNSFD: fdA, Workload: wi("ns", "a", "sa-a")}))
	h := newRec(t)
	runClient(t, path, h)
	h.expect(t, event{kind: "add", uid: "ns/a", ino: inoA, workload: "ns/a sa=sa-a"}, event{kind: "snapshot"})
}
