package netns

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/sandbox"
)

// TestMain runs the tests inside the sandbox (they need namespaces), and
// doubles as the process started in pods: with BR_TEST_ECHO set it is a TCP
// echo server on that port.
func TestMain(m *testing.M) {
	if port := os.Getenv("BR_TEST_ECHO"); port != "" {
		echo(port)
		return
	}
	if !sandbox.Inside() {
		code, err := sandbox.Enter(os.Args[1:])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(code)
	}
	if err := sandbox.Setup(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func echo(port string) {
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
	}
}

func testCluster(t testing.TB, nodes int, pods []PodSpec) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Up(ctx, Config{Nodes: nodes, Pods: pods, NotReadyGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Down)
	return c
}

// dialFrom connects from inside a pod and round-trips a message.
func dialFrom(c *Cluster, pod, addr string, timeout time.Duration) error {
	p, _ := c.Pod(pod)
	var conn net.Conn
	err := p.InPod(func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	return err
}

func TestPodToPodAcrossNodesServiceAndCrash(t *testing.T) {
	c := testCluster(t, 3, []PodSpec{{"a", 1}, {"b", 2}, {"c", 3}, {"d", 3}})
	for _, p := range []string{"b", "c", "d"} {
		if _, err := c.Start(p, ProcSpec{Name: "echo", Env: []string{"BR_TEST_ECHO=7000"}, ProbePort: 7000}); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := c.AddService("echo-3", 80, 7000, []string{"c", "d"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := c.Pod("b")
	cpod, _ := c.Pod("c")
	if err := dialFrom(c, "a", b.IP.String()+":7000", time.Second); err != nil {
		t.Fatalf("pod a -> pod b across nodes: %v", err)
	}
	vip := fmt.Sprintf("%s:80", svc.VIP)
	deadline := time.Now().Add(3 * time.Second)
	for len(svc.Endpoints()) != 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := svc.Endpoints(); len(got) != 2 {
		t.Fatalf("endpoints = %v, want c and d", got)
	}
	for i := 0; i < 5; i++ {
		if err := dialFrom(c, "a", vip, time.Second); err != nil {
			t.Fatalf("a -> VIP: %v", err)
		}
	}
	if _, err := c.CrashNode("node-3"); err != nil {
		t.Fatal(err)
	}
	// A crashed node is a black hole: the dial times out rather than being refused.
	err = dialFrom(c, "a", cpod.IP.String()+":7000", 300*time.Millisecond)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("dial to crashed node: got %v, want a timeout", err)
	}
	// After the grace period the endpoints go, and the VIP refuses at once.
	deadline = time.Now().Add(3 * time.Second)
	for len(svc.Endpoints()) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := svc.Endpoints(); len(got) != 0 {
		t.Fatalf("endpoints of crashed node still %v", got)
	}
	if err := dialFrom(c, "a", vip, time.Second); err == nil || !isRefused(err) {
		t.Fatalf("VIP with no endpoints: got %v, want connection refused", err)
	}
	if _, err := c.RecoverNode("node-3"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(c, "a", cpod.IP.String()+":7000", time.Second); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func isRefused(err error) bool {
	return err != nil && (os.IsTimeout(err) == false) && containsRefused(err.Error())
}

func containsRefused(s string) bool {
	for i := 0; i+len("refused") <= len(s); i++ {
		if s[i:i+len("refused")] == "refused" {
			return true
		}
	}
	return false
}

func TestDropFlowBlackHolesOnlyThatFlow(t *testing.T) {
	c := testCluster(t, 2, []PodSpec{{"a", 1}, {"x", 1}, {"b", 2}})
	if _, err := c.Start("b", ProcSpec{Name: "echo", Env: []string{"BR_TEST_ECHO=7000"}, ProbePort: 7000}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ := c.Pod("a")
	b, _ := c.Pod("b")
	target := b.IP.String() + ":7000"
	_, undo, err := c.DropFlow("b", a.IP, 7000)
	if err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(c, "a", target, 300*time.Millisecond); err == nil {
		t.Fatal("dropped flow still connects")
	}
	if err := dialFrom(c, "x", target, time.Second); err != nil {
		t.Fatalf("other flow affected by the drop: %v", err)
	}
	if _, _, err := undo(); err != nil {
		t.Fatal(err)
	}
	if err := dialFrom(c, "a", target, time.Second); err != nil {
		t.Fatalf("after undo: %v", err)
	}
}

// BenchmarkBringUp measures bring-up of a 3-node, 6-workload cluster.
func BenchmarkBringUp(b *testing.B) {
	pods := []PodSpec{{"c1", 1}, {"s1", 1}, {"c2", 2}, {"s2", 2}, {"c3", 3}, {"s3", 3}}
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := Up(ctx, Config{Nodes: 3, Pods: pods})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		c.Down()
	}
}

// A service's endpoints are reported only once the rules carry them: a
// caller that waits for endpoints and then dials the VIP must not race the
// batch that writes the rules.
func TestEndpointsAreReportedOnlyOnceProgrammed(t *testing.T) {
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	testHookProgramming = func() {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate
	}
	// Cleanups run last-in first-out: the gate opens, the cluster goes
	// down, and only then is the hook cleared, so no goroutine reads it
	// while it changes.
	t.Cleanup(func() { testHookProgramming = nil })
	c := testCluster(t, 1, []PodSpec{{"a", 1}, {"b", 1}})
	t.Cleanup(func() { close(gate) })
	if _, err := c.Start("b", ProcSpec{Name: "echo", Env: []string{"BR_TEST_ECHO=7000"}, ProbePort: 7000}); err != nil {
		t.Fatal(err)
	}
	svc, err := c.AddService("echo", 80, 7000, []string{"b"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the endpoint controller never decided b was ready")
	}
	if got := svc.Endpoints(); len(got) != 0 {
		t.Fatalf("endpoints %v reported before their rules were written", got)
	}
	gate <- struct{}{}
	deadline := time.Now().Add(3 * time.Second)
	for len(svc.Endpoints()) != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := svc.Endpoints(); len(got) != 1 {
		t.Fatalf("endpoints = %v after the rules were written, want [b]", got)
	}
	if err := dialFrom(c, "a", fmt.Sprintf("%s:80", svc.VIP), time.Second); err != nil {
		t.Fatalf("a -> VIP once endpoints are reported: %v", err)
	}
}
