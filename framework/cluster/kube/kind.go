package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	kindcluster "sigs.k8s.io/kind/pkg/cluster"
	kindlog "sigs.k8s.io/kind/pkg/log"

	"blastradius.dev/blastradius/internal/oneline"
)

// Deadlines of the kind provider. Creating pulls the node image the first
// time (about 1 GB), hence the generous default.
const (
	DefaultKindCreateTimeout = 10 * time.Minute
	DefaultKindReadyTimeout  = 3 * time.Minute
)

// DefaultKindName is the cluster name when the kind config has none.
const DefaultKindName = "blastradius"

// KindOptions say how to get a kind cluster.
type KindOptions struct {
	// Config is the parsed kind config (cluster.LoadKindConfig).
	Config *v1alpha4.Cluster
	// Kubeconfig is where the cluster's kubeconfig is written (required):
	// the run's own file, never the user's ~/.kube/config.
	Kubeconfig string
	// Retain keeps the cluster when the run ends.
	Retain bool
	// Reuse takes an existing cluster of the same name instead of failing.
	// A reused cluster is never deleted: it was not this run's.
	Reuse         bool
	CreateTimeout time.Duration // 0: DefaultKindCreateTimeout
	ReadyTimeout  time.Duration // 0: DefaultKindReadyTimeout
	Logf          func(string, ...any)
}

// KindCluster is a kind cluster the run uses.
type KindCluster struct {
	Name       string
	Kubeconfig string
	// Workers are the worker node names in config order: they play
	// node-1..node-N.
	Workers []string
	Created bool // false when reused
	Retain  bool
	p       *kindcluster.Provider
	logf    func(string, ...any)
}

// KindName is the cluster name a config gives.
func KindName(cfg *v1alpha4.Cluster) string {
	if cfg != nil && cfg.Name != "" {
		return cfg.Name
	}
	return DefaultKindName
}

// KindNodeNames predicts the node names kind gives a config's nodes: role
// then a counter from the second node of a role on (blastradius-worker,
// blastradius-worker2, ...), in config order.
func KindNodeNames(cfg *v1alpha4.Cluster) (controlPlanes, workers []string) {
	name := KindName(cfg)
	count := map[v1alpha4.NodeRole]int{}
	for _, n := range cfg.Nodes {
		count[n.Role]++
		s := fmt.Sprintf("%s-%s", name, n.Role)
		if count[n.Role] > 1 {
			s += fmt.Sprint(count[n.Role])
		}
		if n.Role == v1alpha4.ControlPlaneRole {
			controlPlanes = append(controlPlanes, s)
		} else {
			workers = append(workers, s)
		}
	}
	return controlPlanes, workers
}

// detectNodeProvider is kind's container runtime detection, honouring
// KIND_EXPERIMENTAL_PROVIDER as the kind CLI does (the library leaves that
// to callers). A variable so a test can stand in a runtime.
var detectNodeProvider = func() (kindcluster.ProviderOption, string, error) {
	switch p := os.Getenv("KIND_EXPERIMENTAL_PROVIDER"); p {
	case "docker":
		return kindcluster.ProviderWithDocker(), "docker", lookPath("docker")
	case "podman":
		return kindcluster.ProviderWithPodman(), "podman", lookPath("podman")
	case "nerdctl", "finch", "nerdctl.lima":
		return kindcluster.ProviderWithNerdctl(p), p, lookPath(p)
	}
	opt, err := kindcluster.DetectNodeProvider()
	if err != nil {
		return nil, "", err
	}
	for _, bin := range []string{"docker", "nerdctl", "finch", "podman"} {
		if _, err := exec.LookPath(bin); err == nil {
			return opt, bin, nil
		}
	}
	return opt, "container runtime", nil
}

func lookPath(bin string) error {
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Errorf("KIND_EXPERIMENTAL_PROVIDER=%s but %s is not on PATH", bin, bin)
	}
	return nil
}

// KindProvider returns kind's provider for this machine's container
// runtime, checked to answer. Without docker, podman or nerdctl the error
// is one line saying so: kind runs its nodes as containers.
func KindProvider(logf func(string, ...any)) (*kindcluster.Provider, string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	opt, runtime, err := detectNodeProvider()
	if err != nil {
		return nil, "", fmt.Errorf("kind needs docker, podman or nerdctl: %s (none found on PATH, or none answers)", oneline.Lines(err.Error()))
	}
	p := kindcluster.NewProvider(opt, kindcluster.ProviderWithLogger(kindLogger{logf}))
	// The CLI can be installed while its daemon is not running; listing
	// clusters asks the runtime, so it fails here, on one line, instead of
	// half-way through a create.
	if _, err := p.List(); err != nil {
		return nil, "", fmt.Errorf("kind needs docker, podman or nerdctl: %s is installed but does not answer: %s", runtime, oneline.Lines(err.Error()))
	}
	return p, runtime, nil
}

// CreateKind creates the cluster from the config (or, with Reuse, takes an
// existing one of the same name), writes its kubeconfig, and waits until
// every node is Ready. kind's own wait only warns when its deadline passes,
// so it is off (0) and ours fails the run instead. A failed create is
// deleted unless Retain.
func CreateKind(ctx context.Context, o KindOptions) (*KindCluster, error) {
	if o.Config == nil {
		return nil, errors.New("kind: no config")
	}
	if o.Kubeconfig == "" {
		return nil, errors.New("kind: no kubeconfig path")
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	p, runtime, err := KindProvider(logf)
	if err != nil {
		return nil, err
	}
	name := KindName(o.Config)
	_, workers := KindNodeNames(o.Config)
	k := &KindCluster{Name: name, Kubeconfig: o.Kubeconfig, Workers: workers, Retain: o.Retain, p: p, logf: logf}
	existing, err := p.List()
	if err != nil {
		return nil, fmt.Errorf("kind: list clusters: %s", oneline.Lines(err.Error()))
	}
	exists := contains(existing, name)
	if exists && !o.Reuse {
		owner, alive, err := ReadKindOwner(name)
		switch {
		case err != nil:
			return nil, err
		case owner != nil && alive:
			return nil, fmt.Errorf("kind: cluster %q is in use by a running blastradius (pid %d); wait for it or stop it", name, owner.Pid)
		case owner == nil:
			return nil, fmt.Errorf("kind: a cluster named %q already exists (--reuse to use it, or: kind delete cluster --name %s)", name, name)
		}
		// Created by a run that died without deleting it: this run's
		// clean-up, as the killed run would have done.
		logf("kind: cluster %q was left behind by a run that was killed (pid %d, %s); deleting it", name, owner.Pid, owner.Created.Local().Format(time.DateTime))
		if err := deleteKind(p, name, owner.Kubeconfig); err != nil {
			return nil, fmt.Errorf("kind: delete leftover cluster %q: %s", name, oneline.Lines(err.Error()))
		}
		removeKindOwner(name)
		exists = false
	}
	switch {
	case exists:
		logf("kind: reusing cluster %q", name)
		if err := os.MkdirAll(filepath.Dir(o.Kubeconfig), 0o755); err != nil {
			return nil, err
		}
		if err := p.ExportKubeConfig(name, o.Kubeconfig, false); err != nil {
			return nil, fmt.Errorf("kind: export kubeconfig of %q: %s", name, oneline.Lines(err.Error()))
		}
	default:
		timeout := o.CreateTimeout
		if timeout <= 0 {
			timeout = DefaultKindCreateTimeout
		}
		logf("kind: creating cluster %q (%d nodes) with %s", name, len(o.Config.Nodes), runtime)
		cfg := o.Config.DeepCopy()
		cfg.Name = name
		// Recorded before the create starts: a run killed half-way through
		// creating leaves containers too.
		if err := writeKindOwner(name, o.Kubeconfig); err != nil {
			return nil, err
		}
		done := make(chan error, 1)
		go func() {
			done <- p.Create(name,
				kindcluster.CreateWithV1Alpha4Config(cfg),
				kindcluster.CreateWithKubeconfigPath(o.Kubeconfig),
				kindcluster.CreateWithWaitForReady(0),
				kindcluster.CreateWithRetain(o.Retain),
				kindcluster.CreateWithDisplayUsage(false),
				kindcluster.CreateWithDisplaySalutation(false))
		}()
		// kind's Create takes no context; the deadline bounds our wait for
		// it, and the runtime's commands die with the process.
		select {
		case err := <-done:
			if err != nil {
				if !o.Retain {
					// kind removed the nodes of its failed create.
					removeKindOwner(name)
				}
				return nil, fmt.Errorf("kind: create cluster %q: %s", name, oneline.Lines(err.Error()))
			}
		case <-time.After(timeout):
			return nil, fmt.Errorf("kind: create cluster %q did not finish within %s (remove what is left: kind delete cluster --name %s)", name, timeout, name)
		case <-ctx.Done():
			return nil, fmt.Errorf("kind: create cluster %q: %w (remove what is left: kind delete cluster --name %s)", name, ctx.Err(), name)
		}
		k.Created = true
	}
	kc, err := LoadKubeconfig(o.Kubeconfig)
	if err != nil {
		k.cleanupAfterFailure()
		return nil, err
	}
	dync, _, err := Clients(kc.Config)
	if err != nil {
		k.cleanupAfterFailure()
		return nil, err
	}
	rt := o.ReadyTimeout
	if rt <= 0 {
		rt = DefaultKindReadyTimeout
	}
	if err := WaitNodesReady(ctx, dync, len(o.Config.Nodes), nil, WaitOptions{Timeout: rt, Interval: 2 * time.Second}); err != nil {
		k.cleanupAfterFailure()
		return nil, fmt.Errorf("kind cluster %q: %v", name, err)
	}
	logf("kind: cluster %q ready, kubeconfig %s", name, o.Kubeconfig)
	return k, nil
}

// LoadImage loads an image archive (`make images`) into every node of the
// cluster with kind's own loader.
func (k *KindCluster) LoadImage(ctx context.Context, archive string) error {
	return LoadImageIntoKind(ctx, k.p, k.Name, archive, k.logf)
}

func (k *KindCluster) cleanupAfterFailure() {
	if k.Created && !k.Retain {
		if err := k.p.Delete(k.Name, k.Kubeconfig); err != nil {
			k.logf("kind: delete cluster %q after failure: %v", k.Name, err)
			return
		}
	}
	if k.Created {
		removeKindOwner(k.Name)
	}
}

// Close deletes the cluster unless it is retained or was reused.
func (k *KindCluster) Close() error {
	switch {
	case !k.Created:
		k.logf("kind: cluster %q was reused; kept", k.Name)
		return nil
	case k.Retain:
		// Kept on purpose: the user's now, never a leftover to delete.
		removeKindOwner(k.Name)
		k.logf("kind: cluster %q retained (kubeconfig %s; delete: kind delete cluster --name %s)", k.Name, k.Kubeconfig, k.Name)
		return nil
	}
	k.logf("kind: deleting cluster %q", k.Name)
	if err := k.p.Delete(k.Name, k.Kubeconfig); err != nil {
		return fmt.Errorf("kind: delete cluster %q: %s", k.Name, oneline.Lines(err.Error()))
	}
	removeKindOwner(k.Name)
	return nil
}

// DeleteKind deletes the kind cluster name (`blastradius cluster down
// --provider kind`): the way to remove what a killed run left behind when no
// other run follows. Deleting a cluster that does not exist is not an error;
// one that a running blastradius is using is refused.
func DeleteKind(name string, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	owner, alive, err := ReadKindOwner(name)
	if err != nil {
		return err
	}
	if owner != nil && alive {
		return fmt.Errorf("kind: cluster %q is in use by a running blastradius (pid %d); stop that run instead", name, owner.Pid)
	}
	p, _, err := KindProvider(logf)
	if err != nil {
		return err
	}
	existing, err := p.List()
	if err != nil {
		return fmt.Errorf("kind: list clusters: %s", oneline.Lines(err.Error()))
	}
	if !contains(existing, name) {
		removeKindOwner(name)
		logf("kind: no cluster named %q; nothing to delete", name)
		return nil
	}
	kc := ""
	if owner != nil {
		kc = owner.Kubeconfig
	}
	logf("kind: deleting cluster %q", name)
	if err := deleteKind(p, name, kc); err != nil {
		return fmt.Errorf("kind: delete cluster %q: %s", name, oneline.Lines(err.Error()))
	}
	removeKindOwner(name)
	return nil
}

// kindLogger sends kind's user-facing messages to the run's log; its debug
// levels are dropped.
type kindLogger struct{ logf func(string, ...any) }

func (l kindLogger) Warn(m string)                        { l.logf("kind: %s", m) }
func (l kindLogger) Warnf(f string, a ...any)             { l.logf("kind: "+f, a...) }
func (l kindLogger) Error(m string)                       { l.logf("kind: %s", m) }
func (l kindLogger) Errorf(f string, a ...any)            { l.logf("kind: "+f, a...) }
func (l kindLogger) V(v kindlog.Level) kindlog.InfoLogger { return kindInfo{l.logf, v == 0} }

type kindInfo struct {
	logf func(string, ...any)
	on   bool
}

func (i kindInfo) Info(m string) {
	if i.on {
		i.logf("kind: %s", m)
	}
}
func (i kindInfo) Infof(f string, a ...any) {
	if i.on {
		i.logf("kind: "+f, a...)
	}
}
func (i kindInfo) Enabled() bool { return i.on }

// deleteKind deletes a cluster whose kubeconfig was written to kubeconfig
// by the run that created it. kind also edits that file (and locks it
// beside itself); when it is gone with its folder (a results folder removed
// since), a scratch file stands in, so neither the delete fails on it nor
// kind falls back to editing the user's own kubeconfig.
func deleteKind(p *kindcluster.Provider, name, kubeconfig string) error {
	if kubeconfig != "" {
		if _, err := os.Stat(filepath.Dir(kubeconfig)); err == nil {
			return p.Delete(name, kubeconfig)
		}
	}
	tmp, err := os.MkdirTemp("", "blastradius-kind-delete-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	return p.Delete(name, filepath.Join(tmp, "kubeconfig"))
}
