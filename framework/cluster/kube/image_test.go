package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
	kindexec "sigs.k8s.io/kind/pkg/exec"
)

// fakeNode is a kind node whose commands are answered by the test: kind's
// real loader (nodeutils.LoadImageArchive) runs against it without Docker.
type fakeNode struct {
	name string
	// run answers one command: its argv, stdin, and where stdout goes.
	run func(ctx context.Context, argv []string, stdin io.Reader, stdout io.Writer) error

	mu    sync.Mutex
	calls [][]string
	ctxs  []context.Context
}

func (n *fakeNode) String() string              { return n.name }
func (n *fakeNode) Role() (string, error)       { return "worker", nil }
func (n *fakeNode) IP() (string, string, error) { return "172.18.0.2", "", nil }
func (n *fakeNode) SerialLogs(io.Writer) error  { return nil }
func (n *fakeNode) Command(name string, args ...string) kindexec.Cmd {
	// The loader must only ever run context-bound commands: a plain one
	// would escape the deadline.
	panic(fmt.Sprintf("%s: Command(%s) without a context", n.name, name))
}
func (n *fakeNode) CommandContext(ctx context.Context, name string, args ...string) kindexec.Cmd {
	n.mu.Lock()
	n.calls = append(n.calls, append([]string{name}, args...))
	n.ctxs = append(n.ctxs, ctx)
	n.mu.Unlock()
	return &fakeCmd{n: n, ctx: ctx, argv: append([]string{name}, args...)}
}

type fakeCmd struct {
	n      *fakeNode
	ctx    context.Context
	argv   []string
	stdin  io.Reader
	stdout io.Writer
}

func (c *fakeCmd) Run() error                         { return c.n.run(c.ctx, c.argv, c.stdin, c.stdout) }
func (c *fakeCmd) SetEnv(...string) kindexec.Cmd      { return c }
func (c *fakeCmd) SetStdin(r io.Reader) kindexec.Cmd  { c.stdin = r; return c }
func (c *fakeCmd) SetStdout(w io.Writer) kindexec.Cmd { c.stdout = w; return c }
func (c *fakeCmd) SetStderr(io.Writer) kindexec.Cmd   { return c }
func (c *fakeCmd) String() string                     { return strings.Join(c.argv, " ") }
func (n *fakeNode) commands() [][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.calls)
}
func (n *fakeNode) contexts() []context.Context {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.ctxs)
}
func newNode(name string, ctr func(context.Context, []byte) error) *fakeNode {
	return &fakeNode{name: name, run: func(ctx context.Context, argv []string, stdin io.Reader, stdout io.Writer) error {
		switch argv[0] {
		case "containerd": // kind reads the snapshotter from the config
			if stdout != nil {
				io.WriteString(stdout, "version = 3\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'overlayfs'\n")
			}
			return nil
		case "ctr":
			var b []byte
			if stdin != nil {
				b, _ = io.ReadAll(stdin)
			}
			return ctr(ctx, b)
		}
		return fmt.Errorf("unexpected command %v", argv)
	}}
}

func testArchive(t *testing.T) (string, []byte) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.tar")
	b := []byte("not really a tarball, but the loader only streams it")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

// Every node gets kind's own import command with the archive on stdin, in
// order, with a progress line before and after, and under a deadline.
func TestLoadIntoEveryNodeWithKindsLoader(t *testing.T) {
	archive, content := testArchive(t)
	var got [][]byte
	ok := func(_ context.Context, b []byte) error { got = append(got, b); return nil }
	a, b := newNode("blastradius-worker", ok), newNode("blastradius-worker2", ok)
	var logs []string
	logf := func(f string, x ...any) { logs = append(logs, fmt.Sprintf(f, x...)) }
	if err := loadIntoNodes(context.Background(), []nodes.Node{a, b}, archive, logf, nodeutils.LoadImageArchive); err != nil {
		t.Fatal(err)
	}
	want := []string{"ctr", "--namespace=k8s.io", "images", "import", "--all-platforms", "--digests", "--snapshotter=overlayfs", "-"}
	for _, n := range []*fakeNode{a, b} {
		cmds := n.commands()
		if len(cmds) != 2 || !slices.Equal(cmds[1], want) {
			t.Errorf("%s ran %q, want the snapshotter lookup then %q", n, cmds, want)
		}
		for _, ctx := range n.contexts() {
			if _, ok := ctx.Deadline(); !ok {
				t.Errorf("%s: a command ran without a deadline", n)
			}
		}
	}
	if len(got) != 2 || !bytes.Equal(got[0], content) || !bytes.Equal(got[1], content) {
		t.Errorf("ctr read %q, want the archive twice", got)
	}
	if len(logs) != 4 || !strings.Contains(logs[0], "blastradius-worker (1/2)") || !strings.Contains(logs[3], "loaded into node blastradius-worker2") {
		t.Errorf("progress lines %q", logs)
	}
}

// The first node that fails stops the load, and the one-line error names it
// with ctr's own last line (which kind keeps out of its error message).
func TestLoadErrorNamesTheNode(t *testing.T) {
	archive, _ := testArchive(t)
	ok := func(context.Context, []byte) error { return nil }
	bad := func(context.Context, []byte) error {
		return &kindexec.RunError{Command: []string{"ctr", "images", "import"},
			Output: []byte("unpacking...\nctr: failed to ingest: no space left on device\n"), Inner: errors.New("exit status 1")}
	}
	a, b, c := newNode("w1", ok), newNode("w2", bad), newNode("w3", ok)
	err := loadIntoNodes(context.Background(), []nodes.Node{a, b, c}, archive, nil, nodeutils.LoadImageArchive)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.Contains(msg, "into node w2:") || !strings.Contains(msg, "no space left on device") || strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line naming w2 and ctr's reason", msg)
	}
	if len(c.commands()) != 0 {
		t.Errorf("w3 was loaded after w2 failed")
	}
}

// A node that hangs is given up at the deadline, and its command's context
// is what ends it.
func TestLoadHonoursTheDeadline(t *testing.T) {
	archive, _ := testArchive(t)
	hang := func(ctx context.Context, _ []byte) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return errors.New("the deadline did not reach the command")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := loadIntoNodes(ctx, []nodes.Node{newNode("w1", hang)}, archive, nil, nodeutils.LoadImageArchive)
	if err == nil || !strings.Contains(err.Error(), "node w1") || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v: want the deadline, naming w1", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestLoadBadArchive(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.tar")
	os.WriteFile(empty, nil, 0o644)
	for path, want := range map[string]string{
		filepath.Join(dir, "missing.tar"): "does not exist (make images writes it)",
		empty:                             "is empty",
		dir:                               "not a regular file",
		"":                                "no path given",
	} {
		// The archive is checked before the provider is asked for nodes.
		err := LoadImageIntoKind(context.Background(), nil, "blastradius", path, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", path, err, want)
		}
		err = ImportImageWithCtr(context.Background(), "ctr", "/run/containerd/containerd.sock", path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ctr %q: got %v, want %q", path, err, want)
		}
	}
}

func TestImportWithCtrCommandLine(t *testing.T) {
	archive, _ := testArchive(t)
	old := runCtr
	t.Cleanup(func() { runCtr = old })
	var gotName string
	var gotArgs []string
	var hadDeadline bool
	runCtr = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		gotName, gotArgs = name, args
		_, hadDeadline = ctx.Deadline()
		return []byte("unpacking docker.io/library/blastradius:dev...done\n"), nil
	}
	if err := ImportImageWithCtr(context.Background(), "", "/run/containerd/containerd.sock", archive); err != nil {
		t.Fatal(err)
	}
	want := []string{"--address", "/run/containerd/containerd.sock", "-n", "k8s.io", "images", "import", archive}
	if gotName != "ctr" || !slices.Equal(gotArgs, want) {
		t.Errorf("ran %s %q, want ctr %q", gotName, gotArgs, want)
	}
	if !hadDeadline {
		t.Error("ctr ran without a deadline")
	}

	runCtr = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		return []byte("ctr: failed to dial \"/run/k.sock\":\n  context deadline exceeded\n\n"), errors.New("exit status 1")
	}
	err := ImportImageWithCtr(context.Background(), "/usr/bin/ctr", "/run/k.sock", archive)
	if err == nil || strings.Contains(err.Error(), "\n") ||
		!strings.HasPrefix(err.Error(), "/usr/bin/ctr --address /run/k.sock -n k8s.io images import "+archive+": exit status 1: context deadline exceeded") {
		t.Errorf("error %q: want one line with the command, the exit and ctr's last line", err)
	}

	if err := ImportImageWithCtr(context.Background(), "ctr", "", archive); err == nil || !strings.Contains(err.Error(), "no containerd address") {
		t.Errorf("empty address: %v", err)
	}
}

// Through a real process: a stand-in ctr that fails, and one that hangs past
// the deadline.
func TestImportWithCtrRealProcess(t *testing.T) {
	archive, _ := testArchive(t)
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fail := script("ctr-fail", `echo "ctr: got $*" >&2; exit 3`)
	err := ImportImageWithCtr(context.Background(), fail, "/x.sock", archive)
	if err == nil || !strings.Contains(err.Error(), "exit status 3: ctr: got --address /x.sock -n k8s.io images import "+archive) {
		t.Errorf("error %v", err)
	}
	hang := script("ctr-hang", `exec sleep 30`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = ImportImageWithCtr(ctx, hang, "/x.sock", archive)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if err := ImportImageWithCtr(context.Background(), filepath.Join(dir, "no-ctr"), "/x.sock", archive); err == nil || !strings.Contains(err.Error(), "no-ctr") {
		t.Errorf("missing binary: %v", err)
	}
}
