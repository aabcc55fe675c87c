package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"blastradius.dev/blastradius/framework/cluster/netns"
)

// Stray processes.
//
// The cluster's supervisor can launch a second copy of a process that
// Cluster.Start is starting: Start makes the process visible to the node's
// supervisor before it has launched it, and a supervisor tick in between
// sees a process that is "not running" and launches it too. Cluster.Start
// then launches its own copy and keeps only that one: the other one is a
// stray nobody tracks, stops or kills. Two load agents double the load and
// write to the same events file; two sidecars split the connections, so half
// the proxy CPU goes unaccounted. The bench cannot fix the supervisor (not
// its package), so it looks for strays where they would corrupt a number,
// measures the mode again on a fresh cluster when it finds one, and kills
// every stray it knows of at teardown.

// errStray marks a measurement spoiled by a stray process: worth retrying.
var errStray = errors.New("stray duplicate process")

// procIdentity is what a process is: its network namespace (its pod) and its
// command line. Two live processes with one identity are a duplicate launch.
func procIdentity(pid int) (string, bool) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return "", false
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(cmd) == 0 {
		return "", false
	}
	return ns + " " + string(bytes.ReplaceAll(bytes.TrimRight(cmd, "\x00"), []byte{0}, []byte{' '})), true
}

// strayWatch remembers the identity of every process the cluster has run,
// so that a duplicate is recognised even after the original was stopped.
type strayWatch struct {
	cl    *netns.Cluster
	known map[string]string // identity -> pod/process
}

func newStrayWatch(cl *netns.Cluster) *strayWatch {
	return &strayWatch{cl: cl, known: map[string]string{}}
}

// observe records the running cluster processes and returns their pids.
func (w *strayWatch) observe() map[int]bool {
	pids := map[int]bool{}
	for _, p := range w.cl.Pods() {
		for _, pr := range p.Processes() {
			pid := pr.Pid()
			if pid <= 0 {
				continue
			}
			pids[pid] = true
			if id, ok := procIdentity(pid); ok {
				w.known[id] = p.Name + "/" + pr.Spec.Name
			}
		}
	}
	return pids
}

// find lists the live processes that have the identity of a cluster process
// but are not one the cluster runs now, with the name they duplicate.
func (w *strayWatch) find(tracked map[int]bool) map[int]string {
	strays := map[int]string{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return strays
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || tracked[pid] {
			continue
		}
		id, ok := procIdentity(pid)
		if !ok {
			continue
		}
		if name, known := w.known[id]; known {
			strays[pid] = name
		}
	}
	return strays
}

// check returns an errStray naming the duplicates of cluster processes now
// running, after killing them, or nil when there are none.
func (w *strayWatch) check() error {
	strays := w.find(w.observe())
	if len(strays) == 0 {
		return nil
	}
	killStrays(strays)
	var what []string
	for pid, name := range strays {
		what = append(what, fmt.Sprintf("%s (pid %d)", name, pid))
	}
	sort.Strings(what)
	return fmt.Errorf("%w: found a second copy of %s, which the cluster does not track (its supervisor can launch one while Cluster.Start launches the process); killed it",
		errStray, strings.Join(what, ", "))
}

// afterDown kills what is left of the cluster's processes once it is down
// (call observe before Down): anything alive with a known identity.
func (w *strayWatch) afterDown() int {
	strays := w.find(nil)
	killStrays(strays)
	return len(strays)
}

// killStrays SIGKILLs the given processes, each by its pid.
func killStrays(strays map[int]string) {
	for pid := range strays {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
