package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// ProcSpec is a process a pod runs, like a container.
type ProcSpec struct {
	Name string
	Args []string // arguments to the cluster binary
	Env  []string // extra environment
	// ProbePort, when set, is a TCP port the process must accept on before it
	// counts as ready (a readiness probe).
	ProbePort int
	// ProbePath, when set, makes the probe an HTTP GET of that path on
	// ProbePort that must answer 200 (a process can listen before it is ready).
	ProbePath string
	// RunOnce: a clean exit (status 0) is final, like a Job's pod; only a
	// failure is restarted. Load clients that finish their schedule use it.
	RunOnce bool
}

// Process is one supervised process. Its supervisor restarts it with back-off
// when it exits, unless its node is down.
type Process struct {
	Spec ProcSpec
	pod  *Pod

	mu      sync.Mutex
	cmd     *exec.Cmd
	running bool
	exited  chan struct{}
	ready   bool
	// reported is readiness as last reported by the node's supervisor: what
	// the rest of the cluster believes. It freezes when the node dies.
	reported bool
	restarts int
	backoff  time.Duration
	nextTry  time.Time
	lastErr  error
}

// Ready reports the last probe result (true without a probe once started).
func (p *Process) Ready() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.ready }

// Restarts counts restarts after the first start.
func (p *Process) Restarts() int { p.mu.Lock(); defer p.mu.Unlock(); return p.restarts }

// Start adds a supervised process to a pod and starts it now. It does not wait
// for readiness (see WaitReady).
func (c *Cluster) Start(pod string, spec ProcSpec) (*Process, error) {
	p, ok := c.pods[pod]
	if !ok {
		return nil, fmt.Errorf("start %s: no pod %s", spec.Name, pod)
	}
	pr := &Process{Spec: spec, pod: p}
	// Launch before the supervisor can see it: a tick in between would take
	// the not-yet-running process for a dead one and start a second copy.
	if err := c.launch(pr); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", spec.Name, pod, err)
	}
	p.Node.mu.Lock()
	p.procs = append(p.procs, pr)
	p.Node.mu.Unlock()
	return pr, nil
}

func (c *Cluster) launch(pr *Process) error {
	cmd := exec.Command(c.cfg.Binary, pr.Spec.Args...)
	cmd.Env = append(os.Environ(), pr.Spec.Env...)
	// If the runner dies, its children die with it even before the PID
	// namespace is torn down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if f, err := c.logFile(pr.pod.Name, pr.Spec.Name); err != nil {
		return err
	} else if f != nil {
		cmd.Stdout, cmd.Stderr = f, f
		defer f.Close() // the child holds its own copy
	}
	// A child forked from a thread inside the pod's namespace starts there.
	if err := netnsx.Do(pr.pod.fd, cmd.Start); err != nil {
		return err
	}
	done := make(chan struct{})
	pr.mu.Lock()
	pr.cmd, pr.running, pr.exited = cmd, true, done
	pr.ready = pr.Spec.ProbePort == 0
	pr.mu.Unlock()
	go func() {
		err := cmd.Wait()
		pr.mu.Lock()
		pr.running, pr.ready, pr.lastErr = false, false, err
		if err == nil && pr.Spec.RunOnce {
			pr.nextTry = time.Now().Add(parkedFor) // completed
		}
		pr.mu.Unlock()
		close(done)
	}()
	return nil
}

func (pr *Process) kill() {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.running && pr.cmd.Process != nil {
		_ = pr.cmd.Process.Kill()
	}
}

// Kill SIGKILLs the process: a crash. The supervisor restarts it with back-off.
func (pr *Process) Kill() { pr.kill() }

// Pid is the process's current PID (in the sandbox's PID namespace), 0 when
// it is not running.
func (pr *Process) Pid() int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if !pr.running || pr.cmd.Process == nil {
		return 0
	}
	return pr.cmd.Process.Pid
}

// Resume lets the supervisor start a process that Stop stopped.
func (pr *Process) Resume() {
	pr.mu.Lock()
	pr.nextTry, pr.backoff = time.Time{}, 0
	pr.mu.Unlock()
}

// Running reports whether the process is alive.
func (pr *Process) Running() bool { pr.mu.Lock(); defer pr.mu.Unlock(); return pr.running }

// Signal sends sig to the process if it runs.
func (pr *Process) Signal(sig syscall.Signal) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.running && pr.cmd.Process != nil {
		_ = pr.cmd.Process.Signal(sig)
	}
}

func (pr *Process) waitExit(d time.Duration) bool {
	pr.mu.Lock()
	ch := pr.exited
	pr.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// Stop asks the process to end (SIGTERM), waits up to grace, then kills it.
// The supervisor will not restart it.
func (c *Cluster) Stop(pr *Process, grace time.Duration) {
	pr.mu.Lock()
	pr.nextTry = time.Now().Add(parkedFor)
	pr.mu.Unlock()
	pr.Signal(syscall.SIGTERM)
	if !pr.waitExit(grace) {
		pr.kill()
		pr.waitExit(grace)
	}
}

// supervise is a node's kubelet: heartbeats, readiness probes and restarts
// with exponential back-off. A crashed node's supervisor does nothing at all,
// so the rest of the cluster sees its last state go stale, as with a real node.
func (c *Cluster) supervise(ctx context.Context, n *Node) {
	defer c.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.mu.Lock()
		if n.crashed {
			n.mu.Unlock()
			continue
		}
		n.beat = time.Now()
		var procs []*Process
		for _, p := range n.pods {
			procs = append(procs, p.procs...)
		}
		n.mu.Unlock()
		for _, pr := range procs {
			c.tend(pr)
		}
	}
}

func (c *Cluster) tend(pr *Process) {
	defer func() {
		pr.mu.Lock()
		pr.reported = pr.ready
		pr.mu.Unlock()
	}()
	pr.mu.Lock()
	running, wantProbe, ready := pr.running, pr.Spec.ProbePort != 0, pr.ready
	due := !running && time.Now().After(pr.nextTry)
	pr.mu.Unlock()
	if due {
		pr.mu.Lock()
		if pr.backoff == 0 {
			pr.backoff = 100 * time.Millisecond
		} else if pr.backoff < 5*time.Second {
			pr.backoff *= 2
		}
		pr.nextTry = time.Now().Add(pr.backoff)
		pr.restarts++
		pr.mu.Unlock()
		if err := c.launch(pr); err != nil {
			c.cfg.Logf("restart %s/%s: %v", pr.pod.Name, pr.Spec.Name, err)
		}
		return
	}
	if running && wantProbe && !ready {
		addr := net.JoinHostPort(pr.pod.IP.String(), strconv.Itoa(pr.Spec.ProbePort))
		if probe(addr, pr.Spec.ProbePath) {
			pr.mu.Lock()
			pr.ready = true
			pr.backoff = 0
			pr.mu.Unlock()
		}
	}
}

var probeClient = &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}

// probe is a readiness check: a TCP connect, or an HTTP GET answering 200.
func probe(addr, path string) bool {
	if path == "" {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	resp, err := probeClient.Get("http://" + addr + path)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitProcessReady waits until one process is ready.
func (c *Cluster) WaitProcessReady(ctx context.Context, pr *Process) error {
	for !pr.Ready() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/%s not ready: %w", pr.pod.Name, pr.Spec.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// WaitReady waits until every probed process in the cluster is ready.
func (c *Cluster) WaitReady(ctx context.Context) error {
	for {
		var notReady []string
		for _, p := range c.Pods() {
			for _, pr := range p.procs {
				if !pr.Ready() {
					notReady = append(notReady, p.Name+"/"+pr.Spec.Name)
				}
			}
		}
		if len(notReady) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes not ready: %v: %w", notReady, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// parkedFor is how far Stop (and a completed RunOnce) pushes a process's next
// start: never, in practice.
const parkedFor = 100 * 365 * 24 * time.Hour

// parked reports whether the process was stopped for good (Stop, or a RunOnce
// that completed): no longer part of what its pod runs. pr.mu is held.
func (pr *Process) parked() bool {
	return !pr.running && time.Until(pr.nextTry) > parkedFor/2
}

// RestartPod replaces a pod's processes the way deleting a pod and having its
// controller recreate it does, keeping the pod's IP and network namespace:
// every process gets SIGTERM (Stop with grace, then SIGKILL), and once the
// last one has exited all of them are started again with the same specs.
// While they are not ready the pod is not a service endpoint (syncEndpoints
// needs every process ready), as with a new pod that has not passed its
// probes. Processes that were stopped for good before the call (Stop, a
// RunOnce that completed, the old proxy of a graceful restart) stay stopped:
// they are not part of the pod any more.
//
// stopped is when the last process had exited; ready is when all of them were
// ready again. It returns early with an error if ctx ends first. The Process
// values stay the same (so references held elsewhere still work); a process
// has a new PID after it, and its restart count is not increased (this is not
// a crash restart).
func (c *Cluster) RestartPod(ctx context.Context, pod string, grace time.Duration) (stopped, ready time.Time, err error) {
	p, ok := c.pods[pod]
	if !ok {
		return time.Time{}, time.Time{}, fmt.Errorf("restart pod: no pod %q", pod)
	}
	if p.Node.Crashed() {
		return time.Time{}, time.Time{}, fmt.Errorf("restart pod %s: %s is down", pod, p.Node.Name)
	}
	if grace < 0 {
		return time.Time{}, time.Time{}, fmt.Errorf("restart pod %s: negative grace %v", pod, grace)
	}
	var procs []*Process
	for _, pr := range p.Processes() {
		pr.mu.Lock()
		live := !pr.parked()
		pr.mu.Unlock()
		if live {
			procs = append(procs, pr)
		}
	}
	if len(procs) == 0 {
		return time.Time{}, time.Time{}, fmt.Errorf("restart pod %s: no processes to restart", pod)
	}
	// In parallel, as the kubelet stops a pod's containers: the pod takes
	// the longest grace, not the sum.
	var wg sync.WaitGroup
	for _, pr := range procs {
		wg.Go(func() { c.Stop(pr, grace) })
	}
	wg.Wait()
	stopped = time.Now()
	for _, pr := range procs {
		if pr.Running() {
			// Survived SIGKILL for twice the grace: a process in
			// uninterruptible sleep. Starting a second copy would be worse.
			return stopped, time.Time{}, fmt.Errorf("restart pod %s: %s did not exit", pod, pr.Spec.Name)
		}
	}
	if p.Node.Crashed() {
		return stopped, time.Time{}, fmt.Errorf("restart pod %s: %s went down meanwhile", pod, p.Node.Name)
	}
	var errs []error
	for _, pr := range procs {
		// Launch while the process is still parked, so the supervisor
		// cannot start a copy of its own in between; then unpark it so a
		// later crash is restarted as usual.
		if err := c.launch(pr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", pr.Spec.Name, err))
		}
		pr.mu.Lock()
		pr.nextTry, pr.backoff = time.Time{}, 0
		pr.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		// The supervisor retries the ones that failed to launch.
		return stopped, time.Time{}, fmt.Errorf("restart pod %s: %w", pod, err)
	}
	for _, pr := range procs {
		if err := c.WaitProcessReady(ctx, pr); err != nil {
			return stopped, time.Time{}, fmt.Errorf("restart pod %s: %w", pod, err)
		}
	}
	return stopped, time.Now(), nil
}
