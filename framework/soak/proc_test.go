package soak

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// ReadProc sees descriptors a process opens and memory it touches.
func TestReadProcSelf(t *testing.T) {
	before, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before.FDs < 3 || before.RSSBytes <= 0 || before.Threads < 1 {
		t.Fatalf("implausible %+v", before)
	}
	const n = 50
	var files []*os.File
	for range n {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	after, err := ReadProc(os.Getpid())
	runtime.KeepAlive(buf)
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	// The runtime may open or close a descriptor of its own meanwhile.
	if d := after.FDs - before.FDs; d < n-2 || d > n+5 {
		t.Errorf("fds %d -> %d after opening %d files", before.FDs, after.FDs, n)
	}
	if d := after.RSSBytes - before.RSSBytes; d < 48<<20 {
		t.Errorf("RSS grew by %d MiB after touching 64 MiB", d>>20)
	}
}

// ReadProc reads another process (as the soak reads the proxies): a child
// shell holding extra descriptors.
func TestReadProcChild(t *testing.T) {
	// The shell opens descriptors 3..9 on /dev/null, then waits for stdin.
	cmd := exec.Command("sh", "-c", "exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null 7</dev/null 8</dev/null 9</dev/null; read x")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("no sh: %v", err)
	}
	defer func() { in.Close(); cmd.Wait() }()
	var st ProcStats
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) { // until the shell has run its exec line
		if st, err = ReadProc(cmd.Process.Pid); err == nil && st.FDs >= 10 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if st.FDs < 10 || st.RSSBytes <= 0 {
		t.Fatalf("child %d: %+v; want ≥ 10 fds (0..9) and some RSS", cmd.Process.Pid, st)
	}
}

func TestReadProcGone(t *testing.T) {
	if _, err := ReadProc(0); err == nil {
		t.Error("pid 0: want an error")
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	if _, err := ReadProc(cmd.Process.Pid); err == nil {
		t.Errorf("exited pid %s: want an error", strconv.Itoa(cmd.Process.Pid))
	}
}
