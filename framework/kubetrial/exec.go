package kubetrial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// PodExec is pods/exec through the API server: WebSocket first (what
// current API servers speak), SPDY where an older one or a proxy on the
// way refuses the upgrade, as kubectl does.
type PodExec struct {
	Config *rest.Config
	Client kubernetes.Interface
}

// Exec implements Execer.
func (e *PodExec) Exec(ctx context.Context, ns, pod, container string, cmd []string, stdout, stderr io.Writer) error {
	req := e.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(e.Config, "GET", req.URL().String())
	if err != nil {
		return err
	}
	spdy, err := remotecommand.NewSPDYExecutor(e.Config, "POST", req.URL())
	if err != nil {
		return err
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return err
	}
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: stdout, Stderr: stderr}); err != nil {
		return fmt.Errorf("exec in %s/%s: %w", ns, pod, err)
	}
	return nil
}

// PodAdmin reads a pod's admin port through the API server's pods/proxy.
func PodAdmin(cs kubernetes.Interface) func(ctx context.Context, ns, pod string, port int, path string) ([]byte, error) {
	return func(ctx context.Context, ns, pod string, port int, path string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return cs.CoreV1().RESTClient().Get().Resource("pods").Namespace(ns).
			Name(fmt.Sprintf("%s:%d", pod, port)).SubResource("proxy").Suffix(strings.TrimPrefix(path, "/")).DoRaw(ctx)
	}
}

// ContainerCrasher crashes a kind node: its container is SIGKILLed and,
// on recovery, started again (the node reboots: kubelet, containerd and
// every pod on it start afresh). runtime is docker, podman or nerdctl.
type ContainerCrasher struct {
	Runtime string
	// run executes the runtime; tests replace it.
	run func(ctx context.Context, name string, args ...string) ([]byte, error)
}

func (c *ContainerCrasher) exec(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := c.run
	if run == nil {
		run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
			return exec.CommandContext(ctx, name, args...).CombinedOutput()
		}
	}
	out, err := run(ctx, c.Runtime, args...)
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", c.Runtime, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// How says what a crash is, for the dry run.
func (c *ContainerCrasher) How() string {
	return "SIGKILL of the node's container (kubelet, containerd and every pod on it); with recoverAfter the container starts again: a reboot"
}

// CrashNode implements NodeCrasher: kind names node containers after the
// nodes.
func (c *ContainerCrasher) CrashNode(node string) (time.Time, error) {
	at := time.Now()
	return at, c.exec("kill", "--signal", "KILL", node)
}

// RecoverNode implements NodeCrasher.
func (c *ContainerCrasher) RecoverNode(node string) (time.Time, error) {
	if err := c.exec("start", node); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// ContainerPartitioner cuts kind nodes apart with nftables inside their
// containers (the kind node image ships nft): the drop on arrival the
// embedded cluster and local-k8s use (internal/nftpart), written as an nft
// script because the rules go into another machine's container.
type ContainerPartitioner struct {
	Runtime string
	// Client reads the nodes' InternalIP and pod CIDRs.
	Client kubernetes.Interface
	// run executes the runtime; tests replace it.
	run func(ctx context.Context, name string, args ...string) ([]byte, error)
}

// partitionTable names the nftables table of a partition in a node.
const partitionTable = "blastradius-partition"

// PartitionHow says what a partition is, for the dry run.
func (c *ContainerPartitioner) PartitionHow() string {
	return "nftables in each node container (table ip " + partitionTable + ", prerouting at raw priority) drops every packet from the other nodes' InternalIP and pod CIDRs"
}

func (c *ContainerPartitioner) exec(args ...string) error {
	cc := &ContainerCrasher{Runtime: c.Runtime, run: c.run}
	return cc.exec(args...)
}

// nodeNets is a node's addresses: its InternalIP and pod CIDRs (IPv4).
func nodeNets(ctx context.Context, cs kubernetes.Interface, name string) ([]string, error) {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && !strings.Contains(a.Address, ":") {
			out = append(out, a.Address)
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if !strings.Contains(c, ":") {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("node %s has no IPv4 InternalIP or pod CIDR", name)
	}
	return out, nil
}

// PartitionScript is the nft script that makes a node drop every packet
// from the addresses in from to its own (self).
func PartitionScript(self, from []string) string {
	return fmt.Sprintf("add table ip %[1]s; add chain ip %[1]s cut { type filter hook prerouting priority raw; policy accept; }; "+
		"add rule ip %[1]s cut ip saddr { %[2]s } ip daddr { %[3]s } drop", partitionTable, strings.Join(from, ", "), strings.Join(self, ", "))
}

// PartitionNodes implements NodePartitioner.
func (c *ContainerPartitioner) PartitionNodes(names ...string) (time.Time, func() (time.Time, error), error) {
	if len(names) < 2 {
		return time.Time{}, nil, fmt.Errorf("a partition needs two nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nets := map[string][]string{}
	for _, n := range names {
		ns, err := nodeNets(ctx, c.Client, n)
		if err != nil {
			return time.Time{}, nil, err
		}
		nets[n] = ns
	}
	var done []string
	undo := func() error {
		var errs []error
		for _, n := range done {
			if err := c.exec("exec", n, "nft", "delete table ip "+partitionTable); err != nil {
				errs = append(errs, err)
			}
		}
		done = nil
		return errors.Join(errs...)
	}
	for _, n := range names {
		var from []string
		for _, o := range names {
			if o != n {
				from = append(from, nets[o]...)
			}
		}
		if err := c.exec("exec", n, "nft", PartitionScript(nets[n], from)); err != nil {
			return time.Time{}, nil, errors.Join(err, undo())
		}
		done = append(done, n)
	}
	return time.Now(), sync.OnceValues(func() (time.Time, error) {
		began := time.Now()
		return began, undo()
	}), nil
}
