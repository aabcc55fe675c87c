package load

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"fortio.org/log"

	"blastradius.dev/blastradius/framework/events"
)

// agentArgsEnv makes the test binary act as `blastradius agent`: the agent
// tests re-execute it so that signals (SIGTERM, SIGKILL) hit a real, separate
// agent process and not the test runner.
const agentArgsEnv = "BLASTRADIUS_TEST_AGENT_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(agentArgsEnv); a != "" {
		var args []string
		if err := json.Unmarshal([]byte(a), &args); err != nil {
			panic(err)
		}
		os.Exit(AgentMain(args, os.Stdout, os.Stderr))
	}
	log.SetLogLevelQuiet(log.Warning) // fortio's per-thread info lines
	os.Exit(m.Run())
}

// listen opens a listener on a free loopback port, closed at cleanup.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// serve runs fn(ctx, ln) in the background. The returned stop cancels it and
// waits for it to return, failing the test if it returned an error; it is
// also registered for cleanup (stopping twice is fine).
func serve(t *testing.T, fn func(context.Context, net.Listener) error, ln net.Listener) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx, ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("server returned %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("server did not stop within 5s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// countingListener counts accepted connections and keeps them, so a test can
// cut them from the server side.
type countingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *countingListener) accepted() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *countingListener) closeConns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
}

// newWriter creates an event file in the test's temp dir.
func newWriter(t *testing.T, name string) (*events.Writer, string) {
	t.Helper()
	path := t.TempDir() + "/" + name
	w, err := events.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w, path
}

func readEvents(t *testing.T, path string) []events.Event {
	t.Helper()
	ev, err := events.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
