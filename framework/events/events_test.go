package events

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWriterReadRoundTrip(t *testing.T) {
	want := []Event{
		{Start: 1_700_000_000_123_456_789, Latency: 2_500_000, Class: ClassOK, Thread: 3},
		{Start: 1_700_000_000_223_456_789, Latency: 1_000_000_000, Class: ClassTimeout},
		{Start: 1_700_000_000_323_456_789, Latency: 42, Class: ClassHTTP, Status: 503, Thread: 1},
		{Start: 1_700_000_000_423_456_789, Class: ClassRefused},
		{Start: 1_700_000_000_523_456_789, Class: ClassReset, Kind: KindBroken, Thread: 7},
		{Start: 1_700_000_000_623_456_789, Class: ClassOK, Kind: KindReconnected, Thread: 7},
		{Start: 1_700_000_000_723_456_789, Latency: 9, Class: ClassUnreachable},
		{Start: 1_700_000_000_823_456_789, Latency: 10, Class: ClassOther, Status: 200},
		{Start: 0, Class: ClassOK}, // zero values stay zero
	}
	path := filepath.Join(t.TempDir(), "flow.jsonl")

	// Two writers on the same path: Create appends, it does not truncate.
	half := len(want) / 2
	for _, part := range [][]Event{want[:half], want[half:]} {
		w, err := Create(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range part {
			if err := w.Write(e); err != nil {
				t.Fatal(err)
			}
		}
		if got := w.Count(); got != int64(len(part)) {
			t.Errorf("Count() = %d, want %d", got, len(part))
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}

	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip mismatch:\n got %+v\nwant %+v", got, want)
	}

	// The on-disk form is one line per event, each ending in a newline.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), "\n"); n != len(want) {
		t.Errorf("file has %d newlines, want %d", n, len(want))
	}
	if !strings.HasSuffix(string(raw), "\n") {
		t.Errorf("file does not end in a newline")
	}
	// Field names are part of the contract with agents in other processes.
	first := strings.SplitN(string(raw), "\n", 2)[0]
	if wantLine := `{"t":1700000000123456789,"l":2500000,"c":"ok","th":3}`; first != wantLine {
		t.Errorf("first line = %s, want %s", first, wantLine)
	}
}

func TestEventHelpers(t *testing.T) {
	for _, tc := range []struct {
		e    Event
		ok   bool
		name string
	}{
		{name: "ok request", e: Event{Class: ClassOK}, ok: true},
		{name: "failed request", e: Event{Class: ClassTimeout}, ok: false},
		{name: "reconnect is not a request", e: Event{Class: ClassOK, Kind: KindReconnected}, ok: false},
		{name: "break", e: Event{Class: ClassReset, Kind: KindBroken}, ok: false},
	} {
		if got := tc.e.OK(); got != tc.ok {
			t.Errorf("%s: OK() = %v, want %v", tc.name, got, tc.ok)
		}
	}
	ts := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if got := (Event{Start: ts.UnixNano()}).StartTime(); !got.Equal(ts) {
		t.Errorf("StartTime() = %v, want %v", got, ts)
	}
	for _, c := range Classes {
		if !c.Valid() {
			t.Errorf("%q.Valid() = false", c)
		}
	}
	for _, c := range []Class{"", "missing", "OK", "timeout "} {
		if c.Valid() {
			t.Errorf("%q.Valid() = true", c)
		}
	}
}

func TestWriterConcurrent(t *testing.T) {
	const goroutines, perG = 16, 400
	path := filepath.Join(t.TempDir(), "flow.jsonl")
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				// Vary the line length so torn or interleaved lines would not
				// happen to parse.
				e := Event{Start: int64(g*1_000_000 + i), Latency: int64(i) * 1_000_003, Class: Classes[i%len(Classes)], Thread: g + 1}
				if e.Class == ClassHTTP {
					e.Status = 500 + i%4
				}
				if err := w.Write(e); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := w.Count(); got != goroutines*perG {
		t.Errorf("Count() = %d, want %d", got, goroutines*perG)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Every line on disk must be one whole event on its own.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	lines := 0
	next := make([]int, goroutines) // per goroutine, the next i expected: a goroutine's own writes keep their order
	for sc.Scan() {
		lines++
		var e Event
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("line %d %q: %v", lines, sc.Text(), err)
		}
		if dec.More() {
			t.Fatalf("line %d %q: more than one value", lines, sc.Text())
		}
		g, i := e.Thread-1, int(e.Start)%1_000_000
		if g < 0 || g >= goroutines || int(e.Start)/1_000_000 != g {
			t.Fatalf("line %d: unexpected event %+v", lines, e)
		}
		if i != next[g] {
			t.Fatalf("line %d: goroutine %d event %d, want %d", lines, g, i, next[g])
		}
		next[g]++
		want := Event{Start: e.Start, Latency: int64(i) * 1_000_003, Class: Classes[i%len(Classes)], Thread: g + 1}
		if want.Class == ClassHTTP {
			want.Status = 500 + i%4
		}
		if e != want {
			t.Fatalf("line %d: got %+v, want %+v", lines, e, want)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if lines != goroutines*perG {
		t.Errorf("%d lines, want %d", lines, goroutines*perG)
	}

	evs, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != goroutines*perG {
		t.Errorf("ReadFile: %d events, want %d", len(evs), goroutines*perG)
	}
}

func TestRead(t *testing.T) {
	const (
		ok1 = `{"t":1,"c":"ok"}`
		ok2 = `{"t":2,"l":5,"c":"timeout","th":2}`
	)
	e1 := Event{Start: 1, Class: ClassOK}
	e2 := Event{Start: 2, Latency: 5, Class: ClassTimeout, Thread: 2}
	for _, tc := range []struct {
		name    string
		in      string
		want    []Event
		wantErr string // substring; "" = no error
	}{
		{name: "empty", in: "", want: nil},
		{name: "two lines", in: ok1 + "\n" + ok2 + "\n", want: []Event{e1, e2}},
		{name: "torn last line of garbage is skipped", in: ok1 + "\n" + ok2 + "\n" + `{"t":3,"c":"o`, want: []Event{e1, e2}},
		{name: "complete JSON without its newline is skipped too", in: ok1 + "\n" + ok2, want: []Event{e1}},
		{name: "only a torn line", in: `{"t":`, want: nil},
		{name: "blank and CRLF lines", in: "\n" + ok1 + "\r\n  \n" + ok2 + "\n", want: []Event{e1, e2}},
		{name: "malformed middle line", in: ok1 + "\n" + "{not json}\n" + ok2 + "\n", want: []Event{e1}, wantErr: "line 2: malformed event line"},
		{name: "malformed last complete line", in: ok1 + "\n" + ok2 + "\n" + `{"t":3,"c":` + "\n", want: []Event{e1, e2}, wantErr: "line 3: malformed event line"},
		{name: "line numbers count blank lines", in: "\n\n" + ok1 + "\n[1]\n", want: []Event{e1}, wantErr: "line 4: malformed event line"},
		{name: "unknown class", in: ok1 + "\n" + `{"t":2,"c":"missing"}` + "\n" + ok2 + "\n", want: []Event{e1}, wantErr: `line 2: malformed event line: unknown class "missing"`},
		{name: "absent class", in: `{"t":2}` + "\n", want: nil, wantErr: `line 1: malformed event line: unknown class ""`},
		{name: "null line", in: "null\n", want: nil, wantErr: `line 1: malformed event line: unknown class ""`},
		{name: "wrong field type", in: `{"t":"now","c":"ok"}` + "\n", want: nil, wantErr: "line 1: malformed event line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Read(strings.NewReader(tc.in))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("events = %+v, want %+v", got, tc.want)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, errMalformed) {
				t.Errorf("error %v is not errMalformed", err)
			}
		})
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadFile(filepath.Join(dir, "absent.jsonl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("absent file: err = %v, want ErrNotExist", err)
	}
	path := filepath.Join(dir, "bad.jsonl")
	if err := os.WriteFile(path, []byte(`{"t":1,"c":"ok"}`+"\n"+`{"t":2,"c":"nope"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadFile(path)
	if err == nil {
		t.Fatal("no error for an unknown class")
	}
	if want := path + ": line 2: malformed event line"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want prefix %q", err, want)
	}
	if len(evs) != 1 || evs[0] != (Event{Start: 1, Class: ClassOK}) {
		t.Errorf("events before the bad line = %+v", evs)
	}
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flow.jsonl")
	tail := &Tail{Path: path}
	line := func(i int) string { return fmt.Sprintf(`{"t":%d,"l":%d,"c":"ok","th":1}`+"\n", i, i*10) }
	ev := func(i int) Event { return Event{Start: int64(i), Latency: int64(i * 10), Class: ClassOK, Thread: 1} }

	steps := []struct {
		name   string
		append string // written to the file before Next; "" with create=false = nothing
		create bool
		want   []Event
	}{
		{name: "file does not exist yet"},
		{name: "still absent"},
		{name: "created empty", create: true},
		{name: "first half of a line", append: line(1)[:10]},
		{name: "more of the same line, still no newline", append: line(1)[10:20]},
		{name: "rest of the line and a whole second line", append: line(1)[20:] + line(2), want: []Event{ev(1), ev(2)}},
		{name: "nothing new"},
		{name: "a whole line and the start of the next", append: line(3) + line(4)[:5], want: []Event{ev(3)}},
		{name: "only the newline is missing", append: line(4)[5 : len(line(4))-1]},
		{name: "the newline alone", append: "\n", want: []Event{ev(4)}},
		{name: "many lines at once", append: line(5) + line(6) + line(7), want: []Event{ev(5), ev(6), ev(7)}},
		{name: "nothing new again"},
	}
	for _, st := range steps {
		if st.create || st.append != "" {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(st.append); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := tail.Next()
		if err != nil {
			t.Fatalf("%s: Next: %v", st.name, err)
		}
		if !reflect.DeepEqual(got, st.want) {
			t.Fatalf("%s: Next = %+v, want %+v", st.name, got, st.want)
		}
	}

	// Everything Tail returned is exactly what a full read sees.
	all, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 7 {
		t.Errorf("ReadFile: %d events, want 7", len(all))
	}
}

func TestTailFollowsWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flow.jsonl")
	tail := &Tail{Path: path}
	w, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var got []Event
	for i := range 50 {
		for j := range i % 4 {
			if err := w.Write(Event{Start: int64(i*10 + j), Class: ClassOK}); err != nil {
				t.Fatal(err)
			}
		}
		evs, err := tail.Next()
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != i%4 {
			t.Fatalf("round %d: %d events, want %d", i, len(evs), i%4)
		}
		got = append(got, evs...)
	}
	if int64(len(got)) != w.Count() {
		t.Errorf("tail saw %d events, writer wrote %d", len(got), w.Count())
	}
}

func TestTailMalformedLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flow.jsonl")
	if err := os.WriteFile(path, []byte(`{"t":1,"c":"ok"}`+"\n"+`{"t":2,"c":"bogus"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	evs, err := (&Tail{Path: path}).Next()
	if err == nil || !strings.Contains(err.Error(), `line 2: malformed event line: unknown class "bogus"`) {
		t.Errorf("err = %v, want unknown class on line 2", err)
	}
	if len(evs) != 1 || evs[0].Start != 1 {
		t.Errorf("events = %+v, want the first line's event", evs)
	}
}
