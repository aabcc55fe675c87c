package localk8s

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/internal/procfs"
)

const (
	killTimeout         = 20 * time.Second
	cgroupRemoveTimeout = 10 * time.Second
)

// Down tears down the cluster in dir: it kills every process of it, removes
// the network namespaces, veths, bridge and cgroups, restores the host
// settings Up changed and deletes the cluster's files (the image cache in
// <dir>/cache stays). It works from the state file alone, whether or not
// the process that ran Up is alive, and does nothing if no cluster is up.
// It fails, listing them, if anything is left.
func Down(dir string) error { return DownLogf(dir, nil) }

// DownLogf is Down printing progress through logf.
func DownLogf(dir string, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return down(dir, logf, false)
}

func down(dir string, logf func(string, ...any), keepLogs bool) error {
	if os.Geteuid() != 0 {
		return ErrNotRoot
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	l := layout{dir: dir}
	sf, err := loadState(l.state())
	if errors.Is(err, errNoCluster) {
		logf("no cluster in %s: nothing to tear down", dir)
		return nil
	}
	if err != nil {
		return err
	}
	s := sf.get()
	t0 := time.Now()

	logf("killing the cluster's processes")
	netnsInodes := map[uint64]bool{}
	for _, n := range s.Nodes {
		var st syscall.Stat_t
		if syscall.Stat(n.netnsPath(), &st) == nil {
			netnsInodes[st.Ino] = true
		}
	}
	deadline := time.Now().Add(killTimeout)
	for {
		left := clusterProcs(s, dir, netnsInodes)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("local-k8s down: processes still alive %s after SIGKILL: %s", killTimeout, describePids(left))
		}
		for _, pid := range left {
			(proc{Pid: pid}).kill()
		}
		time.Sleep(100 * time.Millisecond)
	}

	var errs []error
	logf("removing network namespaces, veths and bridge %s", s.Bridge)
	for _, m := range s.Mounts {
		if err := unmountAndRemove(m); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range s.Nodes {
		if err := deleteNetns(n.Netns); err != nil {
			errs = append(errs, err)
		}
		if err := deleteLink(n.HostVeth); err != nil {
			errs = append(errs, fmt.Errorf("veth %s: %w", n.HostVeth, err))
		}
	}
	if s.Bridge != "" {
		if err := deleteLink(s.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: %w", s.Bridge, err))
		}
	}
	// Children (node cgroups and whatever runc made below them) first.
	// A killed multi-threaded process leaves its cgroup only when its
	// last thread has exited, a moment after its main thread shows as a
	// zombie: retry while the kernel finishes.
	cgDeadline := time.Now().Add(cgroupRemoveTimeout)
	for {
		var cgErrs []error
		for i := len(s.Cgroups) - 1; i >= 0; i-- {
			if err := removeCgroupTree(s.Cgroups[i]); err != nil {
				cgErrs = append(cgErrs, err)
			}
		}
		if len(cgErrs) == 0 {
			break
		}
		if time.Now().After(cgDeadline) {
			errs = append(errs, cgErrs...)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for p, v := range s.Sysctls {
		if err := writeSysctl(p, v); err != nil {
			errs = append(errs, err)
		}
	}
	if s.ForwardPolicy != "" {
		if out, err := exec.Command("iptables", "-P", "FORWARD", s.ForwardPolicy).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("iptables -P FORWARD %s: %v: %s", s.ForwardPolicy, err, strings.TrimSpace(string(out))))
		}
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = oneline.Fold(e.Error(), 300)
		}
		return fmt.Errorf("local-k8s down: %s", strings.Join(msgs, "; "))
	}
	if left := leftovers(s, dir); len(left) > 0 {
		return fmt.Errorf("local-k8s down: left behind: %s", strings.Join(left, "; "))
	}

	logf("removing the cluster's files")
	subs := []string{"pki", "kubeconfigs", "etcd", "kubeconfig"}
	if !keepLogs {
		subs = append(subs, "logs", "nodes")
	} else {
		// Keep what explains a failed Up: the logs, and each node's.
		for _, n := range s.Nodes {
			_ = os.RemoveAll(filepath.Join(l.node(n.Name), nodeVarLib))
		}
	}
	for _, sub := range subs {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return fmt.Errorf("local-k8s down: %w", err)
		}
	}
	if err := os.Remove(l.state()); err != nil {
		return err
	}
	logf("down in %s", time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// clusterProcs lists every live process of the cluster: the recorded ones,
// everything in the nodes' cgroups and PID namespaces or network
// namespaces, and, for a process started but not yet recorded when Up was
// killed, anything whose command line names the cluster directory.
func clusterProcs(s state, dir string, netnsInodes map[uint64]bool) []int {
	// Whoever runs down (a shell, make, a test) may name the directory on
	// its command line too; it is not the cluster's.
	ancestors := map[int]bool{}
	for pid := os.Getppid(); pid > 1 && !ancestors[pid]; pid = parentOf(pid) {
		ancestors[pid] = true
	}
	seen := map[int]bool{}
	var out []int
	add := func(pid int) {
		if pid > 0 && pid != os.Getpid() && !seen[pid] && pidAlive(pid) {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	for _, p := range s.Procs {
		if p.alive() {
			add(p.Pid)
		}
	}
	for _, n := range s.Nodes {
		if n.Init.alive() {
			add(n.Init.Pid)
		}
		for _, pid := range nodeProcs(n) {
			add(pid)
		}
	}
	for _, pid := range allPids() {
		if ino, err := nsInode(pid, "net"); err == nil && netnsInodes[ino] {
			add(pid)
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && strings.Contains(string(b), dir+"/") &&
			startedByUp(pid, dir, b) && !ancestors[pid] {
			add(pid)
		}
	}
	return out
}

func describePids(pids []int) string {
	var s []string
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		s = append(s, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(b))))
	}
	return strings.Join(s, ", ")
}

// leftovers checks that nothing of the cluster remains on the host:
// processes, mounts, links, network namespaces, cgroups.
func leftovers(s state, dir string) []string {
	var left []string
	if pids := clusterProcs(s, dir, nil); len(pids) > 0 {
		left = append(left, "processes "+describePids(pids))
	}
	if f, err := os.Open("/proc/self/mounts"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 {
				continue
			}
			mp := fields[1]
			if strings.HasPrefix(mp, dir+"/") {
				left = append(left, "mount "+mp)
			}
			for _, m := range s.Mounts {
				if mp == m {
					left = append(left, "mount "+mp)
				}
			}
		}
		f.Close()
	}
	names := []string{s.Bridge}
	for _, n := range s.Nodes {
		names = append(names, n.HostVeth)
		if _, err := os.Stat(n.netnsPath()); err == nil {
			left = append(left, "netns "+n.Netns)
		}
	}
	for _, name := range names {
		if name == "" {
			continue
		}
		if _, err := netlink.LinkByName(name); err == nil {
			left = append(left, "link "+name)
		}
	}
	for _, cg := range s.Cgroups {
		if _, err := os.Stat(cg); err == nil {
			left = append(left, "cgroup "+cg)
		}
	}
	return left
}

// upPrograms are the programs Up starts (the node init renames
// itself lk-node-init).
var upPrograms = map[string]bool{
	"etcd": true, "kube-apiserver": true, "kube-controller-manager": true, "kube-scheduler": true,
	"kubelet": true, "kube-proxy": true, "containerd": true, "containerd-shim-runc-v2": true, "lk-node-init": true,
}

// startedByUp says whether a process that names the cluster directory is
// one Up started: it runs in that directory (the control plane does) or is
// one of the cluster's programs. A user's editor, tail or shell that names
// a file in the directory is neither, and is left alone.
func startedByUp(pid int, dir string, cmdline []byte) bool {
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && cwd == dir {
		return true
	}
	argv0, _, _ := strings.Cut(string(cmdline), "\x00")
	if upPrograms[filepath.Base(argv0)] {
		return true
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && upPrograms[strings.TrimSpace(string(comm))]
}

// parentOf is a process's parent pid, 0 if unknown.
func parentOf(pid int) int {
	s, err := procfs.Stat(pid)
	if err != nil {
		return 0
	}
	return s.PPid
}
