package kubetrial

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
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
