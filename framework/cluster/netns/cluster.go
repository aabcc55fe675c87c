package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/proxy/netnsx"
)

// PodSpec places one workload.
type PodSpec struct {
	Name string
	Node int // 1-based node index
}

// Config describes the cluster to bring up.
type Config struct {
	Nodes int       // number of nodes (failure domains), ≥ 1
	Pods  []PodSpec // workloads and where they run
	// NotReadyGrace is how long a node may miss heartbeats before the endpoint
	// controller drops its endpoints (Kubernetes' node-monitor-grace-period is 40 s).
	NotReadyGrace time.Duration
	// Binary is the executable started inside pods (default: this one).
	Binary string
	// LogDir receives one log file per process ("" discards output).
	LogDir string
	// Logf prints progress; nil is silent.
	Logf func(format string, args ...any)
	// EndpointsChanged, when set, is told about every endpoint change (the
	// mesh's control plane registry follows the endpoint controller).
	EndpointsChanged func(EndpointChange)
}

// Node is one failure domain.
type Node struct {
	Name    string
	Index   int
	IP      net.IP
	PodCIDR *net.IPNet

	fd      int
	nl      *netlink.Handle
	pods    []*Pod
	mu      sync.Mutex
	crashed bool
	beat    time.Time // last supervisor heartbeat
}

// Pod is one workload: a network namespace on a node, with processes.
type Pod struct {
	Name string
	Node *Node
	IP   net.IP

	fd    int
	slot  int // index on its node: names vp<slot>
	procs []*Process
}

// Cluster is a running embedded cluster.
type Cluster struct {
	cfg      Config
	Nodes    []*Node
	pods     map[string]*Pod
	services []*Service
	root     *netlink.Handle

	mu    sync.Mutex
	epLog []EndpointChange
	// servicesDirty: some live pod's service rules may not match the
	// decided endpoints (a failed batch, or a node back from a crash).
	servicesDirty bool
	stop          context.CancelFunc
	wg            sync.WaitGroup
	closeOnce     sync.Once

	partMu     sync.Mutex
	partitions map[string]bool // "node-1/<table>" of every partition in place
}

var bridgeIP = net.IPv4(10, 0, 0, 1)

// PodBinarySuffix names the slim build of the binary (no Kubernetes
// providers) that pods run when it is installed next to the CLI.
const PodBinarySuffix = "-pod"

func nodeIP(i int) net.IP { return net.IPv4(10, 0, 0, byte(10+i)).To4() }
func podCIDR(i int) *net.IPNet {
	return &net.IPNet{IP: net.IPv4(10, 244, byte(i), 0).To4(), Mask: net.CIDRMask(24, 32)}
}
func podGateway(i int) net.IP     { return net.IPv4(10, 244, byte(i), 1).To4() }
func podIP(node, slot int) net.IP { return net.IPv4(10, 244, byte(node), byte(2+slot)).To4() }
func host32(ip net.IP) *net.IPNet { return &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)} }
func addr(ip net.IP, bits int) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, 32)}}
}

// Up creates the cluster. On error everything created so far is released.
func Up(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.Nodes < 1 || cfg.Nodes > 200 {
		return nil, fmt.Errorf("node count %d out of range 1..200", cfg.Nodes)
	}
	if cfg.NotReadyGrace <= 0 {
		cfg.NotReadyGrace = 5 * time.Second
	}
	if cfg.Binary == "" {
		if cfg.Binary, err = os.Executable(); err != nil {
			return nil, err
		}
		// Pods run the slim build when it sits next to the CLI (make build
		// puts bin/blastradius-pod there): the full CLI links the
		// Kubernetes client libraries, which double every process's memory
		// before it does anything, and the node proxies' memory is measured.
		if st, serr := os.Stat(cfg.Binary + PodBinarySuffix); serr == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			cfg.Binary += PodBinarySuffix
		}
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	c := &Cluster{cfg: cfg, pods: map[string]*Pod{}}
	defer func() {
		if err != nil {
			c.Down()
		}
	}()
	if c.root, err = netlink.NewHandle(); err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	if err := c.setupBridge(); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	for i := 1; i <= cfg.Nodes; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := c.addNode(i)
		if err != nil {
			return nil, fmt.Errorf("node-%d: %w", i, err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := c.nodeRoutes(n); err != nil {
			return nil, fmt.Errorf("%s routes: %w", n.Name, err)
		}
	}
	for _, ps := range cfg.Pods {
		if ps.Node < 1 || ps.Node > cfg.Nodes {
			return nil, fmt.Errorf("pod %s: node %d does not exist", ps.Name, ps.Node)
		}
		if _, dup := c.pods[ps.Name]; dup {
			return nil, fmt.Errorf("pod %s defined twice", ps.Name)
		}
		p, err := c.addPod(c.Nodes[ps.Node-1], ps.Name)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", ps.Name, err)
		}
		c.pods[p.Name] = p
	}
	bg, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	for _, n := range c.Nodes {
		n.beat = time.Now()
		c.wg.Add(1)
		go c.supervise(bg, n)
	}
	c.wg.Add(1)
	go c.endpointController(bg)
	return c, nil
}

func (c *Cluster) setupBridge() error {
	lo, err := c.root.LinkByName("lo")
	if err == nil {
		_ = c.root.LinkSetUp(lo)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := c.root.LinkAdd(br); err != nil {
		return err
	}
	if err := c.root.AddrAdd(br, addr(bridgeIP, 24)); err != nil {
		return err
	}
	return c.root.LinkSetUp(br)
}

func (c *Cluster) addNode(i int) (*Node, error) {
	fd, err := netnsx.NewNS()
	if err != nil {
		return nil, err
	}
	n := &Node{Name: fmt.Sprintf("node-%d", i), Index: i, IP: nodeIP(i), PodCIDR: podCIDR(i), fd: fd}
	if n.nl, err = netlink.NewHandleAt(vnetns.NsHandle(fd)); err != nil {
		unix.Close(fd)
		return nil, err
	}
	host := fmt.Sprintf("vn%d", i)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: "eth0", PeerNamespace: netlink.NsFd(fd)}
	if err := c.root.LinkAdd(veth); err != nil {
		return n, err
	}
	br, err := c.root.LinkByName("br0")
	if err != nil {
		return n, err
	}
	hl, err := c.root.LinkByName(host)
	if err != nil {
		return n, err
	}
	if err := c.root.LinkSetMaster(hl, br); err != nil {
		return n, err
	}
	if err := c.root.LinkSetUp(hl); err != nil {
		return n, err
	}
	eth, err := n.nl.LinkByName("eth0")
	if err != nil {
		return n, err
	}
	if err := n.nl.AddrAdd(eth, addr(n.IP, 24)); err != nil {
		return n, err
	}
	if err := netnsx.SetSysctl(fd, "net.ipv4.ip_forward", "1"); err != nil {
		return n, fmt.Errorf("ip_forward: %w", err)
	}
	return n, nil
}

// nodeRoutes (re)installs everything a node needs to forward: links up, routes
// to every other node's pod CIDR, and the sandbox's route to this node's pods
// (so the runner can probe them). Idempotent: node recovery calls it again,
// because taking a link down flushes its routes.
func (c *Cluster) nodeRoutes(n *Node) error {
	for _, name := range []string{"lo", "eth0"} {
		l, err := n.nl.LinkByName(name)
		if err != nil {
			return err
		}
		if err := n.nl.LinkSetUp(l); err != nil {
			return err
		}
	}
	eth, _ := n.nl.LinkByName("eth0")
	for _, o := range c.Nodes {
		if o == n {
			continue
		}
		if err := n.nl.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: o.PodCIDR, Gw: o.IP}); err != nil {
			return fmt.Errorf("route to %s: %w", o.PodCIDR, err)
		}
	}
	br, err := c.root.LinkByName("br0")
	if err != nil {
		return err
	}
	return c.root.RouteReplace(&netlink.Route{LinkIndex: br.Attrs().Index, Dst: n.PodCIDR, Gw: n.IP})
}

func (c *Cluster) addPod(n *Node, name string) (*Pod, error) {
	fd, err := netnsx.NewNS()
	if err != nil {
		return nil, err
	}
	p := &Pod{Name: name, Node: n, fd: fd, slot: len(n.pods), IP: podIP(n.Index, len(n.pods))}
	if p.slot > 250 {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: more than 250 pods", n.Name)
	}
	n.pods = append(n.pods, p)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("vp%d", p.slot)}, PeerName: "eth0", PeerNamespace: netlink.NsFd(fd)}
	if err := n.nl.LinkAdd(veth); err != nil {
		return p, err
	}
	return p, c.podLinks(p)
}

// podLinks configures both ends of a pod's veth. Idempotent (see nodeRoutes).
func (c *Cluster) podLinks(p *Pod) error {
	n := p.Node
	hl, err := n.nl.LinkByName(fmt.Sprintf("vp%d", p.slot))
	if err != nil {
		return err
	}
	if err := n.nl.AddrReplace(hl, addr(podGateway(n.Index), 32)); err != nil {
		return err
	}
	if err := n.nl.LinkSetUp(hl); err != nil {
		return err
	}
	if err := n.nl.RouteReplace(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: host32(p.IP), Scope: netlink.SCOPE_LINK}); err != nil {
		return err
	}
	ph, err := netlink.NewHandleAt(vnetns.NsHandle(p.fd))
	if err != nil {
		return err
	}
	defer ph.Close()
	for _, name := range []string{"lo", "eth0"} {
		l, err := ph.LinkByName(name)
		if err != nil {
			return err
		}
		if err := ph.LinkSetUp(l); err != nil {
			return err
		}
	}
	eth, _ := ph.LinkByName("eth0")
	if err := ph.AddrReplace(eth, addr(p.IP, 32)); err != nil {
		return err
	}
	if err := ph.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: host32(podGateway(n.Index)), Scope: netlink.SCOPE_LINK}); err != nil {
		return err
	}
	return ph.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: podGateway(n.Index)})
}

// Pod returns a pod by name.
func (c *Cluster) Pod(name string) (*Pod, bool) { p, ok := c.pods[name]; return p, ok }

// Node returns a node by name.
func (c *Cluster) Node(name string) (*Node, bool) {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return nil, false
}

// Pods lists pods sorted by name.
func (c *Cluster) Pods() []*Pod {
	out := make([]*Pod, 0, len(c.pods))
	for _, p := range c.pods {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// NetNSFD exposes a pod's namespace descriptor (for faults that program it,
// and for the node agent that hands it to the node proxy).
func (p *Pod) NetNSFD() int { return p.fd }

// InPod runs fn on a thread inside the pod's network namespace: sockets fn
// creates live there.
func (p *Pod) InPod(fn func() error) error { return netnsx.Do(p.fd, fn) }

// InNode runs fn on a thread inside the node's network namespace (to capture
// on the node's link, for instance).
func (n *Node) InNode(fn func() error) error { return netnsx.Do(n.fd, fn) }

// Processes lists the pod's processes.
func (p *Pod) Processes() []*Process {
	p.Node.mu.Lock()
	defer p.Node.mu.Unlock()
	return append([]*Process(nil), p.procs...)
}

// Crashed reports whether the node is down.
func (n *Node) Crashed() bool { n.mu.Lock(); defer n.mu.Unlock(); return n.crashed }

// Ready reports whether the node's supervisor has sent a heartbeat within grace.
func (n *Node) Ready(grace time.Duration) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return time.Since(n.beat) < grace
}

// Down stops every process and releases every namespace. Safe to call twice.
func (c *Cluster) Down() {
	c.closeOnce.Do(func() {
		if c.stop != nil {
			c.stop()
		}
		for _, n := range c.Nodes {
			n.mu.Lock()
			n.crashed = true // no restarts from here on
			n.mu.Unlock()
		}
		for _, p := range c.pods {
			for _, pr := range p.procs {
				pr.kill()
			}
		}
		for _, p := range c.pods {
			for _, pr := range p.procs {
				pr.waitExit(5 * time.Second)
			}
		}
		c.wg.Wait()
		for _, p := range c.pods {
			unix.Close(p.fd)
		}
		for _, n := range c.Nodes {
			if n.nl != nil {
				n.nl.Close()
			}
			unix.Close(n.fd)
			if l, err := c.root.LinkByName(fmt.Sprintf("vn%d", n.Index)); err == nil {
				_ = c.root.LinkDel(l)
			}
		}
		if c.root != nil {
			if l, err := c.root.LinkByName("br0"); err == nil {
				_ = c.root.LinkDel(l)
			}
			c.root.Close()
		}
	})
}

// CrashNode takes node name down the way a killed machine goes down: links
// first (so the dying sockets' FINs and RSTs go nowhere and peers see a black
// hole), then SIGKILL to every process on it; the supervisor stops with it.
// It returns the instant the node went dark.
func (c *Cluster) CrashNode(name string) (time.Time, error) {
	n, ok := c.Node(name)
	if !ok {
		return time.Time{}, fmt.Errorf("crash %s: no such node", name)
	}
	n.mu.Lock()
	if n.crashed {
		n.mu.Unlock()
		return time.Time{}, fmt.Errorf("crash %s: already down", name)
	}
	n.crashed = true
	n.mu.Unlock()
	var errs []error
	if l, err := c.root.LinkByName(fmt.Sprintf("vn%d", n.Index)); err == nil {
		errs = append(errs, c.root.LinkSetDown(l))
	} else {
		errs = append(errs, err)
	}
	links, err := n.nl.LinkList()
	errs = append(errs, err)
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			errs = append(errs, n.nl.LinkSetDown(l))
		}
	}
	at := time.Now()
	for _, p := range n.pods {
		for _, pr := range p.procs {
			pr.kill()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return at, fmt.Errorf("crash %s: %w", name, err)
	}
	return at, nil
}

// RecoverNode brings a crashed node back like a reboot: links and routes, then
// the supervisor restarts every process. It returns when the links are up.
func (c *Cluster) RecoverNode(name string) (time.Time, error) {
	n, ok := c.Node(name)
	if !ok {
		return time.Time{}, fmt.Errorf("recover %s: no such node", name)
	}
	if !n.Crashed() {
		return time.Time{}, fmt.Errorf("recover %s: not down", name)
	}
	l, err := c.root.LinkByName(fmt.Sprintf("vn%d", n.Index))
	if err != nil {
		return time.Time{}, err
	}
	if err := c.root.LinkSetUp(l); err != nil {
		return time.Time{}, fmt.Errorf("recover %s: %w", name, err)
	}
	if err := c.nodeRoutes(n); err != nil {
		return time.Time{}, fmt.Errorf("recover %s: %w", name, err)
	}
	for _, p := range n.pods {
		if err := c.podLinks(p); err != nil {
			return time.Time{}, fmt.Errorf("recover %s: pod %s: %w", name, p.Name, err)
		}
	}
	at := time.Now()
	n.mu.Lock()
	n.crashed = false
	for _, p := range n.pods {
		for _, pr := range p.procs {
			pr.mu.Lock()
			pr.ready = false
			pr.backoff = 0
			pr.mu.Unlock()
		}
	}
	n.mu.Unlock()
	// Its pods' rules were skipped while it was down.
	c.mu.Lock()
	c.servicesDirty = true
	c.mu.Unlock()
	return at, nil
}

func (c *Cluster) logFile(pod, proc string) (*os.File, error) {
	if c.cfg.LogDir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(c.cfg.LogDir, 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(c.cfg.LogDir, pod+"."+proc+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}
