package localk8s

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"blastradius.dev/blastradius/internal/procfs"
)

// cgroupBase is the cgroup (in every hierarchy) holding one cgroup per
// node. A node's processes all live in its cgroup, so its memory and CPU
// are accounted per node, and Down finds every one of them even if a state
// file entry was lost.
const cgroupBase = "blastradius-local-k8s"

// cgroupMounts lists the host's cgroup hierarchies (v1 controllers and the
// v2 unified tree).
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// mountinfo: ... mountpoint ... - fstype source options
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if t := fields[sep+1]; t == "cgroup" || t == "cgroup2" {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}

// makeNodeCgroups creates <hierarchy>/blastradius-local-k8s/<node> in every
// hierarchy, recording each directory before creating it.
func makeNodeCgroups(sf *stateFile, nodes []nodeState) (map[string][]string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	byNode := map[string][]string{}
	var all []string
	for _, m := range mounts {
		all = append(all, filepath.Join(m, cgroupBase))
		for _, n := range nodes {
			d := filepath.Join(m, cgroupBase, n.Name)
			all = append(all, d)
			byNode[n.Name] = append(byNode[n.Name], d)
		}
	}
	if err := sf.update(func(s *state) { s.Cgroups = all }); err != nil {
		return nil, err
	}
	for _, d := range all {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		// A v1 cpuset cgroup takes no process until it has CPUs and
		// memory nodes: give it its parent's.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if _, err := os.Stat(filepath.Join(d, f)); err != nil {
				continue
			}
			v, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Join(d, f), err)
			}
		}
	}
	return byNode, nil
}

// cgroupPids lists the threads in a cgroup and all its descendants: a
// killed process keeps its cgroup busy until its last thread is gone, a
// moment after its main thread already shows as a zombie.
func cgroupPids(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var b []byte
		for _, f := range []string{"tasks", "cgroup.threads", "cgroup.procs"} { // v1, v2
			if b, err = os.ReadFile(filepath.Join(p, f)); err == nil {
				break
			}
		}
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// removeCgroupTree removes a cgroup and every cgroup below it (runc's
// container cgroups of a crashed node are left behind), deepest first.
func removeCgroupTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// nsInode is the inode of a process's namespace of the given kind.
func nsInode(pid int, kind string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// nodeProcs lists the live processes of a node: those in its cgroups or
// in its init's PID namespace.
func nodeProcs(n nodeState) []int {
	seen := map[int]bool{}
	var out []int
	add := func(pid int) {
		if !seen[pid] && pidAlive(pid) {
			seen[pid] = true
			out = append(out, pid)
		}
	}
	mounts, _ := cgroupMounts()
	for _, m := range mounts {
		for _, pid := range cgroupPids(filepath.Join(m, cgroupBase, n.Name)) {
			add(pid)
		}
	}
	if n.PidNS != 0 {
		for _, pid := range allPids() {
			if ino, err := nsInode(pid, "pid"); err == nil && ino == n.PidNS {
				add(pid)
			}
		}
	}
	sort.Ints(out)
	return out
}

func pidAlive(pid int) bool {
	s, err := procfs.Stat(pid)
	return err == nil && s.State != 'Z' && s.State != 'X'
}

func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
