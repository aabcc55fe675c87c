package kubetest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// children lists the processes whose parent is pid and whose executable is
// in dir: the etcd and kube-apiserver a Server started.
func children(t *testing.T, pid int, dir string) map[int]string {
	t.Helper()
	out := map[int]string{}
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		st, err := os.ReadFile(filepath.Join(p, "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		exe, err := os.Readlink(filepath.Join(p, "exe"))
		if err != nil || filepath.Dir(exe) != dir {
			continue
		}
		n, _ := strconv.Atoi(filepath.Base(p))
		out[n] = filepath.Base(exe)
	}
	return out
}

func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; only its parent's wait is missing.
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// A started server answers, runs exactly etcd and kube-apiserver under this
// process, and Stop leaves neither running.
func TestStartServesAndStopLeavesNothing(t *testing.T) {
	s := Start(t)
	t.Logf("started in %s", s.StartTook.Round(time.Millisecond))
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != Version {
		t.Errorf("API server version %s, want %s (the ldflags of tools/k8s/build.sh)", v.GitVersion, Version)
	}
	if _, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	kids := children(t, os.Getpid(), s.Assets)
	names := map[string]bool{}
	for _, n := range kids {
		names[n] = true
	}
	if len(kids) != 2 || !names["etcd"] || !names["kube-apiserver"] {
		t.Fatalf("processes started: %v, want etcd and kube-apiserver", kids)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	for pid, n := range kids {
		if alive(pid) {
			t.Errorf("%s (pid %d) still running after Stop", n, pid)
		}
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// A test binary that dies without stopping its server (a panic, go test's
// -timeout) takes etcd and the API server with it: they are started with a
// parent-death signal, not left to run on.
func TestServerDiesWithTestBinary(t *testing.T) {
	if os.Getenv("KUBETEST_CRASH_CHILD") == "1" {
		s, err := start()
		if err != nil {
			fmt.Println("start:", err)
			os.Exit(3)
		}
		for pid := range children(t, os.Getpid(), s.Assets) {
			fmt.Println("pid", pid)
		}
		os.Exit(1) // no Stop, no cleanup
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is not on PATH: servers run without a parent-death signal")
	}
	if _, err := findAssets(); err != nil {
		missing(t, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestServerDiesWithTestBinary$", "-test.count=1")
	// The child's etcd data and certificates go where this test removes
	// them: the child cannot.
	cmd.Env = append(os.Environ(), "KUBETEST_CRASH_CHILD=1", "TMPDIR="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("child: %v\n%s", err, out.String())
	}
	var pids []int
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "pid "); ok {
			n, _ := strconv.Atoi(p)
			pids = append(pids, n)
		}
	}
	if len(pids) != 2 {
		t.Fatalf("child reported pids %v, want two\n%s", pids, out.String())
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			// Do not leave it behind for the next test run either.
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("pid %d outlived the test binary that started it", pid)
		}
	}
}
