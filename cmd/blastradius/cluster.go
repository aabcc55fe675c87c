//go:build !nokube

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"blastradius.dev/blastradius/framework/cluster"
	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/cluster/localk8s"
	"blastradius.dev/blastradius/internal/oneline"
)

const clusterStatusTimeout = 10 * time.Second

const clusterUsage = `Usage: blastradius cluster up|down|status|load-image --provider local-k8s [flags]
       blastradius cluster down --provider kind [--kind-config kind-config.yaml]

Brings up, tears down or shows a local multi-node Kubernetes cluster on this
machine (root; no container engine or registry needed): the control plane as
host processes, each node a network namespace with its own containerd,
kubelet and kube-proxy (docs/local-k8s.md). up prints the kubeconfig for
  blastradius run --provider kubeconfig --kubeconfig <path>
load-image imports image archives (make images) into every node.
With --provider kind, down deletes the kind cluster the kind config names
(what a killed run left behind; a run's own clean-up does the same).

Flags:
`

func clusterCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, clusterUsage)
			return 0
		}
		fmt.Fprintln(stderr, "blastradius cluster: want a subcommand: up, down, status or load-image (blastradius cluster --help)")
		return 2
	}
	sub := args[0]
	switch sub {
	case "up", "down", "status", "load-image":
	default:
		fmt.Fprintf(stderr, "blastradius cluster: unknown subcommand %q: want up, down, status or load-image\n", sub)
		return 2
	}
	fs := flag.NewFlagSet("blastradius cluster "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	provider := fs.String("provider", "", "cluster provider: local-k8s (up, down, status, load-image) or kind (down: delete a kind cluster, e.g. one a killed run left behind)")
	kindConfig := fs.String("kind-config", "kind-config.yaml", "--provider kind: the kind config naming the cluster to delete")
	dir := fs.String("dir", defaultLocalK8sDir, "cluster directory: certificates, kubeconfig, etcd, node state, logs, state file")
	nodes := fs.Int("nodes", localk8s.DefaultNodes, fmt.Sprintf("up: number of kubelet nodes, 1..%d", localk8s.MaxNodes))
	binDir := fs.String("bin-dir", defaultLocalK8sBinDir, "up: etcd and the Kubernetes binaries (make k8s-bins)")
	readyTimeout := fs.Duration("ready-timeout", localk8s.DefaultReadyTimeout, "up: how long to wait for every node to be Ready")
	var images []string
	fs.Func("load-image", "up, load-image: an image archive to import into every node (docker-archive, e.g. bin/blastradius-image.tar from make images); repeatable", func(v string) error {
		images = append(images, v)
		return nil
	})
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, clusterUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "blastradius cluster %s: %v\n", sub, err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "blastradius cluster %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stdout, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.0")}, a...)...)
	}
	switch {
	case *provider == "kind" && sub == "down":
		cfg, err := cluster.LoadKindConfig(*kindConfig)
		if err != nil {
			fmt.Fprintf(stderr, "blastradius cluster down: %v\n", oneline.Fold(err.Error(), 0))
			return 2
		}
		if err := kube.DeleteKind(kube.KindName(cfg), logf); err != nil {
			fmt.Fprintf(stderr, "blastradius cluster down: %v\n", oneline.Fold(err.Error(), 0))
			return 1
		}
		return 0
	case *provider == "kind":
		fmt.Fprintf(stderr, "blastradius cluster %s: --provider kind has only down (kind clusters are created by run --provider kind)\n", sub)
		return 2
	case *provider != "local-k8s":
		fmt.Fprintf(stderr, "blastradius cluster %s: --provider local-k8s or kind is required\n", sub)
		return 2
	}
	if *nodes < 1 || *nodes > localk8s.MaxNodes {
		fmt.Fprintf(stderr, "blastradius cluster %s: --nodes %d out of range 1..%d\n", sub, *nodes, localk8s.MaxNodes)
		return 2
	}
	switch sub {
	case "up":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		c, err := localk8s.Up(ctx, localk8s.Config{Dir: *dir, Nodes: *nodes, BinDir: *binDir, ReadyTimeout: *readyTimeout, Logf: logf})
		if err != nil {
			fmt.Fprintf(stderr, "blastradius cluster up: %v\n", err)
			return 1
		}
		for _, img := range images {
			if err := c.LoadImage(ctx, img); err != nil {
				// The cluster is up and stays up: the image can be loaded
				// again with load-image.
				fmt.Fprintf(stderr, "blastradius cluster up: %v\n", err)
				return 1
			}
		}
		fmt.Fprintf(stdout, "\nnodes: %s\nkubeconfig: %s\n  blastradius run --provider kubeconfig --kubeconfig %s ...\n  KUBECONFIG=%s kubectl get nodes\ntear down: blastradius cluster down --provider local-k8s --dir %s\n",
			strings.Join(c.Nodes, ", "), c.Kubeconfig, c.Kubeconfig, c.Kubeconfig, *dir)
		return 0
	case "down":
		if err := localk8s.DownLogf(*dir, logf); err != nil {
			fmt.Fprintf(stderr, "blastradius cluster down: %v\n", err)
			return 1
		}
		return 0
	case "status":
		return clusterStatus(*dir, stdout, stderr)
	case "load-image":
		if len(images) == 0 {
			fmt.Fprintln(stderr, "blastradius cluster load-image: give --load-image <archive> (make images writes bin/blastradius-image.tar)")
			return 2
		}
		c, err := localk8s.Open(*dir, logf)
		if err != nil {
			fmt.Fprintf(stderr, "blastradius cluster load-image: %v\n", err)
			return 1
		}
		for _, img := range images {
			if err := c.LoadImage(context.Background(), img); err != nil {
				fmt.Fprintf(stderr, "blastradius cluster load-image: %v\n", err)
				return 1
			}
		}
		return 0
	}
	return 2 // not reached: sub was checked above
}

// clusterStatus prints the processes and each node's Ready condition;
// exit 0 only if every process runs and every node is Ready.
func clusterStatus(dir string, stdout, stderr io.Writer) int {
	st, err := localk8s.ReadStatus(dir)
	if err != nil {
		fmt.Fprintf(stderr, "blastradius cluster status: %v\n", err)
		return 1
	}
	ok := true
	fmt.Fprintf(stdout, "cluster %s (up since %s)\nkubeconfig: %s\n", st.Dir, st.Created.Local().Format(time.DateTime), st.Kubeconfig)
	for _, p := range st.Processes {
		state := "running"
		if !p.Running {
			state, ok = "NOT RUNNING", false
		}
		fmt.Fprintf(stdout, "  %-24s pid %-7d %s\n", p.Name, p.Pid, state)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterStatusTimeout)
	defer cancel()
	c, err := localk8s.Open(dir, nil)
	if err != nil {
		fmt.Fprintf(stderr, "blastradius cluster status: %v\n", err)
		return 1
	}
	for _, n := range c.Nodes {
		ready, err := c.NodeReady(ctx, n)
		if err != nil {
			ready = "? (" + err.Error() + ")"
		}
		if ready != "True" {
			ok = false
		}
		ip, _ := c.NodeIP(n)
		fmt.Fprintf(stdout, "  node %-10s %-12s Ready=%s\n", n, ip, ready)
	}
	if !ok {
		return 1
	}
	return 0
}
