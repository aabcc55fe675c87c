package evidence

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// The resume rule over hand-made packets: a direction moves again at its
// first acknowledgment beyond the highest seen before the hole ended; a
// connection resumes when both directions have; a peer at the first of its
// connections that resumes.
func TestResumedRule(t *testing.T) {
	peer, other, third := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")
	ms := func(v int) int64 { return int64(v) * int64(time.Millisecond) }
	pk := func(at int, peer netip.Addr, local uint16, out bool, ack uint32) tapPacket {
		return tapPacket{at: ms(at), peer: peer, local: local, remote: 80, out: out, ackFlag: true, ack: ack}
	}
	const from, start, end, until = 100, 200, 400, 2000
	pkts := []tapPacket{
		// Connection 1 to peer: no data before the hole; inside it the
		// peer's packets still arrive (seen, then dropped) with the old
		// acknowledgment; after it the peer acknowledges new data at 700 ms
		// and the namespace at 650 ms: resumed at 700.
		pk(150, peer, 1000, true, 500), pk(160, peer, 1000, false, 9000),
		pk(300, peer, 1000, false, 9000),
		pk(450, peer, 1000, false, 9000), // a duplicate: not new
		pk(650, peer, 1000, true, 600),
		pk(700, peer, 1000, false, 9100),
		// Connection 2 to peer: carried data before the hole; after it only
		// the namespace's side moves, so it never resumes: stuck. (Without
		// a packet after the hole it would be idle, not stuck.)
		pk(150, peer, 1001, true, 1),
		{at: ms(160), peer: peer, local: 1001, remote: 80, ackFlag: true, ack: 1, seq: 1, payload: 10},
		pk(800, peer, 1001, true, 2),
		// Connection to another peer, opened after the hole; its sequence
		// numbers wrap.
		{at: ms(500), peer: other, local: 2000, remote: 80, out: true, syn: true},
		pk(501, other, 2000, false, 0xffffffff), pk(502, other, 2000, true, 77),
		pk(510, other, 2000, false, 3), pk(520, other, 2000, true, 90),
		// Connection 3 to a third peer: data received just before the hole
		// (seq 100, 5 bytes) was acknowledged inside it, unseen; the first
		// acknowledgment after the hole (105) is of that, not new; 110 at
		// 600 ms is.
		pk(150, third, 3000, true, 100), pk(160, third, 3000, false, 50),
		{at: ms(190), peer: third, local: 3000, remote: 80, ackFlag: true, ack: 50, seq: 100, payload: 5},
		pk(410, third, 3000, true, 105), pk(420, third, 3000, false, 60),
		pk(600, third, 3000, true, 110),
		// Connection 4 to peer: carried data before the hole and comes back
		// last, at 900 ms: the peer's Last.
		{at: ms(150), peer: peer, local: 1003, remote: 80, out: true, ackFlag: true, ack: 7, seq: 1, payload: 20},
		pk(160, peer, 1003, false, 21),
		pk(880, peer, 1003, true, 7), pk(890, peer, 1003, false, 41), pk(900, peer, 1003, true, 9),
		// Outside the window: ignored.
		pk(50, peer, 1002, true, 1), pk(2500, peer, 1000, false, 9999999),
	}
	// A connection dialled inside the hole: its SYN, lost there, is
	// retried at 1.2 s; it comes back at 1.25 s and, connecting as the hole
	// closed (opened), is the third peer's last.
	pkts = append(pkts,
		tapPacket{at: ms(1200), peer: third, local: 3001, remote: 80, out: true, syn: true},
		tapPacket{at: ms(1201), peer: third, local: 3001, remote: 80, syn: true, ackFlag: true, ack: 101},
		pk(1202, third, 3001, true, 501), pk(1240, third, 3001, false, 120), pk(1250, third, 3001, true, 600))
	opened := map[connKey]bool{{third, 3001, 80}: true}
	got := resumed(pkts, opened, ms(from), ms(start), ms(end), ms(until))
	want := []Resume{
		{Peer: peer, At: time.Unix(0, ms(700)), Last: time.Unix(0, ms(900)), Connections: 3, Stuck: 1},
		{Peer: other, At: time.Unix(0, ms(520)), Last: time.Unix(0, ms(520)), Connections: 1}, // new: At only
		{Peer: third, At: time.Unix(0, ms(600)), Last: time.Unix(0, ms(1250)), Connections: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].Peer != want[i].Peer || !got[i].At.Equal(want[i].At) || !got[i].Last.Equal(want[i].Last) ||
			got[i].Connections != want[i].Connections || got[i].Stuck != want[i].Stuck {
			t.Errorf("peer %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	// A hole nothing came back from: no resume.
	if r := resumed(pkts[:3], nil, ms(from), ms(start), ms(end), ms(until)); len(r) != 1 || !r[0].At.IsZero() {
		t.Errorf("no packets after the hole: got %+v, want a peer and no resume", r)
	}
}

// A real hole in a namespace, cut as a client pod's is (every packet in and
// out but loopback, both directions at once): the tap places the
// connection's return where TCP's back-off put it, after the hole, and a
// stretch with no hole at once.
func TestTapPlacesBackoff(t *testing.T) {
	a, b := newNS(t, true), newNS(t, true)
	vethPair(t, a, b, "10.9.0.1/24", "10.9.0.2/24")
	push := make(chan struct{}, 1)
	defer close(push)
	ln, err := netnsx.ListenTCP(b, "10.9.0.2:7000", netnsx.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// The server pushes a line of its own when told (push): sent inside
		// a hole, it is lost, so the server is sure to be waiting on its
		// retransmission timer, doubled by the timeouts lost in the hole,
		// when the hole closes.
		go func() {
			for range push {
				if _, err := c.Write([]byte("push\n")); err != nil {
					return
				}
			}
		}()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}()
	tap, err := OpenTap(a)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	c, err := netnsx.DialTCP(t.Context(), a, "10.9.0.2:7000", 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A message every 5 ms, echoes read as they come.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		r := bufio.NewReader(c)
		for {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
		}
	}()
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := fmt.Fprintf(c, "m%d\n", i); err != nil {
				return
			}
		}
	}()
	peer := netip.MustParseAddr("10.9.0.2")
	resumeOf := func(rs []Resume) time.Time {
		for _, r := range rs {
			if r.Peer == peer {
				return r.At
			}
		}
		return time.Time{}
	}

	// No hole: "resumed" within a few milliseconds of any instant.
	time.Sleep(300 * time.Millisecond)
	mark := time.Now()
	time.Sleep(300 * time.Millisecond)
	if at := resumeOf(tap.Resumed(mark, mark, time.Now())); at.IsZero() || at.Sub(mark) > 50*time.Millisecond {
		t.Fatalf("no hole: resumed %v after the mark, want within 50ms", at.Sub(mark))
	}

	// A 1 s hole with a segment pushed 50 ms into it: it is lost, its
	// retransmissions about 200 ms and 600 ms later are lost too, and the
	// next, doubled, comes about 450 ms after the hole. (The client's own
	// segments are dropped before they leave, and it sends them again at
	// its next write, so its direction alone would be back at once.)
	// Enough sockets in the namespace that its socket table spans many
	// pages (a client pod's connections in TIME_WAIT): the connecting one
	// is listed after all of them.
	for range 150 {
		ln, err := netnsx.ListenTCP(a, "127.0.0.1:0", netnsx.ListenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
	}
	start := time.Now()
	undo := holeNS(t, a)
	time.Sleep(50 * time.Millisecond)
	push <- struct{}{}
	// A connection dialled inside the hole is still connecting as it
	// closes: HoleClosing finds it in the namespace's socket table.
	dialed := make(chan struct{})
	go func() {
		defer close(dialed)
		if c2, err := netnsx.DialTCP(t.Context(), a, "10.9.0.2:7000", 0, 5*time.Second); err == nil {
			c2.Close()
		}
	}()
	time.Sleep(950 * time.Millisecond)
	undo()
	tap.HoleClosing()
	tap.mu.Lock()
	connecting := 0
	for k := range tap.opened {
		if k.peer == netip.MustParseAddr("10.9.0.2") && k.remote == 7000 {
			connecting++
		}
	}
	tap.mu.Unlock()
	if connecting != 1 {
		t.Errorf("%d connections to the peer connecting as the hole closed, want the one dialled inside it", connecting)
	}
	<-dialed
	end := time.Now()
	time.Sleep(2 * time.Second)
	at := resumeOf(tap.Resumed(start, end, time.Now()))
	if at.IsZero() {
		t.Fatal("the connection never resumed after the hole")
	}
	late := at.Sub(end)
	t.Logf("resumed %v after a 1s hole", late)
	if late < 100*time.Millisecond || late > 1500*time.Millisecond {
		t.Errorf("resumed %v after the hole; want the back-off (100ms..1.5s after it)", late)
		tap.mu.Lock()
		for _, p := range tap.pkts {
			if p.at > start.UnixNano()-int64(20*time.Millisecond) && p.at < at.UnixNano()+int64(5*time.Millisecond) {
				t.Logf("%+8.3fms out=%v ack=%d pl=%d syn=%v", float64(p.at-end.UnixNano())/1e6, p.out, p.ack, p.payload, p.syn)
			}
		}
		tap.mu.Unlock()
	}
	if drops, err := tap.Health(); drops != 0 || err != nil {
		t.Errorf("tap health: %d drops, %v", drops, err)
	}
}

// vethPair links namespaces a and b, a side aCIDR and b side bCIDR.
func vethPair(t *testing.T, a, b int, aCIDR, bCIDR string) {
	t.Helper()
	ha, err := netlink.NewHandleAt(vnetns.NsHandle(a))
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := netlink.NewHandleAt(vnetns.NsHandle(b))
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	if err := ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb", PeerNamespace: netlink.NsFd(b)}); err != nil {
		t.Fatal("add veth:", err)
	}
	ends := []struct {
		h          *netlink.Handle
		name, cidr string
	}{{ha, "va", aCIDR}, {hb, "vb", bCIDR}}
	for _, s := range ends {
		l, err := s.h.LinkByName(s.name)
		if err != nil {
			t.Fatal(err)
		}
		addr, err := netlink.ParseAddr(s.cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := s.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	// A veth's carrier comes up a moment after LinkSetUp; a SYN sent
	// before it is dropped, and its retransmission comes a second later,
	// past a short dial timeout (seen under load).
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range ends {
		for {
			l, err := s.h.LinkByName(s.name)
			if err != nil {
				t.Fatal(err)
			}
			if l.Attrs().OperState == netlink.OperUp {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("veth %s not up after 5s: %s", s.name, l.Attrs().OperState)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// holeNS drops every packet entering or leaving namespace fd through a
// device other than loopback, as a client-pod black hole does; the
// returned function removes the drop.
func holeNS(t *testing.T, fd int) func() {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := conn.AddTable(&nftables.Table{Name: "tap-test-hole", Family: nftables.TableFamilyINet})
	for _, d := range []struct {
		name string
		hook *nftables.ChainHook
		key  expr.MetaKey
	}{{"in", nftables.ChainHookPrerouting, expr.MetaKeyIIF}, {"out", nftables.ChainHookPostrouting, expr.MetaKeyOIF}} {
		ch := conn.AddChain(&nftables.Chain{Name: d.name, Table: tbl, Type: nftables.ChainTypeFilter,
			Hooknum: d.hook, Priority: nftables.ChainPriorityRaw})
		conn.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: d.key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, 1)},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	if err := conn.Flush(); err != nil {
		t.Fatalf("hole: %v", err)
	}
	return func() {
		conn.DelTable(tbl)
		if err := conn.Flush(); err != nil {
			t.Errorf("remove hole: %v", err)
		}
	}
}
