package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/xds"
)

// syncBuffer is written by Main's goroutines and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMainBadFlags(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "registry.json")
	cases := []struct {
		args  []string
		match string
	}{
		{[]string{"--no-such-flag"}, "not defined"},
		{[]string{}, "--registry is required"},
		{[]string{"--registry", reg, "stray"}, `unexpected argument "stray"`},
		{[]string{"--registry", reg, "--cert-ttl", "0s"}, "--cert-ttl"},
		{[]string{"--registry", reg, "--cert-ttl", "soon"}, "invalid value"},
		{[]string{"--registry", reg, "--trust-domain", "Not/Valid"}, "--trust-domain"},
		{[]string{"--registry", reg, "--listen", "15010"}, "--listen"},
		{[]string{"--registry", reg, "--admin", "nohostport"}, "--admin"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := Main(c.args, &stdout, &stderr)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", c.args, code)
		}
		lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], c.match) {
			t.Errorf("%v: stderr %q, want one line containing %q", c.args, stderr.String(), c.match)
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: stdout %q", c.args, stdout.String())
		}
	}
}

func writeRegistry(t *testing.T, path string, s xds.Snapshot) {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	// Write-then-rename like the harness should, so a poll never sees a
	// half-written file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func registrySnapshot(n int) xds.Snapshot {
	var s xds.Snapshot // no version, no trust domain: filled in by the control plane
	var uids []string
	for i := range n {
		uid := fmt.Sprintf("default/server-%d", i)
		uids = append(uids, uid)
		s.Workloads = append(s.Workloads, xds.Workload{
			UID: uid, Name: fmt.Sprintf("server-%d", i), Namespace: "default", ServiceAccount: "server",
			Node: "n1", IP: fmt.Sprintf("10.0.0.%d", i+1), Protocol: xds.ProtocolHBONE,
		})
	}
	s.Services = []xds.Service{{Name: "server", Namespace: "default", VIP: "10.96.0.10", Ports: []xds.Port{{Port: 80, TargetPort: 8080}}, Endpoints: uids}}
	return s
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMainServesRegistryAndFollowsChanges(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry.json")
	writeRegistry(t, reg, registrySnapshot(2))

	var stdout, stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- Main([]string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--registry", reg, "--cert-ttl", "10m"}, &stdout, &stderr)
	}()
	stopped := false
	defer func() {
		if !stopped { // do not leave Main running if the test fails early
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			<-exit
		}
		if t.Failed() || testing.Verbose() {
			t.Logf("stderr:\n%s", stderr.String())
		}
	}()

	addrRE := regexp.MustCompile(`xds=(\S+) admin=(\S+)`)
	var xdsAddr, adminAddr string
	eventually(t, "startup line", func() bool {
		select {
		case code := <-exit:
			stopped = true
			t.Fatalf("Main exited %d early: %s", code, stderr.String())
		default:
		}
		m := addrRE.FindStringSubmatch(stdout.String())
		if m == nil {
			return false
		}
		xdsAddr, adminAddr = m[1], m[2]
		return true
	})

	if code, body := httpGet(t, "http://"+adminAddr+"/ready"); code != 200 || !strings.Contains(body, "v1") {
		t.Fatalf("/ready = %d %q", code, body)
	}

	c, err := xds.NewClient(xdsAddr, "n1", xds.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = c.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()

	workloads := func() int {
		s, ok := c.Current()
		if !ok {
			return -1
		}
		return len(s.Workloads)
	}
	eventually(t, "initial registry", func() bool { return workloads() == 2 })
	if s, _ := c.Current(); s.Version != "v1" || s.TrustDomain != "cluster.local" {
		t.Fatalf("got %s in %q", s.Version, s.TrustDomain)
	}

	// The harness rewrites the registry: the proxy gets a new version.
	writeRegistry(t, reg, registrySnapshot(3))
	eventually(t, "changed registry", func() bool { return workloads() == 3 })
	if s, _ := c.Current(); s.Version != "v2" {
		t.Fatalf("version %s after the change, want v2", s.Version)
	}

	// A malformed file: one log line, previous snapshot kept.
	if err := os.WriteFile(reg, []byte(`{"workloads": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "malformed registry logged", func() bool { return strings.Contains(stderr.String(), "malformed") })
	time.Sleep(300 * time.Millisecond) // several polls
	if n := strings.Count(stderr.String(), "malformed"); n != 1 {
		t.Fatalf("malformed file logged %d times, want once:\n%s", n, stderr.String())
	}
	if workloads() != 3 {
		t.Fatal("snapshot lost after a malformed registry")
	}

	// Unknown fields are typos, not silently ignored.
	if err := os.WriteFile(reg, []byte(`{"workloadz": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unknown field logged", func() bool { return strings.Contains(stderr.String(), "workloadz") })

	// Fixed file: a new version again.
	writeRegistry(t, reg, registrySnapshot(1))
	eventually(t, "registry fixed", func() bool { return workloads() == 1 })

	// The admin dump shows the node and what it ACKed.
	eventually(t, "status shows the ACK", func() bool {
		_, body := httpGet(t, "http://"+adminAddr+"/debug/status")
		var st struct {
			Version string                    `json:"version"`
			Nodes   map[string]xds.NodeStatus `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("/debug/status: %v: %s", err, body)
		}
		n := st.Nodes["n1"]
		return st.Version == "v3" && n.AckedVersion == "v3" && n.Connected
	})
	if code, body := httpGet(t, "http://"+adminAddr+"/debug/snapshot"); code != 200 || !strings.Contains(body, `"default/server-0"`) {
		t.Fatalf("/debug/snapshot = %d %q", code, body)
	}

	// Certificates are served too.
	id := xds.SpiffeID("cluster.local", "default", "server")
	if _, err := c.Sign(context.Background(), mustCSR(t, id), id); err != nil {
		t.Fatal(err)
	}

	// SIGTERM: graceful stop, exit 0, although a stream is open.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exit:
		stopped = true
		if code != 0 {
			t.Fatalf("exit %d after SIGTERM", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Main did not stop after SIGTERM")
	}
	eventually(t, "client notices the control plane left", func() bool { return !c.Connected() })
	if workloads() != 1 {
		t.Fatal("client lost its snapshot when the control plane stopped")
	}
}

func TestMainWithoutRegistryFileIsNotReady(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "missing.json")
	var stdout, stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- Main([]string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--registry", reg, "--ca-dir", filepath.Join(dir, "ca")}, &stdout, &stderr)
	}()
	addrRE := regexp.MustCompile(`admin=(\S+)`)
	var adminAddr string
	eventually(t, "startup line", func() bool {
		m := addrRE.FindStringSubmatch(stdout.String())
		if m != nil {
			adminAddr = m[1]
		}
		return m != nil
	})
	if code, _ := httpGet(t, "http://"+adminAddr+"/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready = %d without a registry, want 503", code)
	}
	writeRegistry(t, reg, registrySnapshot(1))
	eventually(t, "ready once the registry appears", func() bool {
		code, _ := httpGet(t, "http://"+adminAddr+"/ready")
		return code == 200
	})
	_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if code := <-exit; code != 0 {
		t.Fatalf("exit %d", code)
	}
	if n := strings.Count(stderr.String(), "no such file"); n != 1 {
		t.Errorf("missing registry logged %d times, want once:\n%s", n, stderr.String())
	}
	// The CA root was persisted for the next start.
	for _, f := range []string{"root-cert.pem", "root-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, "ca", f)); err != nil {
			t.Error(err)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "ca", "root-key.pem"))
	if err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("root key mode %v, want 0600", fi.Mode().Perm())
	}
	// And is reused: the second start with the same dir keeps the root.
	before, _ := os.ReadFile(filepath.Join(dir, "ca", "root-cert.pem"))
	a, err := loadCA(filepath.Join(dir, "ca"), "cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.RootPEM(), before) {
		t.Error("root changed on reload")
	}
}
func mustCSR(t *testing.T, id string) []byte {
	t.Helper()
	csr, _, err := ca.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}
