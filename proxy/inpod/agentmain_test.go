package inpod

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/netnsx"
)

func runMain(main func([]string, *bytes.Buffer, *bytes.Buffer) int, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func redirectMain(args []string, out, errb *bytes.Buffer) int { return RedirectMain(args, out, errb) }
func agentMain(args []string, out, errb *bytes.Buffer) int    { return NodeAgentMain(args, out, errb) }

// The sidecar init container, run inside a fresh pod namespace: the rules
// are there after, the same after a second run, and they do what the
// sidecar needs (the application's traffic to the proxy's ports, the proxy's
// own let through).
func TestRedirectMainInPodNamespace(t *testing.T) {
	outside, pod := podPair(t)
	var code int
	var stdout, stderr string
	for run := 1; run <= 2; run++ {
		err := netnsx.Do(pod, func() error {
			code, stdout, stderr = runMain(redirectMain, "--mode", "sidecar", "--pod-ip", podIP.String())
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 || stderr != "" || strings.Count(stdout, "\n") != 1 || !strings.Contains(stdout, "pod 10.99.0.2") {
			t.Fatalf("run %d: exit %d, stdout %q, stderr %q", run, code, stdout, stderr)
		}
		if rules := redirectRules(t, pod); rules["outbound"] != 1 || rules["inbound"] != 1 || len(rules) != 4 {
			t.Fatalf("run %d: chains and rule counts %v, want one outbound and one inbound rule in 4 chains", run, rules)
		}
	}
	if hasRedirect(t, outside) {
		t.Fatal("the rules leaked into another namespace")
	}
	announce(t, outside, "10.99.0.1:9090", "target")
	announce(t, pod, "127.0.0.1:15001", "outbound")
	announce(t, pod, ":15006", "inbound")
	announce(t, pod, ":15020", "admin")
	if got, want := reach(t, pod, "10.99.0.1:9090", 0), "outbound 10.99.0.1:9090"; got != want {
		t.Errorf("app → outside: %q, want %q", got, want)
	}
	if got, want := reach(t, pod, "10.99.0.1:9090", testMark), "target -"; got != want {
		t.Errorf("proxy → outside: %q, want %q", got, want)
	}
	if got, want := reach(t, outside, "10.99.0.2:8080", 0), "inbound 10.99.0.2:8080"; got != want {
		t.Errorf("outside → app: %q, want %q", got, want)
	}
	// The kubelet's probe of the sidecar's admin port reaches it directly.
	if got := reach(t, outside, "10.99.0.2:15020", 0); !strings.HasPrefix(got, "admin ") {
		t.Errorf("outside → admin: %q", got)
	}
}

// --netns names the namespace by path, as a debugging aid on a node.
func TestRedirectMainNetNSFlag(t *testing.T) {
	ns, _ := podNS(t)
	code, _, stderr := runMain(redirectMain, "--pod-ip", "10.1.2.3", "--netns", fmt.Sprintf("/proc/self/fd/%d", ns), "--mark", "0x99")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !hasRedirect(t, ns) {
		t.Error("no rules in the --netns namespace")
	}
}

func TestRedirectMainBadInput(t *testing.T) {
	regular := filepath.Join(t.TempDir(), "file")
	os.WriteFile(regular, []byte("x"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--pod-ip is required"},
		{[]string{"--pod-ip", "10.0.0.300"}, `--pod-ip "10.0.0.300" is not an IPv4 address`},
		{[]string{"--pod-ip", "fd00::1"}, "not an IPv4 address"},
		{[]string{"--pod-ip", "10.0.0.1", "--mode", "ambient"}, `--mode "ambient" unknown`},
		{[]string{"--pod-ip", "10.0.0.1", "--mark", "0"}, "--mark 0 out of range"},
		{[]string{"--pod-ip", "10.0.0.1", "--mark", "0x100000000"}, "out of range"},
		{[]string{"--pod-ip", "10.0.0.1", "--mark", "many"}, "invalid value"},
		{[]string{"--pod-ip", "10.0.0.1", "--netns", "/nonexistent/ns"}, "open network namespace /nonexistent/ns"},
		{[]string{"--pod-ip", "10.0.0.1", "--netns", regular}, "not a network namespace"},
		{[]string{"--pod-ip", "10.0.0.1", "stray"}, `unexpected argument "stray"`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
	} {
		code, stdout, stderr := runMain(redirectMain, c.args...)
		if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and one line with %q", c.args, code, stdout, stderr, c.want)
		}
	}
}

func TestNodeAgentMainBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--node is required"},
		{[]string{"--node", "w1", "--inpod", ""}, `--inpod ""`},
		{[]string{"--node", "w1", "--netns-dir", dir, "--mark", "0"}, "--mark 0 out of range"},
		{[]string{"--node", "w1", "--netns-dir", dir, "--resync", "0s"}, "must be positive"},
		{[]string{"--node", "w1", "--netns-dir", dir, "--watch-timeout", "10ms"}, "--watch-timeout 10ms"},
		{[]string{"--node", "w1", "--netns-dir", filepath.Join(dir, "none")}, "not a directory"},
		{[]string{"--node", "w1", "--netns-dir", dir, "--api-server", "http://x:80"}, `--api-server "http://x:80": want https://host:port`},
		{[]string{"--node", "w1", "--resync", "soon"}, "invalid value"},
		{[]string{"--node", "w1", "extra"}, `unexpected argument "extra"`},
	} {
		code, _, stderr := runMain(agentMain, c.args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", c.args, code, stderr, c.want)
		}
	}
	// Outside a pod: one line, exit 1 (the environment, not the flags).
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	code, _, stderr := runMain(agentMain, "--node", "w1", "--netns-dir", dir)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "KUBERNETES_SERVICE_HOST") {
		t.Errorf("outside a pod: exit %d, stderr %q", code, stderr)
	}
}

// The command end to end: against the fake API server, it hands the ambient
// pod to a proxy, and stops cleanly on SIGTERM.
func TestNodeAgentMainRuns(t *testing.T) {
	api := newFakeAPI(t)
	_, saDir := api.client(t)
	dir := t.TempDir()
	fd, ino := addrNS(t, "10.23.0.2/16")
	bindNS(t, dir, "cni-p", fd)
	api.setNamespace("amb", map[string]string{AmbientLabel: "ambient"})
	api.setPod(mkPod("amb", "p", "w1", "10.23.0.2", nil))
	sock := sockPath(t)
	done := make(chan int, 1)
	var stderr syncBuf
	go func() {
		done <- NodeAgentMain([]string{"--node", "w1", "--inpod", sock, "--netns-dir", dir, "--api-server", api.srv.URL,
			"--service-account-dir", saDir, "--mark", fmt.Sprint(testMark)}, &bytes.Buffer{}, &stderr)
	}()
	h := newRec(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, sock, h)
	h.expect(t, event{kind: "add", uid: zuid("amb/p"), ino: ino, workload: wl("amb/p")}, event{kind: "snapshot"})
	if !hasRedirect(t, fd) {
		t.Error("no redirect rules in the pod")
	}
	// SIGTERM, as the kubelet stops the container (NotifyContext catches
	// it; the test process is not killed).
	time.Sleep(50 * time.Millisecond)
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no exit within 5s of SIGTERM")
	}
	if !strings.Contains(stderr.String(), "node-agent[w1]: amb/p: redirected") {
		t.Errorf("log lacks the pod: %s", stderr.String())
	}
	// The rules stay: the pod is still captured while no agent runs.
	if !hasRedirect(t, fd) {
		t.Error("stopping the agent removed the pod's rules")
	}
}

// syncBuf is a buffer written by one goroutine and read by another.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
