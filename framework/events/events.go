package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Class is the outcome class of one request. The set is closed: measurement
// splits outage intervals by it.
type Class string

// The failure classes. ClassOK is the only success.
const (
	ClassOK          Class = "ok"
	ClassRefused     Class = "refused"     // connection refused (RST to SYN)
	ClassReset       Class = "reset"       // connection reset or broken pipe on an established connection
	ClassTimeout     Class = "timeout"     // dial or request deadline exceeded: a black hole looks like this
	ClassUnreachable Class = "unreachable" // ICMP host/network unreachable, no route
	ClassHTTP        Class = "http"        // an HTTP answer that is not 2xx; Status holds the code
	ClassOther       Class = "other"       // anything else (EOF mid-response, protocol error, ...)
)

// Classes lists every class in report order.
var Classes = []Class{ClassOK, ClassRefused, ClassReset, ClassTimeout, ClassUnreachable, ClassHTTP, ClassOther}

// Valid reports whether c is one of the known classes.
func (c Class) Valid() bool {
	for _, k := range Classes {
		if c == k {
			return true
		}
	}
	return false
}

// Kind tells a request from a stream transition.
type Kind string

const (
	// KindRequest is one request (or, for a stream, one echoed message). It is the zero value.
	KindRequest Kind = ""
	// KindBroken marks the moment a long-lived stream broke; Class says how.
	KindBroken Kind = "broken"
	// KindReconnected marks the moment a broken stream was re-established.
	KindReconnected Kind = "reconnected"
)

// Event is one line of a flow's event file. Times are Unix nanoseconds so that
// events from different processes on one host compare directly.
type Event struct {
	Start   int64 `json:"t"`           // request start (or transition time), Unix ns
	Latency int64 `json:"l,omitempty"` // ns from start to outcome
	Class   Class `json:"c"`
	Status  int   `json:"s,omitempty"` // HTTP status when known
	Kind    Kind  `json:"k,omitempty"`
	Thread  int   `json:"th,omitempty"` // fortio thread that made it (streams: which connection)
	// Error is a failed request's error as its client saw it (the call
	// and the errno: "read: connection reset by peer", "EOF").
	Error string `json:"e,omitempty"`
}

// OK reports whether the event is a successful request.
func (e Event) OK() bool { return e.Kind == KindRequest && e.Class == ClassOK }

// StartTime is Start as a time.Time.
func (e Event) StartTime() time.Time { return time.Unix(0, e.Start) }

// Writer appends events to one file. Every event is one write(2) of one whole
// line on an O_APPEND file, so a process killed at any instant leaves at most
// the events it had not yet produced: nothing is buffered in user space.
type Writer struct {
	mu  sync.Mutex
	f   *os.File
	buf []byte
	n   int64
}

// Create opens (creating or appending to) the event file at path.
func Create(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open event file: %w", err)
	}
	return &Writer{f: f}, nil
}

// Write records one event.
func (w *Writer) Write(e Event) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(append(w.buf[:0], line...), '\n')
	if _, err := w.f.Write(w.buf); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	w.n++
	return nil
}

// Count is the number of events written so far.
func (w *Writer) Count() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Close closes the file.
func (w *Writer) Close() error { return w.f.Close() }

// errMalformed marks a line that is complete but not an event. (A torn last line
// is expected after a kill and is skipped, not reported.)
var errMalformed = errors.New("malformed event line")

// Read parses a whole event stream. A last line without its newline (the writer
// was killed mid-write) is ignored; any other malformed line is an error naming
// its line number.
func Read(r io.Reader) ([]Event, error) {
	var out []Event
	br := bufio.NewReaderSize(r, 64<<10)
	lineNo := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			lineNo++
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			var e Event
			if jerr := json.Unmarshal(line, &e); jerr != nil {
				return out, fmt.Errorf("line %d: %w: %v", lineNo, errMalformed, jerr)
			}
			if !e.Class.Valid() {
				return out, fmt.Errorf("line %d: %w: unknown class %q", lineNo, errMalformed, e.Class)
			}
			out = append(out, e)
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// ReadFile reads the events of one file.
func ReadFile(path string) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ev, err := Read(f)
	if err != nil {
		return ev, fmt.Errorf("%s: %w", path, err)
	}
	return ev, nil
}

// Tail reads events appended to a file since the last call. It only returns
// whole lines, so it can follow a file another process is writing.
type Tail struct {
	Path string
	off  int64
	rest []byte
}

// Next returns the complete events appended since the previous call.
func (t *Tail) Next() ([]Event, error) {
	f, err := os.Open(t.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	t.off += int64(len(data))
	data = append(t.rest, data...)
	cut := bytes.LastIndexByte(data, '\n')
	if cut < 0 {
		t.rest = data
		return nil, nil
	}
	t.rest = append([]byte(nil), data[cut+1:]...)
	return Read(bytes.NewReader(data[:cut+1]))
}
