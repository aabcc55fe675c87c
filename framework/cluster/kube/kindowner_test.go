package kube

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"blastradius.dev/blastradius/framework/cluster"

	"blastradius.dev/blastradius/internal/procfs"
)

// fakeDocker puts a docker on PATH that knows the kind clusters in a state
// file ("<container> <cluster>" lines) and answers what kind's list and
// delete ask (ps with the cluster label filter, rm -f -v); everything else
// fails, as a create without a real engine would. It returns the state
// file and the command log.
func fakeDocker(t *testing.T, containers ...string) (state, log string) {
	t.Helper()
	dir := t.TempDir()
	state, log = filepath.Join(dir, "containers"), filepath.Join(dir, "log")
	if err := os.WriteFile(state, []byte(strings.Join(containers, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `#!/bin/sh
echo "$*" >> "` + log + `"
c="` + state + `"
case "$1" in
ps)
	filter=""
	for a in "$@"; do
		case "$a" in label=io.x-k8s.kind.cluster=*) filter="${a#label=io.x-k8s.kind.cluster=}";; esac
	done
	if [ -n "$filter" ]; then awk -v c="$filter" '$2==c {print $1}' "$c"; else awk 'NF==2 {print $2}' "$c" | sort -u; fi ;;
rm)
	shift
	for n in "$@"; do
		case "$n" in -*) ;; *) grep -v "^$n " "$c" > "$c.new"; mv "$c.new" "$c";; esac
	done ;;
*)
	echo "fake docker: $1 is not supported" >&2; exit 1 ;;
esac
`
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	t.Setenv("KIND_EXPERIMENTAL_PROVIDER", "docker")
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	return state, log
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// deadPid is the pid of a process that has exited and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func writeOwner(t *testing.T, o KindOwner) {
	t.Helper()
	p, err := kindOwnerPath(o.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(o)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The next run deletes the cluster a killed run left (its owner record
// names a dead process) and goes on to create its own; it leaves alone a
// cluster whose run is alive, and one nobody recorded.
func TestKindLeftoverOfAKilledRunIsDeletedByTheNextRun(t *testing.T) {
	cfg, err := cluster.LoadKindConfig("../../../kind-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	name := KindName(cfg)
	nodes := []string{name + "-control-plane " + name, name + "-worker " + name, name + "-worker2 " + name, "other-control-plane other"}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")

	t.Run("no owner record: refused", func(t *testing.T) {
		state, log := fakeDocker(t, nodes...)
		_, err := CreateKind(context.Background(), KindOptions{Config: cfg, Kubeconfig: kubeconfig})
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("got %v", err)
		}
		if strings.Contains(read(t, log), "rm ") || !strings.Contains(read(t, state), name+"-worker ") {
			t.Fatalf("a cluster nobody recorded was touched:\n%s", read(t, log))
		}
	})

	t.Run("owner alive: refused", func(t *testing.T) {
		state, log := fakeDocker(t, nodes...)
		self, err := procfs.Stat(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		start := self.Start
		writeOwner(t, KindOwner{Cluster: name, Pid: os.Getpid(), PidStart: start, Kubeconfig: kubeconfig})
		_, err = CreateKind(context.Background(), KindOptions{Config: cfg, Kubeconfig: kubeconfig})
		if err == nil || !strings.Contains(err.Error(), "in use by a running blastradius (pid ") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("got %v", err)
		}
		if strings.Contains(read(t, log), "rm ") || !strings.Contains(read(t, state), name+"-worker ") {
			t.Fatalf("a running run's cluster was touched:\n%s", read(t, log))
		}
		if err := DeleteKind(name, nil); err == nil || !strings.Contains(err.Error(), "in use by a running blastradius") {
			t.Fatalf("cluster down of a running run's cluster: %v", err)
		}
	})

	t.Run("owner dead: deleted, then created anew", func(t *testing.T) {
		state, log := fakeDocker(t, nodes...)
		// Same pid number, another start time: a reused pid is not the owner.
		self, _ := procfs.Stat(os.Getpid())
		start := self.Start
		for _, o := range []KindOwner{{Pid: deadPid(t)}, {Pid: os.Getpid(), PidStart: start + 1}} {
			o.Cluster, o.Kubeconfig = name, kubeconfig
			writeOwner(t, o)
			if err := os.WriteFile(state, []byte(strings.Join(nodes, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var lines []string
			logf := func(f string, a ...any) { mu.Lock(); lines = append(lines, f); mu.Unlock() }
			_, err := CreateKind(context.Background(), KindOptions{Config: cfg, Kubeconfig: kubeconfig, CreateTimeout: time.Minute, Logf: logf})
			// The fake engine cannot create: what matters is that the
			// create was attempted after the leftover went.
			if err == nil || !strings.Contains(err.Error(), "kind: create cluster") {
				t.Fatalf("pid %d: got %v", o.Pid, err)
			}
			if !strings.Contains(strings.Join(lines, "\n"), "left behind by a run that was killed") {
				t.Errorf("pid %d: no log line about the leftover: %q", o.Pid, lines)
			}
			if !strings.Contains(read(t, log), "rm -f -v "+name+"-") {
				t.Errorf("pid %d: leftover not deleted:\n%s", o.Pid, read(t, log))
			}
			if left := read(t, state); strings.Contains(left, name+"-") || !strings.Contains(left, "other-control-plane") {
				t.Errorf("pid %d: containers after: %q (only the other cluster's should remain)", o.Pid, left)
			}
		}
	})

	t.Run("cluster down", func(t *testing.T) {
		state, log := fakeDocker(t, nodes...)
		writeOwner(t, KindOwner{Cluster: name, Pid: deadPid(t), Kubeconfig: filepath.Join(t.TempDir(), "gone", "kubeconfig")})
		if err := DeleteKind(name, nil); err != nil {
			t.Fatal(err)
		}
		if left := read(t, state); strings.Contains(left, name+"-") || !strings.Contains(read(t, log), "rm -f -v") {
			t.Fatalf("containers after cluster down: %q\n%s", left, read(t, log))
		}
		if o, _, err := ReadKindOwner(name); err != nil || o != nil {
			t.Fatalf("owner record after cluster down: %v %v", o, err)
		}
		// Nothing left: not an error.
		if err := DeleteKind(name, nil); err != nil {
			t.Fatalf("second cluster down: %v", err)
		}
	})
}
