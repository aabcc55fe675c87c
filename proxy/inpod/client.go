package inpod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// Handler is the node proxy's side of the protocol. Its methods are called
// one at a time, in the agent's order, from the connection's goroutine; an
// error they return is sent to the agent as a NACK.
//
// After every (re)connection the agent sends its full set of pods as Adds,
// then SnapshotDone: a pod the handler held that was not re-added by then was
// deleted while the proxy was disconnected, and the handler should drop it. An
// Add for a uid the handler already has replaces it (new netns fd, new
// workload).
type Handler interface {
	// Add hands over a pod. The handler owns nsFD from this call on,
	// whatever it returns, and must close it when done with it.
	Add(uid string, nsFD int, workload json.RawMessage) error
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

	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	for {
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
		if ctx.Err() != nil {
			closeFDs(oob[:oobn])
			return synced, ctx.Err()
		}
		if err != nil {
			return synced, fmt.Errorf("inpod: connection to node agent lost: %w", err)
		}
		if n == 0 && oobn == 0 {
			// SOCK_SEQPACKET reports the peer's close as an empty packet;
			// the agent never sends empty messages.
			return synced, errors.New("inpod: node agent closed the connection")
		}
		kind, herr := dispatch(h, buf[:n], parseFDs(oob[:oobn]), flags)
		a := ack{Type: TypeAck}
		if herr != nil {
			a.Error = herr.Error()
		}
		b, _ := json.Marshal(a)
		if _, err := conn.Write(b); err != nil {
			if ctx.Err() != nil {
				return synced, ctx.Err()
			}
			return synced, fmt.Errorf("inpod: send ack: %w", err)
		}
		if kind == TypeSnapshotSent {
			synced = true
		}
	}
}

// dispatch decodes one packet and calls h. Every descriptor in fds is either
// handed to h.Add or closed here; nothing malformed reaches h. The uid is
// quoted in errors: it is the agent's input, and the NACK must stay one line.
func dispatch(h Handler, pkt []byte, fds []int, flags int) (kind string, err error) {
	handed := false
	defer func() {
		if !handed {
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
	}()
	if flags&unix.MSG_TRUNC != 0 {
		return "", fmt.Errorf("message larger than %d bytes", maxMessage)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return "", fmt.Errorf("more than %d descriptors attached", maxFDs)
	}
	var m request
	if err := json.Unmarshal(pkt, &m); err != nil {
		return "", fmt.Errorf("malformed message: %v", err)
	}
	switch m.Type {
	case TypeAdd:
		if m.UID == "" {
			return m.Type, errors.New("add without uid")
		}
		if len(fds) != 1 {
			return m.Type, fmt.Errorf("add %q: want exactly one netns fd attached, got %d", m.UID, len(fds))
		}
		if err := checkNetNS(fds[0]); err != nil {
			return m.Type, fmt.Errorf("add %q: %v", m.UID, err)
		}
		handed = true
		return m.Type, h.Add(m.UID, fds[0], m.Workload)
	case TypeDel:
		if m.UID == "" {
			return m.Type, errors.New("del without uid")
		}
		if len(fds) != 0 {
			return m.Type, fmt.Errorf("del %q: unexpected descriptor attached", m.UID)
		}
		return m.Type, h.Del(m.UID)
	case TypeSnapshotSent:
		if len(fds) != 0 {
			return m.Type, errors.New("snapshot-sent: unexpected descriptor attached")
		}
		h.SnapshotDone()
		return m.Type, nil
	case "":
		return "", errors.New("malformed message: no type")
	default:
		return m.Type, fmt.Errorf("unknown message type %q", m.Type)
	}
}
