package evidence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// A Tap records the TCP headers of every IPv4 packet that crosses a network
// namespace's interfaces other than loopback, with the kernel's receive
// timestamp. It answers one question about a black hole: when did the
// namespace's connections to a peer carry new data both ways again after the
// hole (Resumed)? That instant is the end of the hole as the namespace's
// flows saw it on the wire, which TCP back-off can put well after the
// network came back (a retransmission timeout that fired inside the hole is
// lost, and the next is doubled), and which counters sampled every 100 ms
// cannot place within a bucket.
//
// The socket is AF_PACKET in the namespace, so it sees outbound packets as
// they reach the device (after netfilter's postrouting: a packet dropped
// there is never seen) and inbound packets as they arrive (before
// prerouting: a packet dropped there is seen). Resumed only reads
// acknowledgment numbers, which a dropped inbound packet cannot advance: the
// peer acknowledges what it received, and inside a hole it receives nothing.
type Tap struct {
	fd     int
	tcp    int              // the namespace's /proc/net/tcp, -1 if it could not be opened
	opened map[connKey]bool // connecting inside the current hole
	mu     sync.Mutex
	pkts   []tapPacket
	err    error // why reading stopped early
	drops  int
	done   chan struct{}
	stop   atomic.Bool // the reader is to return
	closed bool        // fd is closed
}

// tapPacket is what Resumed needs of one packet.
type tapPacket struct {
	at            int64 // unix nanoseconds, kernel receive timestamp
	peer          netip.Addr
	local         uint16 // the namespace's port
	remote        uint16 // the peer's port
	seq, ack      uint32
	out           bool // sent by the namespace
	ackFlag       bool
	syn, fin, rst bool
	payload       uint16
}

// seqEnd is the sequence number after the packet's data: what the receiver
// acknowledges once it has it.
func (p tapPacket) seqEnd() uint32 {
	n := p.seq + uint32(p.payload)
	if p.syn {
		n++
	}
	if p.fin {
		n++
	}
	return n
}

// tapSnap is how much of a packet a Tap reads: the largest IPv4 header (60)
// and the TCP header up to its acknowledgment number and flags (14).
const tapSnap = 60 + 14

// OpenTap starts a tap in the network namespace nsFD. Close stops it.
func OpenTap(nsFD int) (*Tap, error) {
	var fd int
	err := netnsx.Do(nsFD, func() error {
		var err error
		// Cooked (SOCK_DGRAM): the IP packet without its link header, so
		// veth and any other device read alike. ETH_P_ALL, not ETH_P_IP:
		// the kernel hands outgoing packets only to all-protocol taps.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("packet tap: %w", err)
	}
	fail := func(what string, err error) (*Tap, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("packet tap: %s: %w", what, err)
	}
	// Room for a burst while the reader is descheduled: a busy 2-core
	// machine stalls a goroutine for tens of milliseconds.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20); err != nil {
		return fail("receive buffer", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("timestamps", err)
	}
	// A read returns at least every 100 ms, so Close is noticed.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("receive timeout", err)
	}
	t := &Tap{fd: fd, tcp: -1, done: make(chan struct{})}
	// /proc/net/tcp stays bound to the namespace it was opened in (as the
	// evidence sampler's counters do): read again at a hole's end, it
	// lists the connections still connecting then.
	_ = netnsx.Do(nsFD, func() error {
		var err error
		t.tcp, err = unix.Open("/proc/thread-self/net/tcp", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.tcp = -1
		}
		return nil
	})
	go t.read()
	return t, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (t *Tap) read() {
	defer close(t.done)
	buf := make([]byte, tapSnap)
	oob := make([]byte, unix.CmsgSpace(16))
	for {
		if t.stop.Load() { // checked per packet: no lock on the read path
			return
		}
		n, oobn, _, from, err := unix.Recvmsg(t.fd, buf, oob, unix.MSG_TRUNC)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			t.mu.Lock()
			t.err = err
			t.mu.Unlock()
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Ifindex == loopbackIfindex || ll.Protocol != htons(unix.ETH_P_IP) {
			continue
		}
		at := time.Now().UnixNano()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= 16 {
					at = int64(binary.NativeEndian.Uint64(m.Data[0:8]))*1e9 + int64(binary.NativeEndian.Uint64(m.Data[8:16]))
				}
			}
		}
		p, ok := parseTCP4(buf[:min(n, len(buf))], ll.Pkttype == unix.PACKET_OUTGOING)
		if !ok {
			continue
		}
		p.at = at
		t.mu.Lock()
		t.pkts = append(t.pkts, p)
		t.mu.Unlock()
	}
}

// loopbackIfindex is the loopback device's index in every namespace.
const loopbackIfindex = 1

// parseTCP4 reads an IPv4 TCP packet's header fields; ok is false for
// anything else (or a first fragment's header cut short).
func parseTCP4(b []byte, out bool) (p tapPacket, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_TCP {
		return p, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < 20 || len(b) < ihl+14 || binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
		return p, false // a later fragment carries no TCP header
	}
	src, dst := netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	tcp := b[ihl:]
	sport, dport := binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])
	p.out = out
	if out {
		p.peer, p.local, p.remote = dst, sport, dport
	} else {
		p.peer, p.local, p.remote = src, dport, sport
	}
	p.seq = binary.BigEndian.Uint32(tcp[4:8])
	p.ack = binary.BigEndian.Uint32(tcp[8:12])
	doff := int(tcp[12]>>4) * 4
	flags := tcp[13]
	p.ackFlag = flags&0x10 != 0
	p.syn = flags&0x02 != 0
	p.fin = flags&0x01 != 0
	p.rst = flags&0x04 != 0
	if pl := total - ihl - doff; pl > 0 && doff >= 20 {
		p.payload = uint16(pl)
	}
	return p, true
}

// Close stops the tap and releases its socket; what it recorded stays
// readable.
func (t *Tap) Close() error {
	if t.stop.Swap(true) {
		return nil
	}
	<-t.done
	t.Health() // the kernel's last drop count
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.tcp >= 0 {
		unix.Close(t.tcp)
	}
	return unix.Close(t.fd)
}

// Health says whether the tap saw every packet so far: how many the kernel
// dropped from its queue because the reader fell behind (a Resumed answer
// from such a tap may be late), and why reading stopped, if it did.
func (t *Tap) Health() (drops int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		// The kernel's count resets on each read: keep the sum.
		if st, serr := unix.GetsockoptTpacketStats(t.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); serr == nil {
			t.drops += int(st.Drops)
		}
	}
	return t.drops, t.err
}

// Resume is when a namespace's TCP traffic with one peer moved again after a
// hole. Which of several connections carries a given flow is not visible
// from outside (HBONE multiplexes many flows over TLS), so a peer's answer is
// a range: from the first of its connections to come back to the last.
type Resume struct {
	Peer netip.Addr
	// At is the first instant after the hole when some connection with the
	// peer had carried new data both ways: the peer acknowledged data from
	// the namespace it had not acknowledged before the hole ended, and the
	// namespace acknowledged new data from the peer. Zero when no connection
	// did so before the window closed.
	At time.Time
	// Last is when the last connection that had carried data before the
	// hole came back (At if none had). A connection first seen after the
	// hole is new, not one that comes back: it bounds At but not Last.
	Last time.Time
	// Connections is how many connections with the peer the tap saw
	// around the hole; Stuck how many of those had carried data before the
	// hole, were still trying after it (a packet either way) and had not
	// come back when the window closed.
	Connections, Stuck int
}

// HoleClosing is called as a hole closes (just after the drop is
// removed): it notes the connections still connecting (SYN sent) then.
// Their first SYN was lost in the hole, unseen (the tap sees outgoing
// packets only past the drop), so without this they would look opened
// after the hole, new rather than coming back, when their retried SYN gets
// through: a pooled connection dialled inside the hole holds its flows
// until then. The retry comes a second or more after the first SYN, so
// reading the socket table just after the drop went finds them still
// connecting; a connection dialled in those few milliseconds connects at
// once and is as good as new.
func (t *Tap) HoleClosing() {
	opened := map[connKey]bool{}
	if t.tcp >= 0 {
		if b, err := readProcTable(t.tcp); err == nil {
			for _, k := range synSent(b) {
				opened[k] = true
			}
		}
	}
	t.mu.Lock()
	t.opened = opened
	t.mu.Unlock()
}

// readProcTable reads a whole /proc/net/tcp from its descriptor. The kernel
// hands such a table out a page at a time (about 27 sockets per read, what
// a pod with a few hundred connections in TIME_WAIT far exceeds), so it
// reads on to the end, sequentially from the start: a read at an offset
// makes the kernel walk the table from its beginning again, which for
// thousands of sockets takes tens of milliseconds.
func readProcTable(fd int) ([]byte, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, 64<<10)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// synSent parses /proc/net/tcp for sockets in SYN_SENT: "sl local rem st
// ...", addresses as hex IPv4 in host byte order and a hex port.
func synSent(b []byte) []connKey {
	var out []connKey
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "02" {
			continue
		}
		lip, lport, ok1 := hexAddr(f[1])
		rip, rport, ok2 := hexAddr(f[2])
		if !ok1 || !ok2 || !lip.IsValid() {
			continue
		}
		out = append(out, connKey{peer: rip, local: lport, remote: rport})
	}
	return out
}

func hexAddr(s string) (netip.Addr, uint16, bool) {
	ip, port, ok := strings.Cut(s, ":")
	if !ok || len(ip) != 8 {
		return netip.Addr{}, 0, false
	}
	a, err1 := strconv.ParseUint(ip, 16, 32)
	p, err2 := strconv.ParseUint(port, 16, 16)
	if err1 != nil || err2 != nil {
		return netip.Addr{}, 0, false
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(a))
	return netip.AddrFrom4(b), uint16(p), true
}

// Resumed returns, for each peer the namespace exchanged TCP packets with
// around a hole that opened at start and closed at end, when its connections
// moved again (Resume.At), from the packets seen until then. It looks back
// up to a second before the hole for where each connection stood. Packets
// before start are forgotten afterwards, so a long run's tap holds about one
// hole's packets at a time.
func (t *Tap) Resumed(start, end, until time.Time) []Resume {
	t.mu.Lock()
	pkts, opened := t.pkts, t.opened
	t.opened = nil
	t.mu.Unlock()
	rs := resumed(pkts, opened, start.Add(-lookBack).UnixNano(), start.UnixNano(), end.UnixNano(), until.UnixNano())
	t.forget(start.UnixNano())
	return rs
}

// lookBack is how far before a hole Resumed reads where each connection
// stood: a flow at a few requests a second exchanges data in that time.
const lookBack = time.Second

// forget drops the packets before a point in time.
func (t *Tap) forget(before int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := sort.Search(len(t.pkts), func(i int) bool { return t.pkts[i].at >= before })
	t.pkts = append(t.pkts[:0:0], t.pkts[i:]...)
}

// connKey names a connection from the namespace's side.
type connKey struct {
	peer          netip.Addr
	local, remote uint16
}

// connState follows one connection's acknowledgment numbers in each
// direction. A direction's baseline is where it stood when the hole closed:
// the highest acknowledgment seen before then or, for the namespace's own
// acknowledgments, the end of the data it received before the hole opened if
// that is further (it acknowledged that data inside the hole, where the tap
// cannot see an outgoing packet). A connection opened later starts from its
// first acknowledgment. A direction has moved again at the first later
// acknowledgment beyond its baseline.
type connState struct {
	base     [2]uint32 // [in (the peer's acks), out (the namespace's)]
	haveBase [2]bool
	moved    [2]int64
	before   bool // carried data before the hole
	after    bool // sent or received anything after it
	closed   bool // FIN or RST seen
}

// raise lifts direction d's baseline to v if v is beyond it.
func (c *connState) raise(d int, v uint32) {
	if !c.haveBase[d] || int32(v-c.base[d]) > 0 {
		c.base[d], c.haveBase[d] = v, true
	}
}

// resumed is Resumed over a slice of packets (in arrival order), reading
// those from from to until, for a hole from start to end; opened are the
// connections that were connecting as the hole closed.
func resumed(pkts []tapPacket, opened map[connKey]bool, from, start, end, until int64) []Resume {
	conns := map[connKey]*connState{}
	var order []connKey
	for _, p := range pkts {
		if p.at < from || p.at > until {
			continue
		}
		k := connKey{p.peer, p.local, p.remote}
		c := conns[k]
		if c == nil || (p.syn && !p.ackFlag) {
			// A new connection, or the 4-tuple used again: a SYN without
			// ACK opens one either way.
			if c == nil {
				order = append(order, k)
			}
			// Connecting as the hole closed: its first SYN was lost in the
			// hole, so it is one the hole held up, not a new one.
			c = &connState{before: opened[k]}
			conns[k] = c
		}
		if !p.out && p.at < start && (p.payload > 0 || p.syn || p.fin) {
			c.raise(1, p.seqEnd()) // received before the hole
		}
		if p.at < start && p.payload > 0 {
			c.before = true
		}
		if p.fin || p.rst {
			c.closed = true
		}
		if p.at >= end {
			c.after = true
		}
		if !p.ackFlag {
			continue
		}
		d := 0
		if p.out {
			d = 1
		}
		switch {
		case !c.haveBase[d] || p.at < end:
			c.raise(d, p.ack)
		case c.moved[d] == 0 && int32(p.ack-c.base[d]) > 0:
			c.moved[d] = p.at
		}
	}
	byPeer := map[netip.Addr]*Resume{}
	var peers []netip.Addr
	for _, k := range order {
		c := conns[k]
		r := byPeer[k.peer]
		if r == nil {
			r = &Resume{Peer: k.peer}
			byPeer[k.peer] = r
			peers = append(peers, k.peer)
		}
		r.Connections++
		if c.moved[0] == 0 || c.moved[1] == 0 {
			if c.before && c.after && !c.closed {
				r.Stuck++ // still trying, not idle
			}
			continue
		}
		at := time.Unix(0, max(c.moved[0], c.moved[1]))
		if r.At.IsZero() || at.Before(r.At) {
			r.At = at
		}
		if c.before && at.After(r.Last) {
			r.Last = at
		}
	}
	out := make([]Resume, 0, len(peers))
	for _, p := range peers {
		r := byPeer[p]
		if r.Last.Before(r.At) {
			r.Last = r.At
		}
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer.Less(out[j].Peer) })
	return out
}
