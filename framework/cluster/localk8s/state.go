package localk8s

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"blastradius.dev/blastradius/internal/atomicjson"
	"blastradius.dev/blastradius/internal/procfs"
)

// state is everything a cluster has created on the host, saved in
// <dir>/state.json. Resources are recorded before they are created
// (names are fixed up front), processes right after they start, so a Down
// after a SIGKILLed Up finds all of it; Down ignores what does not exist.
type state struct {
	Version int       `json:"version"`
	Dir     string    `json:"dir"`
	Created time.Time `json:"created"`
	// Bridge is the host bridge every node's veth is attached to.
	Bridge string `json:"bridge"`
	// Nodes: each has a named network namespace (a bind mount under
	// /run/netns), a host veth and a node init process.
	Nodes []nodeState `json:"nodes"`
	// Mounts are the host mounts Up makes: each node's network namespace
	// handle. Every other mount of a node is made inside its private mount
	// namespace and goes with it.
	Mounts []string `json:"mounts"`
	// Procs are the control plane's host processes.
	Procs []proc `json:"procs"`
	// Cgroups are cgroup directories Up created, parents first; Down
	// removes them children first.
	Cgroups []string `json:"cgroups"`
	// Sysctls are host settings Up changed, with the values to restore.
	Sysctls map[string]string `json:"sysctls"`
	// ForwardPolicy is the host's iptables FORWARD policy before Up set
	// it to ACCEPT ("" when Up did not change it).
	ForwardPolicy string `json:"forward_policy,omitempty"`
}

const stateVersion = 1

type nodeState struct {
	Name     string `json:"name"`
	Index    int    `json:"index"`
	IP       string `json:"ip"`
	PodCIDR  string `json:"pod_cidr"`
	Netns    string `json:"netns"`     // name under /run/netns
	HostVeth string `json:"host_veth"` // host side; the node side is eth0
	Init     proc   `json:"init"`      // pid 0 while the node is down
	// PidNS is the node init's PID namespace (inode of /proc/<pid>/ns/pid).
	PidNS uint64 `json:"pid_ns,omitempty"`
}

// netnsPath is the bind mount holding a node's network namespace.
func (n nodeState) netnsPath() string { return "/run/netns/" + n.Netns }

// proc identifies one process across pid reuse: a pid alone could name
// an unrelated process after a reboot or a long time.
type proc struct {
	Name  string `json:"name"`
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"` // start time in clock ticks since boot (/proc/<pid>/stat field 22)
}

func newProc(name string, pid int) proc {
	s, _ := procfs.Stat(pid)
	return proc{Name: name, Pid: pid, Start: s.Start}
}

// alive says whether the recorded process still runs (a zombie does not).
func (p proc) alive() bool { return procfs.Alive(p.Pid, p.Start) }

// kill SIGKILLs the process if it is still the recorded one.
func (p proc) kill() {
	if p.alive() {
		_ = syscall.Kill(p.Pid, syscall.SIGKILL)
	}
}

// stateFile saves the state after every change; safe for concurrent use.
type stateFile struct {
	mu   sync.Mutex
	path string
	s    state
}

func (f *stateFile) update(change func(s *state)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(&f.s)
	return f.saveLocked()
}

func (f *stateFile) saveLocked() error {
	return atomicjson.WriteMode(f.path, f.s, 0o600)
}

func (f *stateFile) get() state {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.s
	s.Nodes = append([]nodeState(nil), f.s.Nodes...)
	s.Procs = append([]proc(nil), f.s.Procs...)
	return s
}

func (f *stateFile) node(name string) (nodeState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return nodeState{}, false
}

func (f *stateFile) setNode(n nodeState) error {
	return f.update(func(s *state) {
		for i := range s.Nodes {
			if s.Nodes[i].Name == n.Name {
				s.Nodes[i] = n
			}
		}
	})
}

var errNoCluster = errors.New("no local-k8s cluster")

func loadState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s (no %s)", errNoCluster, filepath.Dir(path), filepath.Base(path))
	}
	if err != nil {
		return nil, err
	}
	f := &stateFile{path: path}
	if err := json.Unmarshal(b, &f.s); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if f.s.Version != stateVersion {
		return nil, fmt.Errorf("%s: state version %d, this build reads %d", path, f.s.Version, stateVersion)
	}
	return f, nil
}
