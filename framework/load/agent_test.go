package load

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/events"
)

func TestAgentMainUsageErrors(t *testing.T) {
	dir := t.TempDir()
	good := "id=a,target=127.0.0.1:80,profile=http-keepalive,qps=10,events=" + dir + "/a.jsonl"
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error line
	}{
		{"no args", nil, "nothing to do"},
		{"unknown flag", []string{"--nope"}, "nope"},
		{"stray argument", []string{"--flow", good, "extra"}, "unexpected argument"},
		{"not key=value", []string{"--flow", "id=a,target"}, "not key=value"},
		{"unknown key", []string{"--flow", good + ",color=red"}, "unknown key"},
		{"missing events", []string{"--flow", "id=a,target=127.0.0.1:80,profile=http-keepalive,qps=10"}, "missing events"},
		{"duplicate key", []string{"--flow", good + ",qps=3"}, "qps given twice"},
		{"bad qps", []string{"--flow", strings.Replace(good, "qps=10", "qps=fast", 1)}, "bad qps"},
		{"zero qps", []string{"--flow", strings.Replace(good, "qps=10", "qps=0", 1)}, "qps must be"},
		{"bad timeout", []string{"--flow", good + ",timeout=5"}, "bad timeout"},
		{"unknown profile", []string{"--flow", strings.Replace(good, "http-keepalive", "grpc", 1)}, "unknown profile"},
		{"host name target", []string{"--flow", strings.Replace(good, "127.0.0.1", "localhost", 1)}, "not an IP"},
		{"no port", []string{"--flow", strings.Replace(good, "127.0.0.1:80", "127.0.0.1", 1)}, "bad target"},
		{"duplicate id", []string{"--flow", good, "--flow", good}, "used twice"},
		{"negative duration", []string{"--flow", good, "--duration", "-1s"}, "negative --duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := AgentMain(tc.args, &stdout, &stderr); code != 2 {
				t.Fatalf("exit %d, want 2 (stderr %q)", code, stderr.String())
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") || !strings.Contains(msg, tc.want) {
				t.Errorf("stderr %q: want one line containing %q", msg, tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
	if _, err := os.Stat(dir + "/a.jsonl"); err == nil {
		t.Error("a rejected command line created an events file")
	}
}

// TestAgentMainFlows runs two flows in-process against servers of the test,
// with a shared --start-at, to completion.
func TestAgentMainFlows(t *testing.T) {
	hln, tln := listen(t), listen(t)
	serve(t, ServeHTTP, hln)
	serve(t, ServeTCPEcho, tln)
	dir := t.TempDir()
	start := time.Now().Add(200 * time.Millisecond)
	args := []string{
		"--flow", fmt.Sprintf("id=web,target=%s,profile=http-newconn,qps=40,timeout=300ms,events=%s/web.jsonl", hln.Addr(), dir),
		"--flow", fmt.Sprintf("id=db,target=%s,profile=tcp-stream,qps=40,threads=3,events=%s/db.jsonl", tln.Addr(), dir),
		"--start-at", fmt.Sprint(start.UnixNano()),
		"--duration", "500ms",
	}
	var stdout, stderr bytes.Buffer
	if code := AgentMain(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	end := time.Now()
	if end.Before(start.Add(500 * time.Millisecond)) {
		t.Errorf("agent returned %v before the end of the flows", start.Add(500*time.Millisecond).Sub(end))
	}
	for _, id := range []string{"web", "db"} {
		ev := readEvents(t, dir+"/"+id+".jsonl")
		if len(ev) < 18 || len(ev) > 22 {
			t.Errorf("%s: %d events, want about 20", id, len(ev))
		}
		for _, e := range ev {
			if !e.OK() || e.Start < start.UnixNano() {
				t.Errorf("%s: event %+v: want ok requests after --start-at", id, e)
				break
			}
		}
		if !strings.Contains(stdout.String(), fmt.Sprintf("flow %s: requests=%d ok=%d failed=0", id, len(ev), len(ev))) {
			t.Errorf("%s: stdout %q lacks the flow's stats", id, stdout.String())
		}
	}
	if !strings.Contains(stdout.String(), "threads=3") {
		t.Errorf("threads=3 not honoured: %q", stdout.String())
	}
}

// startAgent runs the agent in a child process (this test binary, see
// TestMain) and returns it with a channel of its stdout lines.
func startAgent(t *testing.T, args ...string) (*exec.Cmd, <-chan string, *bytes.Buffer) {
	t.Helper()
	a, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), agentArgsEnv+"="+string(a))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, lines, &stderr
}

func waitLine(t *testing.T, lines <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("agent output ended before %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q line from the agent within 5s", prefix)
		}
	}
}

// waitEvents waits until the file holds at least n events.
func waitEvents(t *testing.T, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, _ := events.ReadFile(path)
		if len(ev) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d events after 5s, want %d", path, len(ev), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentProcessSignals runs real agent processes serving and measuring at
// once, and stops them the two ways a scenario does: SIGTERM (clean stop,
// exit 0, stats printed) and SIGKILL (node crash: the events written so far
// must be intact).
func TestAgentProcessSignals(t *testing.T) {
	target := listen(t)
	serve(t, ServeHTTP, target)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			path := t.TempDir() + "/events.jsonl"
			cmd, lines, stderr := startAgent(t,
				"--http-listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0",
				"--flow", fmt.Sprintf("id=f,target=%s,profile=http-keepalive,qps=100,events=%s", target.Addr(), path),
				"--duration", "1m")
			// The agent's own HTTP server answers fortio echo requests.
			l := waitLine(t, lines, "agent: http echo server listening on ")
			addr := strings.TrimPrefix(l, "agent: http echo server listening on ")
			resp, err := http.Get("http://" + addr + "/echo?size=5")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || len(body) != 5 {
				t.Errorf("agent's http server: %s, %d bytes", resp.Status, len(body))
			}
			waitLine(t, lines, "agent: tcp echo server listening on ")

			waitEvents(t, path, 20)
			sent := time.Now()
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			var stats string
			if sig == syscall.SIGTERM {
				stats = waitLine(t, lines, "agent: flow f: ")
			}
			err = cmd.Wait()
			took := time.Since(sent)
			ev := readEvents(t, path) // fails on a malformed line
			if sig == syscall.SIGKILL {
				if len(ev) < 20 {
					t.Errorf("%d events after SIGKILL, had at least 20 before", len(ev))
				}
				return
			}
			if err != nil {
				t.Fatalf("agent exit after SIGTERM: %v; stderr %q", err, stderr.String())
			}
			if took > 2*time.Second {
				t.Errorf("agent took %v to stop after SIGTERM", took)
			}
			want := fmt.Sprintf("agent: flow f: requests=%d ok=%d failed=0 ", len(ev), len(ev))
			if !strings.HasPrefix(stats, want) {
				t.Errorf("stats line %q, want prefix %q (the file has %d events)", stats, want, len(ev))
			}
		})
	}
}
