package evidence

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// newNS creates a network namespace, with loopback up if asked, released at
// the end of the test.
func newNS(tb testing.TB, loUp bool) int {
	tb.Helper()
	fd, err := netnsx.NewNS()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	if loUp {
		h, err := netlink.NewHandleAt(vnetns.NsHandle(fd))
		if err != nil {
			tb.Fatal(err)
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err == nil {
			err = h.LinkSetUp(lo)
		}
		if err != nil {
			tb.Fatalf("loopback up: %v", err)
		}
	}
	return fd
}

// dropPort black-holes TCP to port as it enters the namespace (input hook):
// the sender's segments vanish and it must retransmit. The returned
// function removes the rule.
func dropPort(t *testing.T, fd, port int) func() {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tbl := conn.AddTable(&nftables.Table{Name: "evidence-test", Family: nftables.TableFamilyIPv4})
	ch := conn.AddChain(&nftables.Chain{Name: "drop", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	conn.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(port))},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := conn.Flush(); err != nil {
		t.Fatalf("nftables drop: %v", err)
	}
	return func() {
		conn.DelTable(tbl)
		if err := conn.Flush(); err != nil {
			t.Errorf("remove drop: %v", err)
		}
	}
}

// The sampler reads each namespace's own TCP counters: a connection inside
// namespace A whose data is dropped makes A's RetransSegs and RTO count go
// up, while namespace B, idle, and the test's own namespace see nothing.
// Reading the wrong namespace (the sampler's own thread's, say) would give
// A zero and fail.
func TestNamespaceRetransmissions(t *testing.T) {
	a, b := newNS(t, true), newNS(t, false)
	ownBefore := ownRetrans(t)

	ln, err := netnsx.ListenTCP(a, "127.0.0.1:0", netnsx.ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	ctx := context.Background()
	c, err := netnsx.DialTCP(ctx, a, ln.Addr().String(), 0, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "evidence")
	s, err := Start(ctx, Config{Dir: dir, Interval: 50 * time.Millisecond, Namespaces: []Namespace{
		{Source: Source{Name: "netns.a", Pod: "a"}, FD: a},
		{Source: Source{Name: "netns.b", Pod: "b"}, FD: b},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	time.Sleep(120 * time.Millisecond)
	from := time.Now()
	undrop := dropPort(t, a, ln.Addr().(*net.TCPAddr).Port)
	// Segments sent now are dropped on arrival: the sender times out
	// (RTO ≥ 200 ms, doubling) and retransmits until the drop goes.
	for i := 0; i < 5; i++ {
		if _, err := c.Write([]byte(fmt.Sprintf("lost segment %d", i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(900 * time.Millisecond)
	undrop()
	time.Sleep(300 * time.Millisecond) // the next retransmission gets through
	to := time.Now()
	time.Sleep(120 * time.Millisecond)
	s.Stop()

	ev := Open(dir).Evidence(from, to, []string{"netns.a"})
	if ev == nil {
		t.Fatal("no evidence for namespace a")
	}
	t.Logf("namespace a: %+v", ev)
	if ev.TCPRetransSegs < 2 {
		t.Errorf("namespace a: tcpRetransSegs = %d, want ≥ 2 (segments were dropped for a second)", ev.TCPRetransSegs)
	}
	if ev.TCPTimeouts < 1 {
		t.Errorf("namespace a: tcpTimeouts = %d, want ≥ 1", ev.TCPTimeouts)
	}
	if ev.TCPOutSegs < 5 {
		t.Errorf("namespace a: tcpOutSegs = %d, want ≥ 5", ev.TCPOutSegs)
	}
	evB := Open(dir).Evidence(from, to, []string{"netns.b"})
	if evB == nil || len(evB.Sources) != 1 {
		t.Fatalf("namespace b: %+v, want sampled", evB)
	}
	if evB.TCPRetransSegs != 0 || evB.TCPOutSegs != 0 {
		t.Errorf("namespace b saw traffic it never had: %+v", evB)
	}
	if d := ownRetrans(t) - ownBefore; d != 0 {
		t.Errorf("the test's own namespace counted %v retransmissions: the traffic leaked out of namespace a", d)
	}
}

// ownRetrans is RetransSegs of the calling thread's namespace.
func ownRetrans(t *testing.T) float64 {
	t.Helper()
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	r, err := openNS(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	c, err := r.read()
	if err != nil {
		t.Fatal(err)
	}
	return c["TcpRetransSegs"]
}

// A pod whose every process died keeps its namespace; the sampler's open
// files keep reading it even after the descriptor it was given is closed.
func TestNamespaceOutlivesDescriptor(t *testing.T) {
	fd, err := netnsx.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	r, err := openNS(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	for i := 0; i < 3; i++ {
		if _, err := r.read(); err != nil {
			t.Fatalf("read %d after the descriptor closed: %v", i, err)
		}
	}
}

// BenchmarkNamespaceRound is one sampling round over 30 pod namespaces
// (read, parse, one line written per namespace): the sampler's cost per
// interval. docs/results.md has the figure.
func BenchmarkNamespaceRound(b *testing.B) {
	const n = 30
	var nss []Namespace
	for i := 0; i < n; i++ {
		nss = append(nss, Namespace{Source: Source{Name: fmt.Sprintf("netns.pod-%d", i)}, FD: newNS(b, true)})
	}
	// An hour's interval: only the first round runs by itself.
	s, err := Start(context.Background(), Config{Dir: b.TempDir(), Interval: time.Hour, Namespaces: nss})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	b.ReportAllocs()
	cpu := startCPU(b)
	for i := 0; i < b.N; i++ {
		s.sampleNamespaces(time.Now())
	}
	per := cpu.stop(b)
	// The fraction of one core taken at the default 100 ms interval.
	b.ReportMetric(100*float64(per)/float64(DefaultInterval), "%core@100ms")
}

// cpuClock measures the CPU time (user + system, all threads) a benchmark
// loop takes, per operation: on a machine shared with other work, wall
// time per operation mostly measures the others.
type cpuClock struct{ start time.Duration }

func processCPU(tb testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU(b *testing.B) cpuClock {
	b.ResetTimer()
	return cpuClock{start: processCPU(b)}
}

// stop reports cpu-µs/op and returns the CPU time per operation.
func (c cpuClock) stop(b *testing.B) time.Duration {
	b.StopTimer()
	per := (processCPU(b) - c.start) / time.Duration(b.N)
	b.ReportMetric(float64(per)/float64(time.Microsecond), "cpu-µs/op")
	return per
}

// BenchmarkProxyScrape is one scrape of a proxy's /metrics over a kept-alive
// loopback connection, parse included (the proxy's side of it included:
// the fake proxy runs in this process).
func BenchmarkProxyScrape(b *testing.B) {
	p := newFakeProxy()
	p.out.ConnectionsOpened.Add(12)
	p.out.StreamsOpened.Add(3000)
	p.out.Fail("dial_failed")
	p.own.OutboundOpened.Add(3000)
	srv := newLoopbackServer(b, p)
	sc := newScraper(Proxy{URL: srv})
	defer sc.close()
	b.ReportAllocs()
	cpu := startCPU(b)
	for i := 0; i < b.N; i++ {
		if _, err := sc.scrape(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	per := cpu.stop(b)
	b.ReportMetric(100*float64(per)/float64(DefaultInterval), "%core@100ms")
}

func newLoopbackServer(tb testing.TB, h http.Handler) string {
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}
