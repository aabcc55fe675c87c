package load

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fortio.org/fortio/periodic"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/internal/oneline"
)

// A runnable reports its outcome to fortio as (bool, details). The details
// string is the only channel from a runnable to the access logger, so it
// carries the class and, for HTTP, the status code: "ok", "timeout",
// "ok:200", "http:503".

// outcome encodes a request's result as a details string.
func outcome(c events.Class, status int) string {
	if status == 0 {
		return string(c)
	}
	return string(c) + ":" + strconv.Itoa(status)
}

// failure is the outcome of a request that failed with err: its class, and
// the error's text after a "|" (what the class cannot say: which call
// failed, on which connection, whether it was a RST or an early FIN).
func failure(err error) string {
	return string(Classify(err)) + "|" + failureText(err)
}

// failureText is err's text on one line, at most maxErrorText bytes.
func failureText(err error) string {
	msg := oneline.Fold(err.Error(), 0)
	if len(msg) > maxErrorText {
		msg = msg[:maxErrorText]
	}
	return msg
}

// maxErrorText bounds the error text an event keeps.
const maxErrorText = 200

// parseOutcome decodes a details string. Anything it does not understand is
// still recorded, as ClassOK or ClassOther according to fortio's status bool:
// a measurement must never lose a request because of a formatting slip.
func parseOutcome(details string, ok bool) (events.Class, int, string) {
	details, errText, _ := strings.Cut(details, "|")
	cls, code, _ := strings.Cut(details, ":")
	c := events.Class(cls)
	status, err := strconv.Atoi(code)
	if err != nil {
		status = 0
	}
	if !c.Valid() {
		c = events.ClassOther
		if ok {
			c = events.ClassOK
		}
	}
	return c, status, errText
}

// eventLogger is the periodic.AccessLogger of a flow: fortio calls Report
// right after every Run, and we turn it into an event and write it at once,
// so a SIGKILL loses nothing that was measured. It also keeps the counts for
// FlowStats and the first write error (a flow that cannot record its events
// has failed, even if every request succeeded).
type eventLogger struct {
	w    *events.Writer
	info string

	requests atomic.Int64
	ok       atomic.Int64

	mu  sync.Mutex
	err error
}

var _ periodic.AccessLogger = (*eventLogger)(nil)

// Start is called before each Run. We have nothing to set up: the start time
// fortio passes to Report is the same one.
func (l *eventLogger) Start(ctx context.Context, _ periodic.ThreadID, _ int64, _ time.Time) context.Context {
	return ctx
}

// Report records one request.
func (l *eventLogger) Report(_ context.Context, id periodic.ThreadID, _ int64, start time.Time,
	latency float64, status bool, details string,
) {
	c, code, errText := parseOutcome(details, status)
	l.requests.Add(1)
	if c == events.ClassOK {
		l.ok.Add(1)
	}
	err := l.w.Write(events.Event{
		Start:   start.UnixNano(),
		Latency: int64(latency * float64(time.Second)),
		Class:   c,
		Status:  code,
		Thread:  int(id),
		Error:   errText,
	})
	if err != nil {
		l.mu.Lock()
		if l.err == nil {
			l.err = err
		}
		l.mu.Unlock()
	}
}

// Info names the logger in fortio's own output.
func (l *eventLogger) Info() string { return l.info }

// firstError is the first event write failure, if any.
func (l *eventLogger) firstError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
