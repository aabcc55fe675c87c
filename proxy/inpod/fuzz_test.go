package inpod

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Fuzzers of what crosses the node agent ↔ node proxy socket: dispatch is
// everything a proxy does with an agent packet before its Handler sees it,
// decodeAck everything the agent does with a proxy's answer. Run one with
//
//	go test -run '^$' -fuzz '^FuzzDispatch$' -fuzztime 1m ./proxy/inpod/
//
// (or `make fuzz`); plain `go test` runs the seeds in testdata/fuzz.

// fuzzHandler records the one call dispatch may make and, owning the
// descriptor from Add on like a real proxy, closes it.
type fuzzHandler struct {
	calls    int
	kind     string
	uid      string
	fd       int
	workload json.RawMessage
}

func (h *fuzzHandler) Add(uid string, fd int, w json.RawMessage) error {
	h.calls++
	h.kind, h.uid, h.fd, h.workload = TypeAdd, uid, fd, append(json.RawMessage(nil), w...)
	unix.Close(fd)
	return nil
}

func (h *fuzzHandler) Del(uid string) error {
	h.calls++
	h.kind, h.uid = TypeDel, uid
	return nil
}

func (h *fuzzHandler) SnapshotDone() {
	h.calls++
	h.kind = TypeSnapshotSent
}

// Bits of the fuzzer's fds byte: the low two bits are how many descriptors
// come with the packet, bit 2+i whether descriptor i is a network namespace
// (else /dev/null, which checkNetNS must refuse).
const (
	fdCountMask = 0x3
	fdNetNSBit  = 0x4
)

// openFuzzFDs opens the descriptors fdSpec asks for, and whether each is a
// network namespace.
func openFuzzFDs(t *testing.T, fdSpec byte) (fds []int, netns []bool) {
	t.Helper()
	for i := range int(fdSpec & fdCountMask) {
		isNS := fdSpec&(fdNetNSBit<<i) != 0
		path := "/dev/null"
		if isNS {
			path = "/proc/self/ns/net"
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		fds = append(fds, fd)
		netns = append(netns, isNS)
	}
	return fds, netns
}

// checkClosed fails if any of fds is still open: dispatch must close every
// descriptor it does not hand to Add (and the handler closed the one it got).
// Nothing else in the fuzz process opens files meanwhile, so a number is not
// reused between the close and this check.
func checkClosed(t *testing.T, fds []int) {
	t.Helper()
	for _, fd := range fds {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
			unix.Close(fd)
			t.Errorf("descriptor %d left open by dispatch", fd)
		}
	}
}

func oneLineError(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("%s: error spans several lines: %q", what, err.Error())
	}
}

func FuzzDispatch(f *testing.F) {
	// fds 0x05: one network namespace; 0x01: one /dev/null; 0x0e: two,
	// both namespaces.
	f.Add([]byte(`{"type":"add","uid":"default/pod-1","workload":{"ip":"10.0.0.1","node":"n1"}}`), byte(0x05), false, false)
	f.Add([]byte(`{"type":"add","uid":"ns/p"}`), byte(0x05), false, false)
	f.Add([]byte(`{"type":"del","uid":"ns/p"}`), byte(0), false, false)
	f.Add([]byte(`{"type":"snapshot-sent"}`), byte(0), false, false)
	f.Add([]byte(`{"type":"add","uid":"ns/p"}`), byte(0x01), false, false)
	f.Add([]byte(`{"type":"add","uid":"ns/p"}`), byte(0x0e), false, false)
	f.Add([]byte(`{"type":"add","uid":"a\nb"}`), byte(0), false, false)
	f.Add([]byte(`{"type":"del","uid":"ns/p"}`), byte(0x05), false, false)
	f.Add([]byte(`{"type":"add","uid":"ns/p","workload":{"k":1}}`), byte(0x05), true, false)
	f.Add([]byte(`{"type":"snapshot-sent"}`), byte(0x05), false, true)
	f.Add([]byte(`{"TYPE":"del","Uid":"x","type":"del"}`), byte(0), false, false)
	f.Add([]byte(`{"type":"add","uid":"ns/p","workload":null}`), byte(0x05), false, false)
	f.Add([]byte(`{"type":"ack","error":""}`), byte(0), false, false)
	f.Add([]byte(`not json`), byte(0x01), false, false)
	f.Add([]byte(``), byte(0), false, false)
	f.Fuzz(func(t *testing.T, pkt []byte, fdSpec byte, trunc, ctrunc bool) {
		fds, netns := openFuzzFDs(t, fdSpec)
		flags := 0
		if trunc {
			flags |= unix.MSG_TRUNC
		}
		if ctrunc {
			flags |= unix.MSG_CTRUNC
		}
		var h fuzzHandler
		kind, err := dispatch(&h, pkt, fds, flags)
		checkClosed(t, fds)
		oneLineError(t, "dispatch", err)
		if err != nil {
			// Nothing malformed reaches the handler.
			if h.calls != 0 {
				t.Fatalf("rejected (%v) but the handler was called (%s %q)", err, h.kind, h.uid)
			}
			return
		}
		// Accepted: exactly one call, of a known type, with what the
		// protocol demands.
		if h.calls != 1 || h.kind != kind {
			t.Fatalf("accepted as %q but the handler saw %d calls, last %q", kind, h.calls, h.kind)
		}
		if flags != 0 {
			t.Fatalf("accepted a truncated packet (flags %#x)", flags)
		}
		switch kind {
		case TypeAdd:
			if h.uid == "" || len(fds) != 1 || !netns[0] || h.fd != fds[0] {
				t.Fatalf("accepted add %q with fds %v (netns %v), handed fd %d", h.uid, fds, netns, h.fd)
			}
			if len(h.workload) > 0 && !json.Valid(h.workload) {
				t.Fatalf("handed an invalid workload %q", h.workload)
			}
		case TypeDel:
			if h.uid == "" || len(fds) != 0 {
				t.Fatalf("accepted del %q with %d fds", h.uid, len(fds))
			}
		case TypeSnapshotSent:
			if len(fds) != 0 {
				t.Fatalf("accepted snapshot-sent with %d fds", len(fds))
			}
		default:
			t.Fatalf("accepted unknown type %q", kind)
		}

		// Round trip: what the agent would send for this call decodes to
		// the same call.
		msg, err := json.Marshal(request{Type: h.kind, UID: h.uid, Workload: h.workload})
		if err != nil {
			t.Fatalf("re-encode %s %q: %v", h.kind, h.uid, err)
		}
		var spec byte
		if kind == TypeAdd {
			spec = 1 | fdNetNSBit
		}
		fds2, _ := openFuzzFDs(t, spec)
		var h2 fuzzHandler
		kind2, err := dispatch(&h2, msg, fds2, 0)
		checkClosed(t, fds2)
		if err != nil || kind2 != kind || h2.calls != 1 || h2.kind != h.kind || h2.uid != h.uid || !sameJSON(h2.workload, h.workload) {
			t.Fatalf("round trip of %s: got %q (%v) uid %q workload %s, want %q uid %q workload %s",
				msg, kind2, err, h2.uid, h2.workload, kind, h.uid, h.workload)
		}
	})
}

// sameJSON compares two JSON texts ignoring insignificant space (Marshal
// compacts a RawMessage).
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

func FuzzDecodeAck(f *testing.F) {
	f.Add([]byte(`{"type":"ack","error":""}`), false)
	f.Add([]byte(`{"type":"ack","error":"add ns/p: fd 3 is not a namespace"}`), false)
	f.Add([]byte(`{"type":"ack","error":"line one\nline two"}`), false)
	f.Add([]byte(`{"type":"ack"}`), true)
	f.Add([]byte(`{"type":"add","uid":"ns/p"}`), false)
	f.Add([]byte(`garbage`), false)
	f.Add([]byte(`{"type":"ack","error":12}`), false)
	f.Add([]byte(``), false)
	f.Fuzz(func(t *testing.T, pkt []byte, trunc bool) {
		flags := 0
		if trunc {
			flags = unix.MSG_TRUNC
		}
		a, err := decodeAck(pkt, flags)
		oneLineError(t, "decodeAck", err)
		if err != nil {
			return
		}
		if a.Type != TypeAck || trunc {
			t.Fatalf("accepted %q (truncated %v) as %+v", pkt, trunc, a)
		}
		// The reason ends up in NackError, which is logged one per line.
		if strings.ContainsAny(a.Error, "\r\n") {
			t.Fatalf("NACK reason spans several lines: %q", a.Error)
		}
		oneLineError(t, "NackError", &NackError{Proxy: "proxy 1", Reason: a.Error})
		// Round trip: the ack a proxy would send for this reason decodes
		// to the same ack.
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if a2, err := decodeAck(b, 0); err != nil || a2 != a {
			t.Fatalf("round trip of %s: %+v, %v; want %+v", b, a2, err, a)
		}
	})
}
