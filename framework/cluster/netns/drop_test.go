package netns

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/netnsx"
)

func TestDropPodCutsBothWaysButNotLoopback(t *testing.T) {
	c := testCluster(t, 2, []PodSpec{{"a", 1}, {"b", 2}})
	startEchoes(t, c, "a", "b")
	a, _ := c.Pod("a")
	// Stands in for the ambient node proxy's outbound listener in a.
	if _, err := c.Start("a", ProcSpec{Name: "proxy", Env: []string{"BR_TEST_ECHO=15001"}, ProbePort: 15001}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	if err := a.InPod(func() (err error) { conn, err = net.DialTimeout("tcp", echoAddr(c, "b"), time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	if _, _, err := c.DropPod("nope"); err == nil {
		t.Error("drop of an unknown pod accepted")
	}
	at, undo, err := c.DropPod("a")
	if err != nil {
		t.Fatal(err)
	}
	wantTimeout(t, c, "a", "b")
	wantTimeout(t, c, "b", "a")
	_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Errorf("write on an established connection: %v, want it queued", err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 4)); !isTimeout(err) {
		t.Errorf("established connection: got %v, want a stall", err)
	}
	for _, local := range []string{"127.0.0.1:7000", echoAddr(c, "a")} {
		if err := dialFrom(c, "a", local, time.Second); err != nil {
			t.Errorf("loopback %s inside the pod: %v", local, err)
		}
	}

	// Ambient's in-pod rules: the app's connection, redirected to the local
	// proxy, still works; the proxy's own marked upstream connection does not.
	ip, _ := netip.AddrFromSlice(a.IP.To4())
	if err := inpod.ApplyRedirect(a.NetNSFD(), ip, 0x539); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(c, "a", echoAddr(c, "b"), time.Second); err != nil {
		t.Errorf("redirected to the in-pod proxy: %v", err)
	}
	if up, err := netnsx.DialTCP(ctx, a.NetNSFD(), echoAddr(c, "b"), 0x539, 300*time.Millisecond); !isTimeout(err) {
		t.Errorf("the proxy's marked upstream dial: got %v, want a timeout", err)
		if up != nil {
			up.Close()
		}
	}
	if err := inpod.RemoveRedirect(a.NetNSFD()); err != nil {
		t.Fatal(err)
	}

	began, took, err := undo()
	if err != nil {
		t.Fatal(err)
	}
	if began.Before(at) || took <= 0 {
		t.Errorf("undo began %v (hole at %v), took %v", began, at, took)
	}
	wantWorks(t, c, "a", "b")
	wantWorks(t, c, "b", "a")
	// The stalled write gets through on retransmission.
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 4)); err != nil {
		t.Errorf("established connection after the hole: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
