package inpod

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/internal/oneline"
)

// Fuzzers of what crosses the node agent ↔ node proxy socket: dispatch is
// everything a proxy does with an agent packet before its Handler sees it,
// decodeAck everything the agent does with a proxy's answer. Run one with
//
//	go test -run '^$' -fuzz '^FuzzDispatch$' -fuzztime 1m ./proxy/inpod/
//
// (or `make fuzz`); plain `go test` runs the seeds in testdata/fuzz, which
// TestFuzzSeeds keeps in step with dispatchSeeds and ackSeeds (rewrite them
// with `go test -run '^TestFuzzSeeds$' ./proxy/inpod/ -update-fuzz-seeds`).

// fuzzHandler records the one call dispatch may make and, owning the
// descriptor from Add on like a real proxy, closes it.
type fuzzHandler struct {
	calls int
	kind  string
	uid   string
	fd    int
	info  *zdsapi.WorkloadInfo
}

func (h *fuzzHandler) Add(uid string, fd int, info *zdsapi.WorkloadInfo) error {
	h.calls++
	h.kind, h.uid, h.fd, h.info = KindAdd, uid, fd, info
	unix.Close(fd)
	return nil
}

func (h *fuzzHandler) Keep(uid string) error {
	h.calls++
	h.kind, h.uid = KindKeep, uid
	return nil
}

func (h *fuzzHandler) Del(uid string) error {
	h.calls++
	h.kind, h.uid = KindDel, uid
	return nil
}

func (h *fuzzHandler) SnapshotDone() {
	h.calls++
	h.kind = KindSnapshotSent
}

// request is the agent message that makes the call h recorded.
func (h *fuzzHandler) request() *zdsapi.WorkloadRequest {
	switch h.kind {
	case KindAdd:
		return addRequest(h.uid, h.info)
	case KindKeep:
		return keepRequest(h.uid)
	case KindDel:
		return delRequest(h.uid)
	default:
		return snapshotSentRequest()
	}
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

// checkAck fails unless the ack a proxy sends for reason fits istio-cni's
// buffer and the agent reads it back as a one-line, valid UTF-8 reason that
// is reason (made one line), or its start and an ellipsis when it was too
// long.
func checkAck(t *testing.T, reason string) {
	t.Helper()
	b := ackPacket(reason)
	if len(b) > maxAck {
		t.Fatalf("ack of %d bytes for reason %.80q", len(b), reason)
	}
	got, err := decodeAck(b, 0)
	if err != nil {
		t.Fatalf("ack %x for reason %.80q does not decode: %v", b, reason, err)
	}
	if !utf8.ValidString(got) || strings.ContainsAny(got, "\r\n") {
		t.Fatalf("ack reason %q is not one line of valid UTF-8", got)
	}
	want := oneline.Escape(strings.ToValidUTF8(reason, "\uFFFD"))
	if got != want && !(strings.HasSuffix(got, "…") && strings.HasPrefix(want, strings.TrimSuffix(got, "…"))) {
		t.Fatalf("ack reason %.80q for %.80q: neither the reason nor its start", got, want)
	}
	if (reason == "") != (got == "") {
		t.Fatalf("reason %q answered as %q: an ack became a NACK or the reverse", reason, got)
	}
}

// A seed of FuzzDispatch: an agent packet with the descriptors fds asks for,
// the receive flags, and whether the connection's snapshot is done.
type dispatchSeed struct {
	name          string
	pkt           []byte
	fds           byte
	trunc, ctrunc bool
	synced        bool
	accepted      bool // dispatch passes it to the handler
}

func marshalSeed(r *zdsapi.WorkloadRequest) []byte {
	b, err := proto.Marshal(r)
	if err != nil {
		panic(err)
	}
	return b
}

// dispatchSeeds are FuzzDispatch's corpus in testdata/fuzz. fds 0x05: one
// network namespace; 0x01: one /dev/null; 0x0e: two, both namespaces.
var dispatchSeeds = func() []dispatchSeed {
	add := marshalSeed(addRequest("default/server-n1", &zdsapi.WorkloadInfo{Name: "server-n1", Namespace: "default", ServiceAccount: "server-n1"}))
	addBare := marshalSeed(addRequest("ns/p", nil))
	keep := marshalSeed(keepRequest("default/server-n1"))
	del := marshalSeed(delRequest("default/server-n1"))
	snap := marshalSeed(snapshotSentRequest())
	return []dispatchSeed{
		{name: "valid-add", pkt: add, fds: 0x05, accepted: true},
		{name: "valid-add-no-workload-info", pkt: addBare, fds: 0x05, accepted: true},
		{name: "valid-add-after-snapshot", pkt: add, fds: 0x05, synced: true, accepted: true},
		{name: "valid-keep", pkt: keep, accepted: true},
		{name: "valid-del", pkt: del, accepted: true},
		{name: "valid-del-after-snapshot", pkt: del, synced: true, accepted: true},
		{name: "valid-snapshot-sent", pkt: snap, accepted: true},
		{name: "keep-after-snapshot", pkt: keep, synced: true},
		{name: "snapshot-sent-twice", pkt: snap, synced: true},
		{name: "add-no-fd", pkt: add},
		{name: "add-fd-not-a-netns", pkt: add, fds: 0x01},
		{name: "add-two-fds", pkt: add, fds: 0x0e},
		{name: "add-no-uid", pkt: marshalSeed(addRequest("", nil)), fds: 0x05},
		{name: "add-uid-newline", pkt: marshalSeed(addRequest("ns/p\nforged log line", nil)), fds: 0x05, accepted: true},
		{name: "add-uid-not-utf8", pkt: []byte("\x0a\x06\x0a\x04ns/\xff"), fds: 0x05},
		{name: "keep-with-fd", pkt: keep, fds: 0x05},
		{name: "del-with-fd", pkt: del, fds: 0x05},
		{name: "del-no-uid", pkt: marshalSeed(delRequest(""))},
		{name: "snapshot-sent-with-fd", pkt: snap, fds: 0x01},
		{name: "truncated-packet", pkt: add[:len(add)-3], fds: 0x05, trunc: true},
		{name: "truncated-control", pkt: snap, fds: 0x05, ctrunc: true},
		{name: "an-ack", pkt: []byte{0x0a, 0x00}, fds: 0x05},
		{name: "a-hello", pkt: []byte{0x08, 0x01}},
		{name: "empty", pkt: []byte{}},
		{name: "garbage", pkt: []byte("not protobuf"), fds: 0x01},
	}
}()

// An ackSeed is a seed of FuzzDecodeAck: a proxy packet and whether the
// agent read it truncated.
type ackSeed struct {
	name     string
	pkt      []byte
	trunc    bool
	accepted bool // decodeAck reads it as an ack
}

// ackSeeds are FuzzDecodeAck's corpus in testdata/fuzz.
var ackSeeds = func() []ackSeed {
	// A WorkloadResponse{ack{error: reason}}, written out so that it may
	// be invalid (protobuf refuses to marshal a string that is not UTF-8).
	ack := func(reason string) []byte {
		return append([]byte{0x0a, byte(2 + len(reason)), 0x0a, byte(len(reason))}, reason...)
	}
	return []ackSeed{
		{name: "ack", pkt: ackPacket(""), accepted: true},
		{name: "nack", pkt: ackPacket(`add "ns/p": fd 3 is not a namespace`), accepted: true},
		{name: "nack-multi-line", pkt: ack("rejected\ninpod: proxy 9 rejected it: forged"), accepted: true},
		{name: "nack-long", pkt: ackPacket(strings.Repeat("ü", 2*maxAck)), accepted: true},
		{name: "nack-not-utf8", pkt: ack("bad \xff")},
		{name: "truncated", pkt: ackPacket(""), trunc: true},
		{name: "not-an-ack", pkt: marshalSeed(delRequest("ns/p"))},
		{name: "a-hello", pkt: helloPacket()},
		{name: "garbage", pkt: []byte("garbage")},
		{name: "empty", pkt: []byte{}},
	}
}()

func FuzzDispatch(f *testing.F) {
	for _, s := range dispatchSeeds {
		f.Add(s.pkt, s.fds, s.trunc, s.ctrunc, s.synced)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, fdSpec byte, trunc, ctrunc, synced bool) {
		fds, netns := openFuzzFDs(t, fdSpec)
		flags := 0
		if trunc {
			flags |= unix.MSG_TRUNC
		}
		if ctrunc {
			flags |= unix.MSG_CTRUNC
		}
		var h fuzzHandler
		st := &session{synced: synced}
		err := st.dispatch(&h, pkt, fds, flags)
		checkClosed(t, fds)
		oneLineError(t, "dispatch", err)
		if err != nil {
			// Nothing malformed reaches the handler, and the NACK
			// reaches the agent.
			if h.calls != 0 {
				t.Fatalf("rejected (%v) but the handler was called (%s %q)", err, h.kind, h.uid)
			}
			if st.synced != synced {
				t.Fatalf("rejected (%v) but the session's snapshot state changed", err)
			}
			checkAck(t, err.Error())
			return
		}
		// Accepted: exactly one call, with what the protocol demands.
		if h.calls != 1 {
			t.Fatalf("accepted but the handler saw %d calls, last %q", h.calls, h.kind)
		}
		if flags != 0 {
			t.Fatalf("accepted a truncated packet (flags %#x)", flags)
		}
		switch h.kind {
		case KindAdd:
			if h.uid == "" || len(fds) != 1 || !netns[0] || h.fd != fds[0] {
				t.Fatalf("accepted add %q with fds %v (netns %v), handed fd %d", h.uid, fds, netns, h.fd)
			}
		case KindKeep:
			if h.uid == "" || len(fds) != 0 || synced {
				t.Fatalf("accepted keep %q with %d fds (after the snapshot: %v)", h.uid, len(fds), synced)
			}
		case KindDel:
			if h.uid == "" || len(fds) != 0 {
				t.Fatalf("accepted del %q with %d fds", h.uid, len(fds))
			}
		case KindSnapshotSent:
			if len(fds) != 0 || synced || !st.synced {
				t.Fatalf("accepted snapshot_sent with %d fds (after the snapshot: %v, now %v)", len(fds), synced, st.synced)
			}
		default:
			t.Fatalf("accepted unknown kind %q", h.kind)
		}
		if !utf8.ValidString(h.uid) || !utf8.ValidString(h.info.GetName()) || !utf8.ValidString(h.info.GetNamespace()) || !utf8.ValidString(h.info.GetServiceAccount()) {
			t.Fatalf("handed strings that are not UTF-8: uid %q, workload %v", h.uid, h.info)
		}

		// Round trip: what the agent would send for this call decodes to
		// the same call.
		msg, err := requestPacket(h.request())
		if err != nil {
			t.Fatalf("re-encode %s %q: %v", h.kind, h.uid, err)
		}
		var spec byte
		if h.kind == KindAdd {
			spec = 1 | fdNetNSBit
		}
		fds2, _ := openFuzzFDs(t, spec)
		var h2 fuzzHandler
		err = (&session{synced: synced}).dispatch(&h2, msg, fds2, 0)
		checkClosed(t, fds2)
		if err != nil || h2.calls != 1 || h2.kind != h.kind || h2.uid != h.uid || !proto.Equal(h2.info, h.info) {
			t.Fatalf("round trip of %x: got %s %q %v (%v), want %s %q %v", msg, h2.kind, h2.uid, h2.info, err, h.kind, h.uid, h.info)
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	for _, s := range ackSeeds {
		f.Add(s.pkt, s.trunc)
	}
	f.Fuzz(func(t *testing.T, pkt []byte, trunc bool) {
		flags := 0
		if trunc {
			flags = unix.MSG_TRUNC
		}
		reason, err := decodeAck(pkt, flags)
		oneLineError(t, "decodeAck", err)
		if err != nil {
			return
		}
		if trunc {
			t.Fatalf("accepted a truncated packet %x", pkt)
		}
		var r zdsapi.WorkloadResponse
		if proto.Unmarshal(pkt, &r) != nil || r.GetAck() == nil {
			t.Fatalf("accepted %x, which is not an ack", pkt)
		}
		// The reason ends up in NackError, which is logged one per line.
		if strings.ContainsAny(reason, "\r\n") {
			t.Fatalf("NACK reason spans several lines: %q", reason)
		}
		oneLineError(t, "NackError", &NackError{Proxy: "proxy 1", Reason: reason})
		// Round trip: the ack a proxy would send for this reason decodes
		// to the same reason (or, if too long for an ack, its start).
		checkAck(t, reason)
	})
}

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz from dispatchSeeds and ackSeeds")

// corpusFile is a seed in the format of testdata/fuzz ("go test fuzz v1").
func corpusFile(vals ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case byte:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		default:
			panic(fmt.Sprintf("corpusFile: %T", v))
		}
	}
	return b.Bytes()
}

// checkCorpus compares the seed files in testdata/fuzz/<fuzzer> with want
// (file name → contents), or rewrites them with -update-fuzz-seeds. A file
// not in want is obsolete.
func checkCorpus(t *testing.T, fuzzer string, want map[string][]byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzzer)
	if *updateFuzzSeeds {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range want {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if _, ok := want[e.Name()]; !ok {
			t.Errorf("%s/%s is not a seed of %s (obsolete?)", dir, e.Name(), fuzzer)
		}
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%v (rewrite the seeds with -update-fuzz-seeds)", err)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s/%s:\n%s\nwant\n%s\n(rewrite the seeds with -update-fuzz-seeds)", dir, name, got, b)
		}
	}
}

// TestFuzzSeeds: the fuzzers' seed files are the seeds above, and each seed
// is what its name says: the valid ones are accepted, the others rejected
// (the fuzzers check only that what is accepted is sound).
func TestFuzzSeeds(t *testing.T) {
	files := map[string][]byte{}
	for _, s := range dispatchSeeds {
		fds, _ := openFuzzFDs(t, s.fds)
		flags := 0
		if s.trunc {
			flags |= unix.MSG_TRUNC
		}
		if s.ctrunc {
			flags |= unix.MSG_CTRUNC
		}
		var h fuzzHandler
		err := (&session{synced: s.synced}).dispatch(&h, s.pkt, fds, flags)
		checkClosed(t, fds)
		if (err == nil) != s.accepted || (h.calls == 1) != s.accepted {
			t.Errorf("dispatch seed %s: error %v, %d handler calls; want accepted %v", s.name, err, h.calls, s.accepted)
		}
		files[s.name] = corpusFile(s.pkt, s.fds, s.trunc, s.ctrunc, s.synced)
	}
	checkCorpus(t, "FuzzDispatch", files)

	files = map[string][]byte{}
	for _, s := range ackSeeds {
		flags := 0
		if s.trunc {
			flags = unix.MSG_TRUNC
		}
		if _, err := decodeAck(s.pkt, flags); (err == nil) != s.accepted {
			t.Errorf("ack seed %s: error %v, want accepted %v", s.name, err, s.accepted)
		}
		files[s.name] = corpusFile(s.pkt, s.trunc)
	}
	checkCorpus(t, "FuzzDecodeAck", files)
}
