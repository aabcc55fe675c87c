package load

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"

	"blastradius.dev/blastradius/framework/events"
)

// Classify maps a client-side error to the class measurement splits outages by.
// nil is ClassOK. The class says what the network did to the request, which is
// what distinguishes faults: a dead process answers SYNs with RST (refused), a
// killed connection tracker or proxy resets established flows (reset), a
// partitioned or crashed node swallows packets (timeout), a withdrawn route
// produces ICMP errors (unreachable).
//
// io.EOF and io.ErrUnexpectedEOF count as reset: our clients only read when
// they are owed bytes (a response, an echo), so end-of-stream there means the
// peer — or a proxy in between — closed the connection under us. On a
// keep-alive socket that is the typical first symptom of a fault, and it must
// not be filed under "other" with protocol errors.
func Classify(err error) events.Class {
	switch {
	case err == nil:
		return events.ClassOK
	case errors.Is(err, syscall.ECONNREFUSED):
		return events.ClassRefused
	case errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF):
		return events.ClassReset
	case errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return events.ClassUnreachable
	case errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, syscall.ETIMEDOUT):
		return events.ClassTimeout
	}
	// Last, because many error types implement Timeout() and the specific
	// errnos above are more telling.
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return events.ClassTimeout
	}
	return events.ClassOther
}
