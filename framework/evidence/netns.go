package evidence

import (
	"bytes"
	"fmt"

	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// The kernel TCP counters kept, by table ("Tcp:" lines of /proc/net/snmp,
// "TcpExt:" lines of /proc/net/netstat). Keys are nstat's names, table then
// field: TcpRetransSegs, TcpExtTCPTimeouts. Only counters are kept: a gauge
// such as CurrEstab has no meaningful increase.
var (
	tcpTable = newProcTable("Tcp",
		"ActiveOpens",  // connect()s that reached SYN-SENT
		"PassiveOpens", // connections accepted
		"AttemptFails", // connects that failed (SYN retries exhausted, RST to SYN)
		"EstabResets",  // established connections reset
		"InSegs",       // segments received: none means nothing reached the pod
		"OutSegs",      // segments sent, retransmissions excluded
		"RetransSegs",  // segments retransmitted
		"InErrs",
		"OutRsts", // resets sent
	)
	tcpExtTable = newProcTable("TcpExt",
		"TCPTimeouts",       // retransmission timer expiries (RTO)
		"TCPLossProbes",     // tail loss probes sent
		"TCPSynRetrans",     // SYN and SYN-ACK retransmissions
		"TCPAbortOnTimeout", // connections given up after too many retransmissions
	)
)

// procTable is one table of a /proc/net file and the fields kept from it.
type procTable struct {
	prefix string
	tag    []byte   // prefix + ":"
	fields []string // kernel names
	keys   []string // prefix + field, made once
}

func newProcTable(prefix string, fields ...string) *procTable {
	t := &procTable{prefix: prefix, tag: []byte(prefix + ":"), fields: fields}
	for _, f := range fields {
		t.keys = append(t.keys, prefix+f)
	}
	return t
}

// nsReader reads one network namespace's TCP counters.
//
// The files are opened once, from a thread inside the namespace, and kept
// open: a /proc/net file is bound to the namespace it was opened in (and
// holds a reference to it), and reading it again from offset 0 makes the
// kernel generate it afresh. So a round costs two pread(2)s per namespace
// and no setns, and it needs no process running in the pod: a pod whose
// processes crashed, or whose node is down, is still read.
type nsReader struct {
	snmp, netstat int // file descriptors
	buf           []byte
}

func openNS(nsFD int) (*nsReader, error) {
	r := &nsReader{snmp: -1, netstat: -1, buf: make([]byte, 16<<10)}
	// thread-self, not self: the namespace is the thread's, and only this
	// (locked) thread is inside it.
	err := netnsx.Do(nsFD, func() error {
		var err error
		if r.snmp, err = unix.Open("/proc/thread-self/net/snmp", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("open snmp: %w", err)
		}
		if r.netstat, err = unix.Open("/proc/thread-self/net/netstat", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return fmt.Errorf("open netstat: %w", err)
		}
		return nil
	})
	if err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *nsReader) close() {
	for _, fd := range []int{r.snmp, r.netstat} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	r.snmp, r.netstat = -1, -1
}

// read returns the kept counters; zeros are left out.
func (r *nsReader) read() (map[string]float64, error) {
	out := make(map[string]float64, len(tcpTable.keys)+len(tcpExtTable.keys))
	b, err := r.pread(r.snmp)
	if err != nil {
		return nil, fmt.Errorf("snmp: %w", err)
	}
	if err := parseProcNet(b, tcpTable, out); err != nil {
		return nil, fmt.Errorf("snmp: %w", err)
	}
	if b, err = r.pread(r.netstat); err != nil {
		return nil, fmt.Errorf("netstat: %w", err)
	}
	if err := parseProcNet(b, tcpExtTable, out); err != nil {
		return nil, fmt.Errorf("netstat: %w", err)
	}
	return out, nil
}

// pread reads a whole file from offset 0 into r.buf, growing it if the
// kernel has more (new kernels add TcpExt fields).
func (r *nsReader) pread(fd int) ([]byte, error) {
	n := 0
	for {
		if n == len(r.buf) {
			r.buf = append(r.buf, make([]byte, len(r.buf))...)
		}
		m, err := unix.Pread(fd, r.buf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		// A /proc/net file is one record, generated whole on the first
		// read: a read that leaves room in the buffer got all of it, and
		// asking again for the empty end would cost a system call.
		if m == 0 || m < len(r.buf)-n {
			return r.buf[:n+m], nil
		}
		n += m
	}
}

// parseProcNet picks t's fields from its table of /proc/net/snmp or
// /proc/net/netstat (a line of names, then a line of values, both starting
// with the table's tag) into out, leaving zeros out.
func parseProcNet(b []byte, t *procTable, out map[string]float64) error {
	var header []byte
	for len(b) > 0 {
		var l []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i], b[i+1:]
		} else {
			l, b = b, nil
		}
		if !bytes.HasPrefix(l, t.tag) {
			continue
		}
		if header == nil {
			header = l
			continue
		}
		// Walk names and values in step, without splitting into slices:
		// a round parses a few thousand fields.
		hs, vs := header[len(t.tag):], l[len(t.tag):]
		for {
			var h, v []byte
			h, hs = nextField(hs)
			v, vs = nextField(vs)
			if h == nil || v == nil {
				if h != nil || v != nil {
					return fmt.Errorf("%s: as many names as values expected", t.prefix)
				}
				return nil
			}
			for i, f := range t.fields {
				if string(h) != f {
					continue
				}
				x, ok := atou(v)
				if !ok {
					return fmt.Errorf("%s %s: bad value %q", t.prefix, f, v)
				}
				if x != 0 {
					out[t.keys[i]] = float64(x)
				}
				break
			}
		}
	}
	return fmt.Errorf("no %s table", t.prefix)
}

// nextField splits the first space-separated field off b; nil when none.
func nextField(b []byte) (field, rest []byte) {
	i := 0
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if i == len(b) {
		return nil, nil
	}
	j := i
	for j < len(b) && b[j] != ' ' {
		j++
	}
	return b[i:j], b[j:]
}

// atou parses a decimal counter without allocating (strconv would need a
// string): a round parses a few hundred fields.
func atou(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
