package localk8s

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Config describes the cluster Up brings up.
type Config struct {
	// Dir holds everything of the cluster: certificates, kubeconfigs, etcd
	// data, node state, logs and the state file Down reads (required).
	Dir string
	// Nodes is the number of kubelet nodes, 1..MaxNodes (0: DefaultNodes).
	Nodes int
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet and kube-proxy (required; `make
	// k8s-bins` builds them into .cache/k8s/<version>).
	BinDir string
	// ReadyTimeout bounds the wait for every node to become Ready
	// (0: DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// Logf prints progress; nil is silent.
	Logf func(format string, args ...any)
}

// Defaults and bounds.
const (
	DefaultNodes = 3
	// MaxNodes keeps node names sorting in node order (lk-node-1..9);
	// each node costs about 200 MiB and a share of two cores anyway.
	MaxNodes            = 9
	DefaultReadyTimeout = 3 * time.Minute
	// NodeMonitorGracePeriod is how long the node lifecycle controller
	// waits for a heartbeat before marking a node NotReady. Kubernetes'
	// default is 40 s; fault scenarios here last seconds, so a crashed node
	// must show up as NotReady within a scenario. Kubelets renew their
	// lease every 2 s (a lease of 8 s) so that a healthy node never comes
	// near this limit.
	NodeMonitorGracePeriod = 10 * time.Second
)

// Addresses and ports. One local-k8s cluster per machine: the bridge, the
// network namespaces and the apiserver port have fixed names.
const (
	bridgeName    = "lkbr0"
	apiserverPort = 6443
	etcdPort      = 12379 // not 2379: leave the standard port to any other etcd
	etcdPeerPort  = 12380
	kubeletPort   = 10250 // inside each node's own network namespace
	serviceCIDR   = "10.96.0.0/16"
	serviceIP     = "10.96.0.1" // the kubernetes Service: the first service address
	clusterCIDR   = "10.78.0.0/16"
	pauseImage    = "blastradius.local/pause:1"
	// PauseImage is the sandbox image every node has; it also runs as a
	// do-nothing workload (see pause/main.go for its test modes).
	PauseImage = pauseImage
	nodePrefix = "lk-node-"
	// vethPrefix names each node's host-side veth (lkv-<i>): interface
	// names have at most 15 bytes, too few for the node name.
	vethPrefix = "lkv-"
)

// bridgeIP is the host's address on the node network: nodes reach the
// apiserver here.
var bridgeIP = net.IPv4(10, 77, 0, 1).To4()

// NodeName is the name of node i (1-based): lk-node-1 .. lk-node-N, which
// sort in node order (N ≤ MaxNodes).
func NodeName(i int) string { return fmt.Sprintf("%s%d", nodePrefix, i) }

// NodeIndex is the 1-based index of a node name, 0 if it is none.
func NodeIndex(name string) int {
	var i int
	if _, err := fmt.Sscanf(name, nodePrefix+"%d", &i); err != nil || NodeName(i) != name {
		return 0
	}
	return i
}

func nodeIP(i int) net.IP { return net.IPv4(10, 77, 0, byte(10+i)).To4() }

func podCIDR(i int) *net.IPNet {
	return &net.IPNet{IP: net.IPv4(10, 78, byte(i), 0).To4(), Mask: net.CIDRMask(24, 32)}
}

// binaries are the executables a cluster runs, by role.
type binaries struct {
	Etcd, Apiserver, ControllerManager, Scheduler, Kubelet, KubeProxy string
	Containerd, Shim, Runc, Ctr, Iptables, Mount                      string
	CNIDir                                                            string
}

// cniPlugins are the CNI plugins every node's network configuration uses
// (loopback: containerd sets up each pod's lo with it).
var cniPlugins = []string{"bridge", "host-local", "loopback", "portmap"}

// findBinaries checks every executable the cluster needs before anything
// is created, and names all that are missing with where they come from.
func findBinaries(binDir string) (binaries, error) {
	var b binaries
	var missing []string
	inBin := func(name string) string {
		p := filepath.Join(binDir, name)
		if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, p+" (make k8s-bins)")
		}
		return p
	}
	onHost := func(name, pkg string) string {
		p, err := exec.LookPath(name)
		if err != nil {
			for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
				if st, serr := os.Stat(filepath.Join(d, name)); serr == nil && st.Mode()&0o111 != 0 {
					return filepath.Join(d, name)
				}
			}
			missing = append(missing, name+" (apt-get install "+pkg+")")
			return ""
		}
		return p
	}
	b.Etcd = inBin("etcd")
	b.Apiserver = inBin("kube-apiserver")
	b.ControllerManager = inBin("kube-controller-manager")
	b.Scheduler = inBin("kube-scheduler")
	b.Kubelet = inBin("kubelet")
	b.KubeProxy = inBin("kube-proxy")
	b.Containerd = onHost("containerd", "containerd")
	b.Shim = onHost("containerd-shim-runc-v2", "containerd")
	b.Ctr = onHost("ctr", "containerd")
	b.Runc = onHost("runc", "runc")
	b.Iptables = onHost("iptables", "iptables")
	b.Mount = onHost("mount", "mount")
	for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
		ok := true
		for _, p := range cniPlugins {
			if _, err := os.Stat(filepath.Join(d, p)); err != nil {
				ok = false
			}
		}
		if ok {
			b.CNIDir = d
			break
		}
	}
	if b.CNIDir == "" {
		missing = append(missing, "CNI plugins "+strings.Join(cniPlugins, ", ")+" in /usr/lib/cni or /opt/cni/bin (apt-get install containernetworking-plugins)")
	}
	if len(missing) > 0 {
		return b, errors.New("missing: " + strings.Join(missing, "; "))
	}
	return b, nil
}

// layout is where everything of a cluster lives under its directory.
type layout struct{ dir string }

func (l layout) state() string       { return filepath.Join(l.dir, "state.json") }
func (l layout) pki(f string) string { return filepath.Join(l.dir, "pki", f) }
func (l layout) Kubeconfig() string  { return filepath.Join(l.dir, "kubeconfig") }
func (l layout) kubeconfig(who string) string {
	return filepath.Join(l.dir, "kubeconfigs", who+".kubeconfig")
}
func (l layout) etcdData() string        { return filepath.Join(l.dir, "etcd") }
func (l layout) log(name string) string  { return filepath.Join(l.dir, "logs", name+".log") }
func (l layout) node(name string) string { return filepath.Join(l.dir, "nodes", name) }
func (l layout) cache() string           { return filepath.Join(l.dir, "cache") }
