package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
)

// eventually retries f until it succeeds or d has passed.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitRestarted waits until pr runs with a PID other than old and is ready.
func waitRestarted(t *testing.T, pr *netns.Process, old int) {
	t.Helper()
	eventually(t, 10*time.Second, pr.Spec.Name+" restarted", func() error {
		if pid := pr.Pid(); pid == 0 || pid == old || !pr.Ready() {
			return fmt.Errorf("pid %d (was %d), ready %v", pid, old, pr.Ready())
		}
		return nil
	})
}

// httpOK is one request to the service that must answer 200.
func (e *env) httpOK() error {
	code, err := e.httpGet("/")
	if err == nil && code != 200 {
		err = fmt.Errorf("status %d", code)
	}
	return err
}

// stream is a long-lived TCP echo connection from a to b.
type stream struct{ net.Conn }

func (e *env) openStream(t *testing.T) stream {
	t.Helper()
	c, err := e.dialA(e.b.IP.String() + ":9000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return stream{c}
}

func (s stream) roundTrip(msg string) error {
	_ = s.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(s, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(s, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// servedPods is what a proxy's /config_dump says it serves.
func servedPods(t *testing.T, pod *netns.Pod) []string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s:%d/config_dump", pod.IP, ProxyAdminPort))
	if err != nil {
		t.Fatalf("config_dump of %s: %v", pod.Name, err)
	}
	defer resp.Body.Close()
	var dump struct {
		Pods []string `json:"pods"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		t.Fatal(err)
	}
	return dump.Pods
}

func TestPrimitivesRefuseWrongMode(t *testing.T) {
	side := &Reference{Mode: "sidecar"}
	amb := &Reference{Mode: "ambient"}
	ctx := context.Background()
	for name, err := range map[string]error{
		"CrashNodeAgent sidecar":       second(side.CrashNodeAgent("node-1")),
		"RestartNodeAgent sidecar":     second(side.RestartNodeAgent("node-1")),
		"CrashWaypoint sidecar":        second(side.CrashWaypoint("waypoint-0")),
		"StopWaypoints sidecar":        second(side.StopWaypoints()),
		"StartWaypoints sidecar":       second(side.StartWaypoints(ctx)),
		"CrashSidecar ambient":         second(amb.CrashSidecar("a")),
		"CrashNodeAgent undeployed":    second(amb.CrashNodeAgent("node-1")),
		"StopWaypoints none":           second(amb.StopWaypoints()),
		"CrashControlPlane undeployed": second(amb.CrashControlPlane()),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, _, err := side.DrainNodeProxy(ctx, "node-1"); err == nil {
		t.Error("DrainNodeProxy in sidecar mode: no error")
	}
	if _, _, err := amb.RestartAppPod(ctx, "a"); err == nil {
		t.Error("RestartAppPod undeployed: no error")
	}
	side.ConfigureWaypoint("echo-b", 2)
	if got := side.WaypointPods(); len(got) != 0 {
		t.Errorf("sidecar mode has waypoint pods %v", got)
	}
}

func second[T any](_ T, err error) error { return err }

func TestAmbientNodeAgentCrashAndRestart(t *testing.T) {
	e := deploy(t, "ambient")
	z1, _ := e.cl.Pod(ZtunnelPod(1))
	s := e.openStream(t)
	if err := s.roundTrip("before"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ref.CrashNodeAgent("node-9"); err == nil {
		t.Error("crash of the agent of an unknown node accepted")
	}
	for _, n := range []string{"node-1", "node-2"} {
		if _, err := e.ref.CrashNodeAgent(n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.ref.CrashNodeAgent("node-1"); err == nil {
		t.Error("crash of a crashed agent accepted")
	}
	// Without its agent the node proxy keeps its pods and serves them.
	if err := s.roundTrip("agentless"); err != nil {
		t.Errorf("established connection without agents: %v", err)
	}
	if err := e.echoTCP(marker()); err != nil {
		t.Errorf("new connection without agents: %v", err)
	}
	if err := e.httpOK(); err != nil {
		t.Errorf("service without agents: %v", err)
	}
	if got := servedPods(t, z1); !slices.Contains(got, UID("a")) {
		t.Errorf("node-1 proxy serves %v without its agent, want %s kept", got, UID("a"))
	}
	// Let the proxies fail a reconnection or two (back-off grows).
	time.Sleep(400 * time.Millisecond)
	for _, n := range []string{"node-1", "node-2"} {
		if _, err := e.ref.RestartNodeAgent(n); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"node-1", "node-2"} {
		eventually(t, 8*time.Second, n+" proxy reconnected to its agent", func() error {
			e.ref.mu.Lock()
			a := e.ref.agents[n]
			e.ref.mu.Unlock()
			if a == nil || a.Connected() != 1 {
				return fmt.Errorf("agent %v not connected", a)
			}
			return nil
		})
	}
	// The snapshot re-added the same pods: kept as they were, so even the
	// connection opened before the crash still works.
	if err := s.roundTrip("after"); err != nil {
		t.Errorf("established connection after the agents restarted: %v", err)
	}
	if err := e.echoTCP(marker()); err != nil {
		t.Errorf("new connection after the agents restarted: %v", err)
	}
	if got := servedPods(t, z1); !slices.Equal(got, []string{UID("a")}) {
		t.Errorf("node-1 proxy serves %v, want [%s]", got, UID("a"))
	}
}

func TestAmbientWaypointCrashStopStart(t *testing.T) {
	e := deploy(t, "ambient", func(r *Reference) { r.ConfigureWaypoint("echo-b", 2) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if got := e.ref.WaypointPods(); !slices.Equal(got, []string{"waypoint-0", "waypoint-1"}) {
		t.Fatalf("waypoint pods %v", got)
	}
	if _, err := e.ref.CrashWaypoint("a"); err == nil {
		t.Error("crash of a non-waypoint pod as a waypoint accepted")
	}
	w0 := e.ref.Proxies[WaypointPod(0)]
	pid := w0.Pid()
	if _, err := e.ref.CrashWaypoint(WaypointPod(0)); err != nil {
		t.Fatal(err)
	}
	waitRestarted(t, w0, pid)
	wp0, _ := e.cl.Pod(WaypointPod(0))
	in0 := metric(t, wp0, "hbone_streams_total", `direction="inbound"`)
	// Traffic through the waypoints works again, and reaches the restarted
	// replica too once it is an endpoint again.
	eventually(t, 10*time.Second, "traffic through the restarted waypoint", func() error {
		if err := e.httpOK(); err != nil {
			return err
		}
		if metric(t, wp0, "hbone_streams_total", `direction="inbound"`) == in0 {
			return fmt.Errorf("restarted replica got nothing yet")
		}
		return nil
	})

	if _, err := e.ref.StopWaypoints(); err != nil {
		t.Fatal(err)
	}
	for _, name := range e.ref.WaypointPods() {
		if e.ref.Proxies[name].Running() {
			t.Fatalf("%s still runs after StopWaypoints", name)
		}
	}
	eventually(t, 10*time.Second, "service bound to stopped waypoints fails", func() error {
		if e.httpOK() == nil {
			return fmt.Errorf("request succeeded")
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond) // longer than a supervisor tick: not restarted
	for _, name := range e.ref.WaypointPods() {
		if e.ref.Proxies[name].Running() {
			t.Fatalf("%s restarted after StopWaypoints", name)
		}
	}
	if err := e.httpOK(); err == nil {
		t.Error("request succeeded with the waypoints stopped")
	}
	if err := e.echoTCP(marker()); err != nil {
		t.Errorf("pod-to-pod traffic (no waypoint) with the waypoints stopped: %v", err)
	}
	if _, err := e.ref.StartWaypoints(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "service after StartWaypoints", e.httpOK)
}

func TestSidecarCrashAndRestartAppPod(t *testing.T) {
	e := deploy(t, "sidecar")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := e.ref.CrashSidecar(ControlPlanePod); err == nil {
		t.Error("crash of the control plane as a sidecar accepted")
	}
	sc := e.ref.Proxies["b"]
	pid := sc.Pid()
	if _, err := e.ref.CrashSidecar("b"); err != nil {
		t.Fatal(err)
	}
	waitRestarted(t, sc, pid)
	eventually(t, 10*time.Second, "traffic after the sidecar crash", func() error { return e.echoTCP(marker()) })

	pid = sc.Pid()
	stopped, ready, err := e.ref.RestartAppPod(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if !ready.After(stopped) {
		t.Errorf("ready %v not after stopped %v", ready, stopped)
	}
	sc = e.ref.Proxies["b"]
	if sc.Spec.Name != "sidecar" || sc.Pid() == pid || !sc.Ready() {
		t.Errorf("sidecar after RestartAppPod: %s pid %d (was %d) ready %v", sc.Spec.Name, sc.Pid(), pid, sc.Ready())
	}
	eventually(t, 10*time.Second, "service after RestartAppPod", e.httpOK)
}

func TestAmbientDrainNodeProxyAndCrashControlPlane(t *testing.T) {
	e := deploy(t, "ambient")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cp := e.ref.Proxies[ControlPlanePod]
	pid, restarts := cp.Pid(), cp.Restarts()
	if _, err := e.ref.CrashControlPlane(); err != nil {
		t.Fatal(err)
	}
	waitRestarted(t, cp, pid)
	if cp.Restarts() != restarts+1 {
		t.Errorf("control plane restarts %d, want %d", cp.Restarts(), restarts+1)
	}
	eventually(t, 10*time.Second, "traffic after the control plane crash", e.httpOK)

	if _, _, err := e.ref.DrainNodeProxy(ctx, "node-7"); err == nil {
		t.Error("drain of an unknown node's proxy accepted")
	}
	s := e.openStream(t)
	if err := s.roundTrip("before"); err != nil {
		t.Fatal(err)
	}
	z2 := e.ref.Proxies[ZtunnelPod(2)]
	stopped, done, err := e.ref.DrainNodeProxy(ctx, "node-2")
	if err != nil {
		t.Fatal(err)
	}
	// Draining: the established connection still works until the deadline.
	if err := s.roundTrip("draining"); err != nil {
		t.Errorf("established connection during the drain: %v", err)
	}
	select {
	case <-done:
	case <-time.After(e.ref.Drain + 5*time.Second):
		t.Fatal("drained proxy did not exit")
	}
	if took := time.Since(stopped); took < e.ref.Drain/2 {
		t.Errorf("proxy exited %v after SIGTERM, before its drain deadline %v", took, e.ref.Drain)
	}
	time.Sleep(300 * time.Millisecond) // longer than a supervisor tick: not restarted
	if z2.Running() {
		t.Fatal("drained node proxy was restarted")
	}
	if err := e.echoTCP(marker()); err == nil {
		t.Error("traffic to node-2 works with its node proxy drained")
	}
}
