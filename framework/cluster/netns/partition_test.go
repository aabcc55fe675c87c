package netns

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// startEchoes starts the test echo server on port 7000 in each pod and waits
// until they are ready.
func startEchoes(t *testing.T, c *Cluster, pods ...string) {
	t.Helper()
	for _, p := range pods {
		if _, err := c.Start(p, ProcSpec{Name: "echo", Env: []string{"BR_TEST_ECHO=7000"}, ProbePort: 7000}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func echoAddr(c *Cluster, pod string) string {
	p, _ := c.Pod(pod)
	return p.IP.String() + ":7000"
}

// wantTimeout fails unless a dial from pod to the echo of dst times out: a
// black hole, not a refusal.
func wantTimeout(t *testing.T, c *Cluster, pod, dst string) {
	t.Helper()
	err := dialFrom(c, pod, echoAddr(c, dst), 300*time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("%s -> %s: got %v, want a timeout", pod, dst, err)
	}
}

func wantWorks(t *testing.T, c *Cluster, pod, dst string) {
	t.Helper()
	if err := dialFrom(c, pod, echoAddr(c, dst), time.Second); err != nil {
		t.Errorf("%s -> %s: %v", pod, dst, err)
	}
}

func TestPartitionCutsTwoNodesOnly(t *testing.T) {
	c := testCluster(t, 3, []PodSpec{{"a", 1}, {"b", 2}, {"c", 3}})
	startEchoes(t, c, "a", "b", "c")

	// An established connection a -> b, to see it stall (not reset).
	ap, _ := c.Pod("a")
	var conn net.Conn
	if err := ap.InPod(func() (err error) { conn, err = net.DialTimeout("tcp", echoAddr(c, "b"), time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 4)
	roundTrip := func(d time.Duration) error {
		_ = conn.SetDeadline(time.Now().Add(d))
		if _, err := conn.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := io.ReadFull(conn, buf)
		return err
	}
	if err := roundTrip(time.Second); err != nil {
		t.Fatal(err)
	}

	if _, _, err := c.Partition("node-1", "node-1"); err == nil {
		t.Error("partition of a node from itself accepted")
	}
	if _, _, err := c.Partition("node-1", "node-9"); err == nil {
		t.Error("partition with an unknown node accepted")
	}
	at, heal, err := c.Partition("node-1", "node-2")
	if err != nil {
		t.Fatal(err)
	}
	if at.IsZero() {
		t.Error("zero start instant")
	}
	if _, _, err := c.Partition("node-2", "node-1"); err == nil {
		t.Error("the same partition twice accepted")
	}
	wantTimeout(t, c, "a", "b")
	wantTimeout(t, c, "b", "a")
	err = roundTrip(300 * time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Errorf("established connection across the partition: got %v, want a stall", err)
	}
	wantWorks(t, c, "a", "c")
	wantWorks(t, c, "c", "b")

	began, err := heal()
	if err != nil {
		t.Fatal(err)
	}
	if began.Before(at) {
		t.Error("heal began before the partition")
	}
	wantWorks(t, c, "a", "b")
	wantWorks(t, c, "b", "a")
	// The stalled connection survives: the first write's retransmission gets
	// through, then its echo and this one's.
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Errorf("stalled connection after heal: %v", err)
	}
	if err := roundTrip(3 * time.Second); err != nil {
		t.Errorf("established connection after heal: %v", err)
	}
	if again, err := heal(); err != nil || !again.Equal(began) {
		t.Errorf("second heal: %v %v, want the first result", again, err)
	}
}

func TestPartitionAllKeepsTrafficInsideANode(t *testing.T) {
	c := testCluster(t, 2, []PodSpec{{"a", 1}, {"x", 1}, {"b", 2}})
	startEchoes(t, c, "a", "x", "b")
	_, heal, err := c.PartitionAll()
	if err != nil {
		t.Fatal(err)
	}
	wantTimeout(t, c, "a", "b")
	wantTimeout(t, c, "b", "a")
	wantWorks(t, c, "a", "x")
	wantWorks(t, c, "x", "a")
	// The sandbox (where probes come from) still reaches every node's pods.
	if conn, err := net.DialTimeout("tcp", echoAddr(c, "b"), time.Second); err != nil {
		t.Errorf("sandbox -> b: %v", err)
	} else {
		conn.Close()
	}
	if _, err := heal(); err != nil {
		t.Fatal(err)
	}
	wantWorks(t, c, "a", "b")
	wantWorks(t, c, "b", "a")
}

func TestPartitionRefusesCrashedNode(t *testing.T) {
	c := testCluster(t, 2, []PodSpec{{"a", 1}})
	if _, err := c.CrashNode("node-2"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Partition("node-1", "node-2"); err == nil {
		t.Fatal("partition with a crashed node accepted")
	}
	// Nothing was left behind on node-1: a later partition is possible.
	if _, err := c.RecoverNode("node-2"); err != nil {
		t.Fatal(err)
	}
	_, heal, err := c.Partition("node-1", "node-2")
	if err != nil {
		t.Fatalf("after a refused partition: %v", err)
	}
	if _, err := heal(); err != nil {
		t.Fatal(err)
	}
}

func TestRestartPodNewPidReady(t *testing.T) {
	c := testCluster(t, 1, []PodSpec{{"a", 1}, {"b", 1}})
	startEchoes(t, c, "b")
	b, _ := c.Pod("b")
	pr := b.Processes()[0]
	pid, restarts := pr.Pid(), pr.Restarts()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := c.RestartPod(ctx, "nope", time.Second); err == nil {
		t.Error("restart of an unknown pod accepted")
	}
	stopped, ready, err := c.RestartPod(ctx, "b", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !ready.After(stopped) {
		t.Errorf("ready %v not after stopped %v", ready, stopped)
	}
	if np := pr.Pid(); np == 0 || np == pid {
		t.Errorf("pid %d after restart, was %d", np, pid)
	}
	if !pr.Ready() || pr.Restarts() != restarts {
		t.Errorf("ready %v, restarts %d (was %d)", pr.Ready(), pr.Restarts(), restarts)
	}
	wantWorks(t, c, "a", "b")
	// Still supervised: a crash after the restart is restarted.
	before := pr.Pid()
	pr.Kill()
	// Ready goes false only once the exit is reaped: wait for the new pid.
	for np := pr.Pid(); np == 0 || np == before || !pr.Ready(); np = pr.Pid() {
		if ctx.Err() != nil {
			t.Fatal("not restarted after a crash")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantWorks(t, c, "a", "b")
}
