package localk8s

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"sigs.k8s.io/yaml"
)

// A node's file system: inside the node's mount namespace, <node dir>/var/lib
// is mounted on /var/lib and <node dir>/var/log on /var/log, and /run is a
// tmpfs of its own. Components see the standard paths (/var/lib/kubelet,
// /var/lib/containerd, /var/lib/cni, /var/log/pods) and short socket paths,
// nodes share nothing, and whatever a node writes is under its directory.
const (
	nodeVarLib         = "var/lib"
	nodeVarLog         = "var/log"
	containerdSocket   = "/run/containerd/containerd.sock"
	containerdConfig   = "/var/lib/blastradius/containerd.toml"
	kubeletConfig      = "/var/lib/kubelet/config.yaml"
	kubeletKubeconfig  = "/var/lib/kubelet/kubeconfig"
	kubeletPKI         = "/var/lib/kubelet/pki"
	kubeProxyConfig    = "/var/lib/kube-proxy/config.yaml"
	kubeProxyKubeconf  = "/var/lib/kube-proxy/kubeconfig"
	cniConfDir         = "/var/lib/cni/net.d"
	cniBinDir          = "/var/lib/cni/bin"
	nodeSpecInNode     = "/var/lib/blastradius/node.json"
	nodeInitArg0       = "blastradius-local-k8s-node"
	nodeInitEnv        = "BLASTRADIUS_LOCALK8S_NODE_INIT"
	nodeTmpDir         = "/var/lib/tmp"
	nodeComponentsPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// nodeSpec is what a node init needs; Up writes it once per node, Restart
// reuses it.
type nodeSpec struct {
	Name      string   `json:"name"`
	Dir       string   `json:"dir"` // the node's directory on the host
	IP        string   `json:"ip"`
	Bins      binaries `json:"bins"`
	PauseTar  string   `json:"pause_tar"` // host path, read before the mounts change
	Cgroups   []string `json:"cgroups"`   // cgroup directories the node's processes live in
	ClusterCA string   `json:"cluster_ca"`
}

// hostPath maps a path inside the node to the host.
func (s nodeSpec) hostPath(p string) string {
	switch {
	case strings.HasPrefix(p, "/var/lib/"):
		return filepath.Join(s.Dir, nodeVarLib, strings.TrimPrefix(p, "/var/lib/"))
	case strings.HasPrefix(p, "/var/log/"):
		return filepath.Join(s.Dir, nodeVarLog, strings.TrimPrefix(p, "/var/log/"))
	}
	panic("localk8s: no host path for " + p)
}

func specPath(l layout, node string) string {
	return filepath.Join(l.node(node), nodeVarLib, strings.TrimPrefix(nodeSpecInNode, "/var/lib/"))
}

// writeNodeFiles writes a node's spec and every component's configuration,
// certificates and kubeconfig into its directory.
func writeNodeFiles(l layout, n nodeState, b binaries, pauseTar string, cgroups []string) error {
	s := nodeSpec{Name: n.Name, Dir: l.node(n.Name), IP: n.IP, Bins: b, PauseTar: pauseTar, Cgroups: cgroups}
	for _, d := range []string{nodeVarLog, nodeVarLib + "/tmp", nodeVarLib + "/cni/net.d", nodeVarLib + "/cni/bin", nodeVarLib + "/kubelet/pki", nodeVarLib + "/kube-proxy", nodeVarLib + "/blastradius"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			return err
		}
	}
	copies := map[string]string{
		l.kubeconfig(n.Name):           s.hostPath(kubeletKubeconfig),
		l.kubeconfig("kube-proxy"):     s.hostPath(kubeProxyKubeconf),
		l.pki("ca.crt"):                s.hostPath(kubeletPKI + "/ca.crt"),
		l.pki(n.Name + "-kubelet.crt"): s.hostPath(kubeletPKI + "/kubelet.crt"),
		l.pki(n.Name + "-kubelet.key"): s.hostPath(kubeletPKI + "/kubelet.key"),
	}
	for from, to := range copies {
		b, err := os.ReadFile(from)
		if err != nil {
			return err
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			return err
		}
	}
	files := map[string][]byte{
		containerdConfig:                      []byte(containerdTOML(cniBinDir)),
		cniConfDir + "/10-local-k8s.conflist": cniConflist(n),
	}
	kc, err := kubeletYAML(n)
	if err != nil {
		return err
	}
	files[kubeletConfig] = kc
	kp, err := kubeProxyYAML(n)
	if err != nil {
		return err
	}
	files[kubeProxyConfig] = kp
	sb, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	files[nodeSpecInNode] = sb
	for p, b := range files {
		if err := os.WriteFile(s.hostPath(p), b, 0o644); err != nil {
			return err
		}
	}
	// Each node's CNI plugins are its own copies: a chained plugin a
	// node agent installs (istio-cni) lands in the node's folder, never in
	// the host's.
	for _, name := range cniPlugins {
		bin, err := os.ReadFile(filepath.Join(b.CNIDir, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(s.hostPath(cniBinDir+"/"+name), bin, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// CNI folders as the nodes' containerd and kubelet see them: where a node
// agent such as istio-cni installs its plugin and chains its configuration.
const (
	CNIBinDir  = cniBinDir
	CNIConfDir = cniConfDir
)

// containerdTOML is one node's containerd. restrict_oom_score_adj: this
// machine grants no CAP_SYS_RESOURCE, and without it runc fails to lower a
// container's OOM score ("can't get final child's PID from pipe"). The
// sandbox image is the locally built pause image (no registry).
func containerdTOML(cniBinDir string) string {
	return `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "` + containerdSocket + `"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "` + pauseImage + `"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "` + cniBinDir + `"
    conf_dir = "` + cniConfDir + `"
`
}

// cniConflist gives the node's pods addresses from its own /24 on a bridge
// in the node's network namespace; other nodes' pods are reached through
// the routes setupNodeNet adds, so no overlay and no masquerade.
func cniConflist(n nodeState) []byte {
	c := map[string]any{
		"cniVersion": "0.4.0",
		"name":       "local-k8s",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": n.PodCIDR}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return b
}

// kubeletYAML is one node's kubelet. The host has cgroup v1 and no systemd:
// failCgroupV1 false, cgroupfs, no QoS cgroups and no node allocatable
// enforcement. The lease is short (8 s, renewed every 2 s) so the 10 s
// node-monitor-grace-period never flags a healthy node.
func kubeletYAML(n nodeState) ([]byte, error) {
	c := map[string]any{
		"apiVersion":                "kubelet.config.k8s.io/v1beta1",
		"kind":                      "KubeletConfiguration",
		"failCgroupV1":              false,
		"cgroupsPerQOS":             false,
		"enforceNodeAllocatable":    []string{},
		"failSwapOn":                false,
		"cgroupDriver":              "cgroupfs",
		"containerRuntimeEndpoint":  "unix://" + containerdSocket,
		"address":                   n.IP,
		"port":                      kubeletPort,
		"readOnlyPort":              0,
		"healthzBindAddress":        "127.0.0.1",
		"healthzPort":               10248,
		"tlsCertFile":               kubeletPKI + "/kubelet.crt",
		"tlsPrivateKeyFile":         kubeletPKI + "/kubelet.key",
		"volumePluginDir":           "/var/lib/kubelet/volume-plugins",
		"clusterDomain":             "cluster.local",
		"resolvConf":                "/etc/resolv.conf",
		"nodeLeaseDurationSeconds":  8,
		"nodeStatusUpdateFrequency": "4s",
		"nodeStatusReportFrequency": "4s",
		"serializeImagePulls":       false,
		// Images are imported, never pulled: garbage-collecting one would
		// lose it for good.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		// Eviction on a shared development machine would evict pods for
		// other programs' disk and memory use.
		"evictionHard": map[string]string{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		"authentication": map[string]any{
			"anonymous": map[string]bool{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]string{"clientCAFile": kubeletPKI + "/ca.crt"},
		},
		"authorization": map[string]any{"mode": "Webhook"},
	}
	return yaml.Marshal(c)
}

func kubeProxyYAML(n nodeState) ([]byte, error) {
	c := map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"mode":               "iptables",
		"clusterCIDR":        clusterCIDR,
		"hostnameOverride":   n.Name,
		"bindAddress":        n.IP,
		"healthzBindAddress": "0.0.0.0:10256",
		"metricsBindAddress": "127.0.0.1:10249",
		"clientConnection":   map[string]string{"kubeconfig": kubeProxyKubeconf},
		// NodePorts on the node IP only, not on every pod bridge address.
		"nodePortAddresses": []string{"primary"},
		// The node's network namespace has its own conntrack settings; do
		// not try to raise the machine-wide table size.
		"conntrack": map[string]any{"maxPerCore": 0, "min": 0},
	}
	return yaml.Marshal(c)
}

// startNodeInit starts node n's init: a copy of this executable in a new
// PID and mount namespace, forked from a thread inside the node's network
// namespace. It runs nodeInit (see RunNodeInit).
func startNodeInit(l layout, n nodeState, self string) (*exec.Cmd, error) {
	s := specPath(l, n.Name)
	logPath := filepath.Join(l.node(n.Name), nodeVarLog, "init.log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(self)
	cmd.Args = []string{nodeInitArg0, n.Name, s}
	cmd.Env = append(os.Environ(), nodeInitEnv+"="+s)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true, // no terminal signals from whoever ran Up
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
	}
	if err := inNetns(n.netnsPath(), cmd.Start); err != nil {
		return nil, fmt.Errorf("start node init: %w", err)
	}
	return cmd, nil
}
