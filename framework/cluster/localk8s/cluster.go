package localk8s

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"blastradius.dev/blastradius/internal/oneline"
)

// Cluster is a running local-k8s cluster, from Up or Open.
type Cluster struct {
	// Dir is the cluster directory; Kubeconfig the admin kubeconfig in it
	// (server https://127.0.0.1:6443).
	Dir        string
	Kubeconfig string
	// Nodes are the node names, sorted: lk-node-1 .. lk-node-N.
	Nodes []string

	l      layout
	sf     *stateFile
	logf   func(string, ...any)
	client kubernetes.Interface
}

// Deadlines of node operations.
const (
	crashTimeout = 15 * time.Second
	// controllersTimeout bounds the wait for the controller-manager's
	// first work after the nodes are Ready.
	controllersTimeout = time.Minute
	// progressEvery is how often a long wait says what it waits for.
	progressEvery = 10 * time.Second
	// imageLoadTimeout bounds one node's import of a local archive.
	imageLoadTimeout = 2 * time.Minute
)

// ErrNotRoot is Up's answer when not run as root.
var ErrNotRoot = errors.New("local-k8s needs root (it creates network namespaces, veths, mounts and runs containerd): run it as root")

// Up brings up a cluster in cfg.Dir and waits until every node is Ready.
// On error everything created so far is torn down.
func Up(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	t0 := time.Now()
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = DefaultNodes
	}
	if cfg.Nodes < 1 || cfg.Nodes > MaxNodes {
		return nil, fmt.Errorf("local-k8s: %d nodes: want 1..%d", cfg.Nodes, MaxNodes)
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if cfg.Dir == "" {
		return nil, errors.New("local-k8s: no cluster directory")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	// Nodes mount their own /var/lib, /var/log and /run over the host's:
	// a cluster directory below them would vanish from the nodes' view.
	for _, p := range []string{"/var/lib", "/var/log", "/run", "/var/run"} {
		if dir == p || strings.HasPrefix(dir, p+"/") {
			return nil, fmt.Errorf("local-k8s: cluster directory %s is under %s, which every node replaces with its own: choose another", dir, p)
		}
	}
	binDir, err := filepath.Abs(cfg.BinDir)
	if err != nil {
		return nil, err
	}
	bins, err := findBinaries(binDir)
	if err != nil {
		return nil, fmt.Errorf("local-k8s: %v", err)
	}
	l := layout{dir: dir}
	if _, err := os.Stat(l.state()); err == nil {
		return nil, fmt.Errorf("local-k8s: a cluster is already up in %s (%s exists): use it, or tear it down first (blastradius cluster down --provider local-k8s --dir %s)", dir, l.state(), cfg.Dir)
	}
	if err := checkPortFree(apiserverPort); err != nil {
		return nil, err
	}
	if err := checkPortFree(etcdPort); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// A fresh cluster: whatever an earlier one left (but the image cache).
	for _, sub := range []string{"pki", "kubeconfigs", "etcd", "logs", "nodes", "kubeconfig"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return nil, err
		}
	}

	var nodes []nodeState
	for i := 1; i <= cfg.Nodes; i++ {
		nodes = append(nodes, nodeState{
			Name: NodeName(i), Index: i, IP: nodeIP(i).String(), PodCIDR: podCIDR(i).String(),
			Netns: NodeName(i), HostVeth: fmt.Sprintf("%s%d", vethPrefix, i),
		})
	}
	var mounts []string
	for _, n := range nodes {
		mounts = append(mounts, n.netnsPath())
	}
	sf := &stateFile{path: l.state(), s: state{Version: stateVersion, Dir: dir, Created: time.Now().UTC(), Nodes: nodes, Mounts: mounts}}
	if err := sf.update(func(*state) {}); err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, Kubeconfig: l.Kubeconfig(), l: l, sf: sf, logf: logf}
	for _, n := range nodes {
		c.Nodes = append(c.Nodes, n.Name)
	}
	defer func() {
		if err != nil {
			logf("up failed: tearing down what was created (logs stay in %s and %s)", filepath.Dir(l.log("x")), filepath.Join(dir, "nodes", "*", nodeVarLog))
			if derr := down(dir, logf, true); derr != nil {
				logf("teardown: %v", derr)
			}
		}
	}()

	// The pause image builds while the control plane starts.
	type tarResult struct {
		path string
		err  error
	}
	pauseCh := make(chan tarResult, 1)
	go func() {
		p, err := pauseImageTar(ctx, l, logf)
		pauseCh <- tarResult{p, err}
	}()

	logf("certificates and kubeconfigs")
	if err := makePKI(l, nodes); err != nil {
		return nil, fmt.Errorf("local-k8s: %w", err)
	}
	logf("host network: bridge %s %s/24, %d network namespaces", bridgeName, bridgeIP, len(nodes))
	if err := setupHostNet(sf); err != nil {
		return nil, fmt.Errorf("local-k8s: %w", err)
	}
	for _, n := range nodes {
		if err := setupNodeNet(n, nodes); err != nil {
			return nil, fmt.Errorf("local-k8s: %s network: %w", n.Name, err)
		}
	}
	cgroups, err := makeNodeCgroups(sf, nodes)
	if err != nil {
		return nil, fmt.Errorf("local-k8s: cgroups: %w", err)
	}
	logf("control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler")
	if err := startControlPlane(ctx, sf, l, bins, logf); err != nil {
		return nil, fmt.Errorf("local-k8s: %w", err)
	}
	var pr tarResult
	select {
	case pr = <-pauseCh:
	default:
		// Its first build compiles the Go runtime: half a minute on two
		// cores with an empty build cache.
		logf("waiting for the pause image build (deadline %s)", pauseBuildTimeout)
		pr = <-pauseCh
	}
	if pr.err != nil {
		return nil, fmt.Errorf("local-k8s: pause image: %w", pr.err)
	}
	for _, n := range nodes {
		if err := writeNodeFiles(l, n, bins, pr.path, cgroups[n.Name]); err != nil {
			return nil, fmt.Errorf("local-k8s: %s files: %w", n.Name, err)
		}
	}
	if err := c.connect(); err != nil {
		return nil, err
	}
	logf("nodes: starting %s (containerd, kubelet, kube-proxy each)", strings.Join(c.Nodes, ", "))
	for _, n := range c.Nodes {
		if err := c.startNode(n); err != nil {
			return nil, fmt.Errorf("local-k8s: %s: %w", n, err)
		}
	}
	if err := c.WaitReady(ctx, c.Nodes, cfg.ReadyTimeout); err != nil {
		return nil, err
	}
	logf("nodes Ready (%s); waiting for the controller-manager's default ServiceAccount", time.Since(t0).Round(100*time.Millisecond))
	if err := c.waitControllers(ctx); err != nil {
		return nil, err
	}
	logf("up in %s: %d nodes Ready; kubeconfig %s", time.Since(t0).Round(100*time.Millisecond), len(c.Nodes), c.Kubeconfig)
	return c, nil
}

// waitControllers waits for the default ServiceAccount of the default
// namespace: the controller-manager creates it (in every namespace) and
// the apiserver admits no pod in a namespace without it, so a pod created
// right after Up would fail.
func (c *Cluster) waitControllers(ctx context.Context) error {
	deadline := time.Now().Add(controllersTimeout)
	for {
		_, err := c.client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("local-k8s: no default ServiceAccount after %s (%s; kube-controller-manager log: %s)", controllersTimeout, oneline.Fold(err.Error(), 300), lastLogLine(c.l.log("kube-controller-manager")))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func checkPortFree(port int) error {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return fmt.Errorf("local-k8s: port %d is in use (another apiserver or etcd?): %v", port, err)
	}
	return ln.Close()
}

// Open attaches to the cluster a (possibly other) process brought up in
// dir, for Crash, Restart, Partition and the like.
func Open(dir string, logf func(string, ...any)) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	l := layout{dir: dir}
	sf, err := loadState(l.state())
	if err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	c := &Cluster{Dir: dir, Kubeconfig: l.Kubeconfig(), l: l, sf: sf, logf: logf}
	for _, n := range sf.get().Nodes {
		c.Nodes = append(c.Nodes, n.Name)
	}
	sort.Strings(c.Nodes)
	return c, c.connect()
}

func (c *Cluster) connect() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("local-k8s: kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Timeout = 10 * time.Second
	c.client, err = kubernetes.NewForConfig(cfg)
	return err
}

// Client is a clientset for the admin kubeconfig.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// Down tears the cluster down (see the package function Down).
func (c *Cluster) Down() error { return down(c.Dir, c.logf, false) }

func (c *Cluster) node(name string) (nodeState, error) {
	n, ok := c.sf.node(name)
	if !ok {
		return n, fmt.Errorf("local-k8s: no node %q (nodes: %s)", name, strings.Join(c.Nodes, ", "))
	}
	return n, nil
}

// NodeIP is a node's InternalIP.
func (c *Cluster) NodeIP(name string) (string, error) {
	n, err := c.node(name)
	return n.IP, err
}

func (c *Cluster) startNode(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if n.Init.alive() {
		return fmt.Errorf("%s is running (init pid %d)", name, n.Init.Pid)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd, err := startNodeInit(c.l, n, self)
	if err != nil {
		return err
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	n.Init = newProc("node-init", pid)
	if ino, err := nsInode(pid, "pid"); err == nil {
		n.PidNS = ino
	}
	return c.sf.setNode(n)
}

// Crash kills every process of a node at once with SIGKILL, as a power
// loss would: its init, and with it (the kernel empties the PID namespace)
// containerd, the shims, every container, the kubelet and kube-proxy. The
// node's network namespace and its disk stay.
func (c *Cluster) Crash(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if !n.Init.alive() {
		return fmt.Errorf("local-k8s: %s is not running", name)
	}
	t0 := time.Now()
	n.Init.kill()
	deadline := time.Now().Add(crashTimeout)
	for n.Init.alive() || len(nodeProcs(n)) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("local-k8s: %s: processes still alive %s after SIGKILL: %v", name, crashTimeout, nodeProcs(n))
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.Init = proc{}
	n.PidNS = 0
	c.logf("%s crashed: every process gone in %s", name, time.Since(t0).Round(time.Millisecond))
	return c.sf.setNode(n)
}

// Restart starts a crashed node again: a fresh init, containerd, kubelet
// and kube-proxy on the node's disk, as after a reboot. It does not wait
// for Ready (WaitReady does).
func (c *Cluster) Restart(name string) error {
	if err := c.startNode(name); err != nil {
		return fmt.Errorf("local-k8s: restart %s: %w", name, err)
	}
	c.logf("%s restarted (its log: %s)", name, filepath.Join(c.l.node(name), nodeVarLog, "init.log"))
	return nil
}

// Partition cuts a node off the network (its host-side veth goes down):
// its processes keep running but reach neither the apiserver nor any other
// node. Heal undoes it.
func (c *Cluster) Partition(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	c.logf("%s partitioned (veth %s down)", name, n.HostVeth)
	return setPartitioned(n, true)
}

// Heal reconnects a partitioned node.
func (c *Cluster) Heal(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	c.logf("%s healed (veth %s up)", name, n.HostVeth)
	return setPartitioned(n, false)
}

// Running says whether a node's init runs.
func (c *Cluster) Running(name string) bool {
	n, err := c.node(name)
	return err == nil && n.Init.alive()
}

// NodeReady reports a node's Ready condition: "True", "False" or "Unknown"
// ("" if the node has not registered).
func (c *Cluster) NodeReady(ctx context.Context, name string) (string, error) {
	n, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	for _, cd := range n.Status.Conditions {
		if cd.Type == corev1.NodeReady {
			return string(cd.Status), nil
		}
	}
	return "", nil
}

// WaitReady waits until every named node has Ready=True. On timeout the
// error lists each pending node with its conditions (or that it never
// registered, with the last line of its kubelet log).
func (c *Cluster) WaitReady(ctx context.Context, names []string, timeout time.Duration) error {
	return c.waitCondition(ctx, names, "True", timeout)
}

// WaitNotReady waits until every named node's Ready condition is no longer
// True (False or Unknown): the node lifecycle controller has noticed.
func (c *Cluster) WaitNotReady(ctx context.Context, names []string, timeout time.Duration) error {
	return c.waitCondition(ctx, names, "not True", timeout)
}

func (c *Cluster) waitCondition(ctx context.Context, names []string, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	lastNote := time.Now()
	for {
		var pending []string
		list, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			have := map[string]*corev1.Node{}
			for i := range list.Items {
				have[list.Items[i].Name] = &list.Items[i]
			}
			for _, name := range names {
				n := have[name]
				status := ""
				if n != nil {
					for _, cd := range n.Status.Conditions {
						if cd.Type == corev1.NodeReady {
							status = string(cd.Status)
						}
					}
				}
				ok := status == "True"
				if want != "True" {
					ok = n != nil && status != "True"
				}
				if !ok {
					pending = append(pending, c.describeNode(name, n))
				}
			}
		} else {
			pending = []string{"list nodes: " + oneline.Fold(err.Error(), 300)}
		}
		if len(pending) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("local-k8s: nodes not Ready=%s after %s: %s", want, timeout, strings.Join(pending, "; "))
		}
		if time.Since(lastNote) >= progressEvery {
			lastNote = time.Now()
			c.logf("waiting for Ready=%s (%s of %s): %s", want, time.Since(deadline.Add(-timeout)).Round(time.Second), timeout, strings.Join(pending, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (c *Cluster) describeNode(name string, n *corev1.Node) string {
	if n == nil {
		logs := filepath.Join(c.l.node(name), nodeVarLog)
		if !c.Running(name) {
			return fmt.Sprintf("%s not registered, its init is not running (init log: %s)", name, lastLogLine(filepath.Join(logs, "init.log")))
		}
		return fmt.Sprintf("%s not registered (kubelet log: %s)", name, lastLogLine(filepath.Join(logs, "kubelet.log")))
	}
	var conds []string
	for _, cd := range n.Status.Conditions {
		s := fmt.Sprintf("%s=%s", cd.Type, cd.Status)
		if cd.Status != corev1.ConditionFalse || cd.Type == corev1.NodeReady {
			if cd.Reason != "" {
				s += " (" + cd.Reason + ": " + oneline.Fold(cd.Message, 300) + ")"
			}
		}
		conds = append(conds, s)
	}
	return name + ": " + strings.Join(conds, ", ")
}

// ContainerdAddress is the socket of a running node's containerd as the
// host reaches it, for ctr (kube.ImportImageWithCtr): the socket lives in
// the node's private /run and is reached through its init's root, which
// is seen in the node's mount namespace. It changes when the node
// restarts.
func (c *Cluster) ContainerdAddress(name string) (string, error) {
	n, err := c.node(name)
	if err != nil {
		return "", err
	}
	if !n.Init.alive() {
		return "", fmt.Errorf("local-k8s: %s is not running", name)
	}
	return fmt.Sprintf("/proc/%d/root%s", n.Init.Pid, containerdSocket), nil
}

// LoadImage imports an image archive (docker-archive or OCI tar, e.g.
// `make images`' bin/blastradius-image.tar) into every node's containerd,
// where pods with imagePullPolicy IfNotPresent or Never find it. Images
// are on the nodes' disks: they survive Crash and Restart.
func (c *Cluster) LoadImage(ctx context.Context, archive string) error {
	ctr, err := findHostCtr()
	if err != nil {
		return err
	}
	if _, err := os.Stat(archive); err != nil {
		return fmt.Errorf("local-k8s: load image: %w", err)
	}
	for _, name := range c.Nodes {
		sock, err := c.ContainerdAddress(name)
		if err != nil {
			return err
		}
		t0 := time.Now()
		ictx, cancel := context.WithTimeout(ctx, imageLoadTimeout)
		out, err := exec.CommandContext(ictx, ctr, "--address", sock, "--namespace", "k8s.io", "images", "import", archive).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("local-k8s: load image %s on %s: %v: %s", archive, name, err, oneline.Fold(string(out), 300))
		}
		c.logf("%s: imported %s (%s)", name, archive, time.Since(t0).Round(100*time.Millisecond))
	}
	return nil
}

func findHostCtr() (string, error) {
	p, err := exec.LookPath("ctr")
	if err != nil {
		return "", errors.New("local-k8s: ctr not found (apt-get install containerd)")
	}
	return p, nil
}

// Status is what the state file says about a cluster's processes.
type Status struct {
	Dir, Kubeconfig string
	Created         time.Time
	Processes       []ProcessStatus
}

// ProcessStatus is one control plane process or node init.
type ProcessStatus struct {
	Name    string
	Pid     int
	Running bool
}

// ReadStatus reads the cluster's state file and checks which of its
// processes run. It needs no apiserver.
func ReadStatus(dir string) (*Status, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	l := layout{dir: dir}
	sf, err := loadState(l.state())
	if err != nil {
		return nil, err
	}
	s := sf.get()
	st := &Status{Dir: dir, Kubeconfig: l.Kubeconfig(), Created: s.Created}
	for _, p := range s.Procs {
		st.Processes = append(st.Processes, ProcessStatus{Name: p.Name, Pid: p.Pid, Running: p.alive()})
	}
	for _, n := range s.Nodes {
		st.Processes = append(st.Processes, ProcessStatus{Name: n.Name + " (node init)", Pid: n.Init.Pid, Running: n.Init.alive()})
	}
	return st, nil
}
