package inpod

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/zdsapi"
)

// Handler is the node proxy's side of the protocol. Its methods are called
// one at a time, in the agent's order, from the connection's goroutine; an
// error they return is sent to the agent as a NACK. Each must return well
// within the agent's ack timeout (5 s in istio-cni).
//
// After every (re)connection the agent sends its full set of pods as Adds
// (or Keeps, for a pod it has no namespace for), then SnapshotDone: a pod the
// handler held that was neither added nor kept by then was deleted while the
// proxy was disconnected, and the handler should drop it. An Add for a uid
// the handler already has replaces it (new netns fd, new workload).
type Handler interface {
	// Add hands over a pod. The handler owns nsFD from this call on,
	// whatever it returns, and must close it when done with it.
	Add(uid string, nsFD int, info *zdsapi.WorkloadInfo) error
	// Keep asks to keep a pod the handler already has through the
	// snapshot; it comes only before SnapshotDone.
	Keep(uid string) error
	// Del removes a pod.
	Del(uid string) error
	// SnapshotDone marks the end of the agent's initial snapshot.
	SnapshotDone()
}

// DisconnectHandler may be implemented by a Handler to hear why Run's
// connection ended (or could not be made), before Run backs off and retries.
type DisconnectHandler interface {
	Disconnected(err error)
}

// Connect connects to the node agent at path and serves its messages with h
// until ctx ends (it then returns ctx.Err()) or the connection fails. Callers
// normally use Run, which reconnects.
func Connect(ctx context.Context, path string, h Handler) error {
	_, err := connect(ctx, path, h)
	return err
}

// Backoff bounds for Run's reconnections.
const (
	MinBackoff = 100 * time.Millisecond
	MaxBackoff = 5 * time.Second
)

// writeTimeout bounds the proxy's own writes (hello, acks): the agent reads
// them with a 5 s deadline, and a proxy blocked longer is out of step anyway.
const writeTimeout = 5 * time.Second

// Run keeps a connection to the node agent at path, reconnecting after
// failures with exponential back-off from MinBackoff to MaxBackoff. The
// back-off starts over once a connection got through its snapshot, so a proxy
// whose agent restarts reconnects quickly. Run returns ctx.Err() when ctx
// ends.
func Run(ctx context.Context, path string, h Handler) error {
	backoff := MinBackoff
	for {
		synced, err := connect(ctx, path, h)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d, ok := h.(DisconnectHandler); ok {
			d.Disconnected(err)
		}
		if synced {
			backoff = MinBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, MaxBackoff)
	}
}

// connect is Connect, also reporting whether the snapshot was completed.
func connect(ctx context.Context, path string, h Handler) (synced bool, err error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, fmt.Errorf("inpod: connect to node agent: %w", err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	// Closing the connection is what interrupts a blocked read.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	write := func(what string, b []byte) error {
		_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := conn.Write(b); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("inpod: send %s: %w", what, err)
		}
		return nil
	}
	if err := write("hello", helloPacket()); err != nil {
		return false, err
	}
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	st := &session{}
	for {
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
		if ctx.Err() != nil {
			closeFDs(oob[:oobn])
			return st.synced, ctx.Err()
		}
		if err != nil {
			return st.synced, fmt.Errorf("inpod: connection to node agent lost: %w", err)
		}
		if n == 0 && oobn == 0 {
			// SOCK_SEQPACKET reports the peer's close as an empty packet.
			// (An empty WorkloadRequest encodes to zero bytes too, but
			// it names no message and would be NACKed anyway.)
			return st.synced, errors.New("inpod: node agent closed the connection")
		}
		herr := st.dispatch(h, buf[:n], parseFDs(oob[:oobn]), flags)
		reason := ""
		if herr != nil {
			reason = herr.Error()
		}
		if err := write("ack", ackPacket(reason)); err != nil {
			return st.synced, err
		}
	}
}

// session is one connection's protocol state.
type session struct {
	synced bool // snapshot_sent received
}

// dispatch decodes one packet and calls h. Every descriptor in fds is either
// handed to h.Add or closed here; nothing malformed reaches h. The uid is
// quoted in errors: it is the agent's input, and the NACK must stay one line.
func (st *session) dispatch(h Handler, pkt []byte, fds []int, flags int) (err error) {
	handed := false
	defer func() {
		if !handed {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}()
	if flags&unix.MSG_TRUNC != 0 {
		return fmt.Errorf("message larger than %d bytes", maxMessage)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("more than %d descriptors attached", maxFDs)
	}
	var m zdsapi.WorkloadRequest
	if err := proto.Unmarshal(pkt, &m); err != nil {
		return fmt.Errorf("malformed message: %v", err)
	}
	noFD := func(kind string) error {
		if len(fds) != 0 {
			return fmt.Errorf("%s: unexpected descriptor attached", kind)
		}
		return nil
	}
	switch p := m.Payload.(type) {
	case *zdsapi.WorkloadRequest_Add:
		uid := p.Add.GetUid()
		if uid == "" {
			return errors.New("add without uid")
		}
		if len(fds) != 1 {
			return fmt.Errorf("add %q: want exactly one netns fd attached, got %d", uid, len(fds))
		}
		if err := checkNetNS(fds[0]); err != nil {
			return fmt.Errorf("add %q: %v", uid, err)
		}
		handed = true
		return h.Add(uid, fds[0], p.Add.GetWorkloadInfo())
	case *zdsapi.WorkloadRequest_Keep:
		uid := p.Keep.GetUid()
		if err := noFD(KindKeep); err != nil {
			return err
		}
		if uid == "" {
			return errors.New("keep without uid")
		}
		if st.synced {
			// ztunnel refuses it too: keep only means something while
			// the snapshot decides what survives.
			return fmt.Errorf("keep %q after the snapshot", uid)
		}
		return h.Keep(uid)
	case *zdsapi.WorkloadRequest_Del:
		uid := p.Del.GetUid()
		if err := noFD(KindDel); err != nil {
			return err
		}
		if uid == "" {
			return errors.New("del without uid")
		}
		return h.Del(uid)
	case *zdsapi.WorkloadRequest_SnapshotSent:
		if err := noFD(KindSnapshotSent); err != nil {
			return err
		}
		if st.synced {
			return errors.New("snapshot_sent twice on one connection")
		}
		st.synced = true
		h.SnapshotDone()
		return nil
	case nil:
		return errors.New("malformed message: no payload")
	default:
		return fmt.Errorf("unknown message %T", p)
	}
}
