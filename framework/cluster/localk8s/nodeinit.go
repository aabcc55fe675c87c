package localk8s

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A node's init is this executable started again with nodeInitEnv set:
// any binary that links this package and calls RunNodeInit first thing
// (the blastradius CLI's main, this package's TestMain) can be a node init,
// so Restart works from whichever process holds the Cluster and no helper
// binary has to be installed.
//
// It runs in two stages. The first moves into the node's cgroups and
// unshares the cgroup namespace; namespaces belong to threads, so it locks
// itself to its thread and re-executes itself from it: execve keeps the
// calling thread's namespaces and drops every other thread, and the second
// stage starts with the whole process, and all it forks, inside the new
// namespace.

// RunNodeInit makes this process a node init when a Cluster started it as
// one (nodeInitEnv is set), and never returns then; otherwise it returns at
// once. Call it before anything else in main or TestMain.
func RunNodeInit() {
	p := os.Getenv(nodeInitEnv)
	if p == "" {
		return
	}
	runtime.LockOSThread()
	if os.Getenv(nodeInitStageEnv) == "" {
		os.Exit(nodeInitStage1(p))
	}
	os.Exit(nodeInit(p))
}

const nodeInitStageEnv = "BLASTRADIUS_LOCALK8S_NODE_INIT_STAGE"

// nodeInitStage1 puts the node in a cgroup namespace rooted at its own
// cgroup. containerd puts every container at /k8s.io/<id> of the cgroup
// tree it sees (the kubelet names no parent without QoS cgroups): inside
// the namespace that is below the node's cgroup, so a node's containers
// are accounted to it and Down finds their cgroups under it.
func nodeInitStage1(specFile string) int {
	b, err := os.ReadFile(specFile)
	if err != nil {
		nlogf("node init: %v", err)
		return 1
	}
	var s nodeSpec
	if err := json.Unmarshal(b, &s); err != nil {
		nlogf("node init: %s: %v", specFile, err)
		return 1
	}
	if err := joinCgroups(s.Cgroups); err != nil {
		nlogf("node init: cgroups: %v", err)
		return 1
	}
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		nlogf("node init: cgroup namespace: %v", err)
		return 1
	}
	env := append(os.Environ(), nodeInitStageEnv+"=2")
	err = syscall.Exec("/proc/self/exe", os.Args, env)
	nlogf("node init: re-exec: %v", err)
	return 1
}

// Node init deadlines.
const (
	containerdStartTimeout = 30 * time.Second
	imageImportTimeout     = 60 * time.Second
	stopGrace              = 10 * time.Second
)

// service is one long-running node component, restarted when it exits (as
// a node's service manager would).
type service struct {
	name    string
	argv    []string
	pid     int
	started time.Time
	wait    time.Duration // restart backoff
}

func nlogf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// nodeInit runs as PID 1 of the node's PID namespace, in its own mount
// namespace, inside the node's network namespace. When it dies, for any
// reason, the kernel kills every process of the namespace: containerd, the
// shims, the containers, the kubelet, kube-proxy.
func nodeInit(specFile string) int {
	os.Unsetenv(nodeInitEnv)
	os.Unsetenv(nodeInitStageEnv)
	b, err := os.ReadFile(specFile)
	if err != nil {
		nlogf("node init: %v", err)
		return 1
	}
	var s nodeSpec
	if err := json.Unmarshal(b, &s); err != nil {
		nlogf("node init: %s: %v", specFile, err)
		return 1
	}
	// "exe" (from /proc/self/exe) would say nothing in ps or top.
	_ = os.WriteFile("/proc/self/comm", []byte("lk-node-init"), 0o644)
	nlogf("node init %s: pid %d", s.Name, os.Getpid())
	if err := nodeMounts(s); err != nil {
		nlogf("node init: mounts: %v", err)
		return 1
	}
	for p, v := range map[string]string{
		"/proc/sys/net/ipv4/ip_forward": "1",
		// Service traffic between two pods of one bridge must pass
		// kube-proxy's rules.
		"/proc/sys/net/bridge/bridge-nf-call-iptables": "1",
	} {
		if err := writeSysctl(p, v); err != nil {
			nlogf("node init: %s: %v", p, err)
		}
	}
	env := []string{"PATH=" + nodeComponentsPath, "HOME=/root", "TMPDIR=" + nodeTmpDir}

	var mu sync.Mutex
	byPid := map[int]*service{}
	start := func(sv *service) error {
		lf, err := os.OpenFile(filepath.Join("/var/log", sv.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer lf.Close()
		null, err := os.Open(os.DevNull)
		if err != nil {
			return err
		}
		defer null.Close()
		// Held across the fork: the reaper must not see the pid exit
		// before it is known as this service's.
		mu.Lock()
		pid, err := syscall.ForkExec(sv.argv[0], sv.argv, &syscall.ProcAttr{
			Dir:   "/",
			Env:   env,
			Files: []uintptr{null.Fd(), lf.Fd(), lf.Fd()},
		})
		if err == nil {
			sv.pid, sv.started = pid, time.Now()
			byPid[pid] = sv
		}
		mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s: %w", sv.name, err)
		}
		nlogf("started %s: pid %d", sv.name, pid)
		return nil
	}

	containerd := &service{name: "containerd", argv: []string{s.Bins.Containerd, "--config", containerdConfig}}
	if err := start(containerd); err != nil {
		nlogf("node init: %v", err)
		return 1
	}
	if err := waitSocket(containerdSocket, containerdStartTimeout); err != nil {
		nlogf("node init: containerd: %v (see /var/log/containerd.log)", err)
		return 1
	}
	// Importing an image containerd has is quick and idempotent: do it on
	// every start rather than track whether this node has it.
	t0 := time.Now()
	ictx, cancel := context.WithTimeout(context.Background(), imageImportTimeout)
	imp := exec.CommandContext(ictx, s.Bins.Ctr, "--address", containerdSocket, "--namespace", "k8s.io", "images", "import", s.PauseTar)
	imp.Env = env
	out, err := imp.CombinedOutput()
	cancel()
	if err != nil {
		nlogf("node init: import pause image: %v: %s", err, strings.TrimSpace(string(out)))
		return 1
	}
	nlogf("pause image imported in %s", time.Since(t0).Round(time.Millisecond))

	services := []*service{
		containerd,
		{name: "kubelet", argv: []string{s.Bins.Kubelet,
			"--config=" + kubeletConfig,
			"--kubeconfig=" + kubeletKubeconfig,
			"--hostname-override=" + s.Name,
			"--node-ip=" + s.IP,
			"--v=1"}},
		{name: "kube-proxy", argv: []string{s.Bins.KubeProxy, "--config=" + kubeProxyConfig, "--v=1"}},
	}
	for _, sv := range services[1:] {
		if err := start(sv); err != nil {
			nlogf("node init: %v", err)
			return 1
		}
	}

	// From here on the init only waits: hand back what start-up took
	// (the binary's package initialization is most of it).
	debug.FreeOSMemory()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	exited := make(chan *service, 16)
	go func() {
		// PID 1 reaps every process of the namespace: services, and shims
		// orphaned by their double fork.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, 0, nil)
			if err == syscall.ECHILD {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if err != nil {
				continue
			}
			mu.Lock()
			sv := byPid[pid]
			delete(byPid, pid)
			mu.Unlock()
			if sv != nil {
				nlogf("%s (pid %d) exited: %s", sv.name, pid, waitString(ws))
				exited <- sv
			}
		}
	}()
	var stopping atomic.Bool
	for {
		select {
		case sig := <-sigs:
			if stopping.Load() {
				continue
			}
			stopping.Store(true)
			nlogf("%s: stopping the node", sig)
			mu.Lock()
			for pid := range byPid {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
			mu.Unlock()
			time.AfterFunc(stopGrace, func() { os.Exit(0) })
		case sv := <-exited:
			if stopping.Load() {
				mu.Lock()
				n := len(byPid)
				mu.Unlock()
				if n == 0 {
					return 0
				}
				continue
			}
			sv.wait = min(max(2*sv.wait, time.Second), 30*time.Second)
			if time.Since(sv.started) > time.Minute {
				sv.wait = time.Second // it ran fine for a while: start over
			}
			go func(sv *service) {
				time.Sleep(sv.wait)
				if stopping.Load() {
					return
				}
				if err := start(sv); err != nil {
					nlogf("restart %s: %v", sv.name, err)
				}
			}(sv)
		}
	}
}

func waitString(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "signal " + ws.Signal().String()
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

func waitSocket(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket %s after %s: %v", path, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nodeMounts gives the node its own view of the machine. Mounts made here
// never reach the host (the tree is made private first) and disappear
// with the namespace when the node's last process dies: container root
// file systems, volume mounts and pod network namespace handles included.
func nodeMounts(s nodeSpec) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	// The PID namespace is new: /proc must show it, or runc and the
	// kubelet would see the host's processes.
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
		return fmt.Errorf("mount /run: %w", err)
	}
	if err := mountCgroups(); err != nil {
		return err
	}
	for _, m := range []struct{ from, to string }{
		{filepath.Join(s.Dir, nodeVarLib), "/var/lib"},
		{filepath.Join(s.Dir, nodeVarLog), "/var/log"},
	} {
		if err := unix.Mount(m.from, m.to, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", m.from, m.to, err)
		}
	}
	// Shared again, but now among this node's mounts only (the private step
	// above cut every peer link to the host), as a real node's root is:
	// the kubelet and containerd refuse HostToContainer propagation (the
	// node agent's view of /var/run/netns) from a private mount.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make / shared: %w", err)
	}
	return nil
}

// joinCgroups moves this process (and so everything it starts) into the
// node's cgroups, one per hierarchy.
func joinCgroups(dirs []string) error {
	pid := []byte(strconv.Itoa(os.Getpid()))
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), pid, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// cgroupMount is one cgroup hierarchy as mounted on the host.
type cgroupMount struct{ point, fstype, opts string }

// mountCgroups mounts every cgroup hierarchy again inside the node's
// cgroup namespace, as the host has them: mounted from inside, a hierarchy's
// root is the namespace's root, the node's cgroup. The host's mounts would
// show (and let runc write to) the whole host tree.
func mountCgroups() error {
	var mounts []cgroupMount
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl != "-" || i+3 >= len(fields) || len(fields) < 5 {
				continue
			}
			if t := fields[i+1]; t == "cgroup" || t == "cgroup2" {
				var opts []string
				for _, o := range strings.Split(fields[i+3], ",") {
					if o != "rw" && o != "ro" {
						opts = append(opts, o)
					}
				}
				mounts = append(mounts, cgroupMount{fields[4], t, strings.Join(opts, ",")})
			}
			break
		}
	}
	f.Close()
	if err := sc.Err(); err != nil {
		return err
	}
	const root = "/sys/fs/cgroup"
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if len(mounts) == 1 && mounts[0].point == root {
		// A unified (v2 only) host: one hierarchy at the root.
		return unix.Mount("cgroup2", root, "cgroup2", flags, mounts[0].opts)
	}
	// Hybrid or v1: a tmpfs of hierarchies (and the symlinks between
	// them, such as cpu,cpuacct), rebuilt over the host's.
	links := map[string]string{}
	if ents, err := os.ReadDir(root); err == nil {
		for _, e := range ents {
			if e.Type()&os.ModeSymlink != 0 {
				if t, err := os.Readlink(filepath.Join(root, e.Name())); err == nil {
					links[e.Name()] = t
				}
			}
		}
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", flags, "mode=755"); err != nil {
		return fmt.Errorf("mount %s: %w", root, err)
	}
	for _, m := range mounts {
		if !strings.HasPrefix(m.point, root+"/") {
			continue
		}
		if err := os.MkdirAll(m.point, 0o555); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.point, m.fstype, flags, m.opts); err != nil {
			return fmt.Errorf("mount %s (%s %s): %w", m.point, m.fstype, m.opts, err)
		}
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			return err
		}
	}
	return removeStaleCgroups(mounts)
}

// removeStaleCgroups removes the cgroups a crash left below the node's
// (the containers of its previous run: nobody was left to delete them),
// as a reboot would. The kubelet's cAdvisor otherwise tries to adopt each,
// seconds apiece, before the node can be Ready.
func removeStaleCgroups(mounts []cgroupMount) error {
	n := 0
	for _, m := range mounts {
		ents, err := os.ReadDir(m.point)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				if err := removeCgroupTree(filepath.Join(m.point, e.Name())); err != nil {
					return err
				}
				n++
			}
		}
	}
	if n > 0 {
		nlogf("removed %d stale cgroup trees of the previous run", n)
	}
	return nil
}
