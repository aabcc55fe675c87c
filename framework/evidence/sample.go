package evidence

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
)

// Sample is one reading of one source's counters.
type Sample struct {
	Time time.Time
	// Counters are cumulative counters by key (docs/results.md "Evidence
	// files"). A counter at zero may be absent: it counts as 0.
	Counters map[string]float64
	// Err says why the source could not be read at Time (a proxy that did
	// not answer within the scrape timeout, for instance). Such a sample
	// has no counters; it is evidence in itself.
	Err string
}

// line is a Sample on disk: times are Unix nanoseconds, as in the flows'
// event files, so the two compare directly.
type line struct {
	T   int64              `json:"t"`
	C   map[string]float64 `json:"c,omitempty"`
	Err string             `json:"err,omitempty"`
}

// writer appends samples to one file. Each sample is one write(2) of one
// whole line on an O_APPEND file, so a process killed at any instant loses at
// most the sample it was taking: nothing is buffered in user space.
type writer struct {
	mu     sync.Mutex
	f      *os.File
	buf    []byte
	failed bool // a write failed already (logged once)
}

func createWriter(path string) (*writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open evidence file: %w", err)
	}
	return &writer{f: f}, nil
}

func (w *writer) write(s Sample) error {
	b, err := json.Marshal(line{T: s.Time.UnixNano(), C: s.Counters, Err: s.Err})
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(append(w.buf[:0], b...), '\n')
	_, err = w.f.Write(w.buf)
	return err
}

func (w *writer) close() error { return w.f.Close() }

// Read parses a sample stream. A last line without its newline (the writer
// was killed mid-write) is ignored; any other malformed line is an error
// naming its line number, with the samples before it.
func Read(r io.Reader) ([]Sample, error) {
	var out []Sample
	br := bufio.NewReaderSize(r, 64<<10)
	n := 0
	for {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 && b[len(b)-1] == '\n' {
			n++
			if b = bytes.TrimSpace(b); len(b) > 0 {
				var l line
				if jerr := json.Unmarshal(b, &l); jerr != nil {
					return out, fmt.Errorf("line %d: malformed sample: %v", n, jerr)
				}
				if l.T <= 0 {
					return out, fmt.Errorf("line %d: malformed sample: no time", n)
				}
				out = append(out, Sample{Time: time.Unix(0, l.T), Counters: l.C, Err: l.Err})
			}
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// ReadFile reads the samples of one file.
func ReadFile(path string) ([]Sample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := Read(f)
	if err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Deltas is how much each counter increased over [from, to], counted from
// the last good sample at or before from to the first at or after to (so the
// span measured covers the interval, overshooting it by less than one
// sampling interval at each end). Where the samples do not reach that far
// (load started after from, or the run was killed before to) it counts over
// the part they cover. Samples with Err are skipped.
//
// A counter that goes down between two samples was reset: its process
// restarted and counts from zero again, so the increase over that step is
// the new value (what the new process counted), not a negative number. The
// increments between every pair of consecutive samples are summed, as
// Prometheus' increase() does, so a restart in the middle of the interval
// loses at most what the old process counted after its last sample.
//
// The result has every counter present in a sample of that span, zero or
// not; it is empty when fewer than two good samples span any of the
// interval.
func Deltas(samples []Sample, from, to time.Time) map[string]float64 {
	d, _ := deltas(samples, from, to)
	return d
}

// deltas is Deltas, and whether at least two good samples span some of the
// interval (an idle namespace has counters all at zero, which are left out
// of its samples: no counter at all is still a measurement).
func deltas(samples []Sample, from, to time.Time) (map[string]float64, bool) {
	out := map[string]float64{}
	good := make([]Sample, 0, len(samples))
	for _, s := range samples {
		if s.Err == "" {
			good = append(good, s)
		}
	}
	if !sort.SliceIsSorted(good, func(i, j int) bool { return good[i].Time.Before(good[j].Time) }) {
		sort.SliceStable(good, func(i, j int) bool { return good[i].Time.Before(good[j].Time) })
	}
	if len(good) < 2 || to.Before(from) {
		return out, false
	}
	// first: the last sample at or before from (or the first sample);
	// last: the first sample at or after to (or the last sample).
	first := sort.Search(len(good), func(i int) bool { return good[i].Time.After(from) }) - 1
	if first < 0 {
		first = 0
	}
	last := sort.Search(len(good), func(i int) bool { return !good[i].Time.Before(to) })
	if last == len(good) {
		last = len(good) - 1
	}
	if last <= first {
		return out, false
	}
	for k := range good[first].Counters {
		out[k] += 0
	}
	for i := first + 1; i <= last; i++ {
		prev, cur := good[i-1].Counters, good[i].Counters
		for k, b := range cur {
			a := prev[k]
			if b >= a {
				out[k] += b - a
			} else {
				out[k] += b
			}
		}
	}
	return out, true
}
