package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// A connection the kernel handed to the old proxy's listener just before a
// drain closed it is the old proxy's to serve: its client already has a
// SYN-ACK from it. If the drain does not wait for it, the process exits under
// it and the client sees a reset, the one-in-thousands failure of a graceful
// restart under new-connection load. The window is between Accept returning
// and the proxy tracking the connection; the hook holds a connection there
// while the drain runs, as a descheduled accept loop would.
func TestDrainServesConnectionAcceptedAsListenerCloses(t *testing.T) {
	ip := netip.MustParseAddr("10.244.2.3")
	fd := podNS(t, ip)
	p := New(Options{Node: "node-1", Mark: DefaultMark},
		func(context.Context, []byte, string) ([]byte, error) { return nil, fmt.Errorf("no CA in this test") }, func() []byte { return nil })
	p.SetSnapshot(snap())
	servePod(t, p, fd, ip)

	held, release := make(chan struct{}), make(chan struct{})
	testHookAccepted = func(net.Conn) {
		close(held)
		<-release
	}
	t.Cleanup(func() { testHookAccepted = nil })

	// The pod's application dials the outbound port straight (a "loop"
	// the proxy rejects at once once it handles the connection): what is
	// measured is whether the drain waits for it to be handled at all.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := netnsx.DialTCP(ctx, fd, fmt.Sprintf("127.0.0.1:%d", OutboundPort), 0, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the proxy never accepted the connection")
	}

	drained := make(chan int64, 1)
	go func() {
		p.Drain(5 * time.Second)
		drained <- p.Metrics.OutboundOpened.Load()
	}()
	// The drain has closed the listeners by now; the connection is still
	// between Accept and tracking.
	time.Sleep(300 * time.Millisecond)
	close(release)
	select {
	case opened := <-drained:
		if opened != 1 {
			t.Fatalf("the drain finished with the accepted connection never handled (%d handled): the process would exit under it", opened)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drain did not finish")
	}
}
