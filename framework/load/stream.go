package load

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"

	"fortio.org/fortio/periodic"

	"blastradius.dev/blastradius/framework/events"
)

// StreamMessageSize is the size of one tcp-stream message.
const StreamMessageSize = 32

// errEchoMismatch means the echo server sent back other bytes than we sent:
// the stream is out of step (or something in between rewrote it). It
// classifies as "other".
var errEchoMismatch = errors.New("echoed bytes differ from the message sent")

// TCPStream is the runnable of the "tcp-stream" profile: one long-lived TCP
// connection per fortio thread, standing for the database connections, gRPC
// channels and message-bus sessions that a mesh must keep alive (or visibly
// break) across faults. Use one per thread.
//
// Each Run sends a StreamMessageSize-byte message and waits for its echo, all
// within Timeout. When that fails the connection is closed and, once per
// break, a KindBroken event is written to Events saying how it broke. Later
// Runs redial (each failed redial is a failed request); the first successful
// redial after a break writes a KindReconnected event. The two transitions
// bound how long the stream was down, independently of the request rate.
//
// fortio's own TCP runner is not used because it dials without a timeout: a
// redial into a black hole would stall its thread for the kernel's SYN retry
// time (over two minutes) instead of failing within Timeout.
type TCPStream struct {
	Target  string         // ip:port of a TCP echo server
	Timeout time.Duration  // dial, and message round trip; 0 means DefaultTimeout
	Events  *events.Writer // receives the broken/reconnected transitions; nil drops them

	conn       net.Conn
	broken     bool // the stream broke and has not been re-established yet
	seq        uint64
	out, in    [StreamMessageSize]byte
	breaks     int64
	reconnects int64
}

var _ periodic.Runnable = (*TCPStream)(nil)

// Run sends one message and reads its echo. details is the outcome class.
//
// Transition events carry the Start of the Run that observed them and the
// Latency to the observation: for KindBroken, from sending the message that
// failed to detecting the failure; for KindReconnected, the redial time.
func (s *TCPStream) Run(ctx context.Context, id periodic.ThreadID) (bool, string) {
	start := time.Now()
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if s.conn == nil {
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", s.Target)
		if err != nil {
			return false, failure(err)
		}
		s.conn = conn
		if s.broken {
			s.broken = false
			s.reconnects++
			s.emit(events.Event{
				Start: start.UnixNano(), Latency: int64(time.Since(start)),
				Class: events.ClassOK, Kind: events.KindReconnected, Thread: int(id),
			})
		}
	}
	// The message shares the deadline with the dial: a request's outcome is
	// known within Timeout of its start, as for the HTTP profiles.
	if err := s.exchange(start.Add(timeout), id); err != nil {
		c := Classify(err)
		_ = s.conn.Close()
		s.conn = nil
		if !s.broken {
			s.broken = true
			s.breaks++
			s.emit(events.Event{
				Start: start.UnixNano(), Latency: int64(time.Since(start)),
				Class: c, Kind: events.KindBroken, Thread: int(id), Error: failureText(err),
			})
		}
		return false, failure(err)
	}
	return true, outcome(events.ClassOK, 0)
}

// Close releases the connection, if any.
func (s *TCPStream) Close() error {
	if s.conn != nil {
		err := s.conn.Close()
		s.conn = nil
		return err
	}
	return nil
}

// exchange writes one message and reads it back. Each message carries the
// thread and a sequence number, so a stale or misrouted echo is caught rather
// than counted as a success.
func (s *TCPStream) exchange(deadline time.Time, id periodic.ThreadID) error {
	s.seq++
	binary.BigEndian.PutUint64(s.out[0:8], uint64(id))
	binary.BigEndian.PutUint64(s.out[8:16], s.seq)
	copy(s.out[16:], "blastradius-strm")
	if err := s.conn.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := s.conn.Write(s.out[:]); err != nil {
		return err
	}
	if _, err := io.ReadFull(s.conn, s.in[:]); err != nil {
		return err
	}
	if !bytes.Equal(s.in[:], s.out[:]) {
		return errEchoMismatch
	}
	return nil
}

// emit writes a transition event. A write error is dropped here: the same
// file receives every request event of the flow, and the flow reports the
// first failure to write those.
func (s *TCPStream) emit(e events.Event) {
	if s.Events != nil {
		_ = s.Events.Write(e)
	}
}
