package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	kindcluster "sigs.k8s.io/kind/pkg/cluster"
	"sigs.k8s.io/kind/pkg/cluster/nodes"
	"sigs.k8s.io/kind/pkg/cluster/nodeutils"
	kindexec "sigs.k8s.io/kind/pkg/exec"
)

// DefaultImageLoadTimeout bounds loading the image into one node when the
// caller's context has no deadline: the archive is a few MiB from local disk,
// so minutes mean containerd is stuck.
const DefaultImageLoadTimeout = 2 * time.Minute

// LoadImageIntoKind loads the docker-archive at archivePath (`make images`:
// bin/blastradius-image.tar) into the containerd of every node of the kind
// cluster clusterName, as `kind load image-archive` does, with kind's own
// nodeutils.LoadImageArchive. Nodes are loaded one after the other with a
// progress line each; the first failure stops it with an error naming the
// node. Each node has DefaultImageLoadTimeout unless ctx ends sooner, and
// the commands run on the node end with the deadline.
func LoadImageIntoKind(ctx context.Context, provider *kindcluster.Provider, clusterName, archivePath string, logf func(string, ...any)) error {
	if err := checkArchive(archivePath); err != nil {
		return err
	}
	list, err := provider.ListInternalNodes(clusterName)
	if err != nil {
		return fmt.Errorf("load image into kind cluster %q: list nodes: %w", clusterName, err)
	}
	if len(list) == 0 {
		return fmt.Errorf("load image into kind cluster %q: the cluster has no nodes (does it exist?)", clusterName)
	}
	return loadIntoNodes(ctx, list, archivePath, logf, nodeutils.LoadImageArchive)
}

// loadIntoNodes is LoadImageIntoKind's loop, with the loader injectable: the
// tests drive kind's real loader over fake nodes.
func loadIntoNodes(ctx context.Context, list []nodes.Node, archivePath string, logf func(string, ...any),
	load func(nodes.Node, io.Reader) error) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	for i, n := range list {
		start := time.Now()
		logf("image %s: loading into node %s (%d/%d)", archivePath, n, i+1, len(list))
		if err := loadIntoNode(ctx, n, archivePath, load); err != nil {
			return fmt.Errorf("load image %s into node %s: %w", archivePath, n, flatErr(err))
		}
		logf("image %s: loaded into node %s in %s", archivePath, n, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func loadIntoNode(ctx context.Context, n nodes.Node, archivePath string, load func(nodes.Node, io.Reader) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultImageLoadTimeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(archivePath)
	if err != nil {
		return err
	}
	defer f.Close()
	// kind's loader runs plain Commands, which have no deadline; the wrapper
	// makes them CommandContexts, so the deadline ends them.
	err = load(ctxNode{Node: n, ctx: ctx}, f)
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// ctxNode is a kind node whose commands all run under ctx.
type ctxNode struct {
	nodes.Node
	ctx context.Context
}

func (n ctxNode) Command(name string, args ...string) kindexec.Cmd {
	return n.Node.CommandContext(n.ctx, name, args...)
}

// CtrTimeout bounds ImportImageWithCtr when the caller's context has no
// deadline.
const CtrTimeout = DefaultImageLoadTimeout

// runCtr runs a command and returns its combined output; tests replace it.
var runCtr = func(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// ctrImportArgs is the command line that imports archive into the k8s.io
// namespace (the one the kubelet's CRI uses) of the containerd at address.
func ctrImportArgs(address, archivePath string) []string {
	return []string{"--address", address, "-n", "k8s.io", "images", "import", archivePath}
}

// ImportImageWithCtr imports the docker-archive at archivePath into a plain
// containerd node (not kind): `ctr --address <address> -n k8s.io images
// import <archive>`, with ctrBinary ("" = ctr on PATH) and a deadline of
// CtrTimeout unless ctx ends sooner. The error is one line: the command, and
// ctr's last line of output.
func ImportImageWithCtr(ctx context.Context, ctrBinary, address, archivePath string) error {
	if ctrBinary == "" {
		ctrBinary = "ctr"
	}
	if address == "" {
		return errors.New("ctr images import: no containerd address (e.g. /run/containerd/containerd.sock)")
	}
	if err := checkArchive(archivePath); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, CtrTimeout)
		defer cancel()
	}
	args := ctrImportArgs(address, archivePath)
	out, err := runCtr(ctx, ctrBinary, args...)
	if err == nil {
		return nil
	}
	cmd := ctrBinary + " " + strings.Join(args, " ")
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	if last := lastLine(out); last != "" {
		err = fmt.Errorf("%w: %s", err, last)
	}
	return fmt.Errorf("%s: %w", cmd, flatErr(err))
}

// checkArchive says clearly what is wrong with the archive path before any
// node is touched.
func checkArchive(archivePath string) error {
	if archivePath == "" {
		return errors.New("image archive: no path given (make images writes bin/blastradius-image.tar)")
	}
	st, err := os.Stat(archivePath)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("image archive %s does not exist (make images writes it)", archivePath)
	}
	if err != nil {
		return fmt.Errorf("image archive: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("image archive %s is not a regular file", archivePath)
	}
	if st.Size() == 0 {
		return fmt.Errorf("image archive %s is empty", archivePath)
	}
	return nil
}

// flatErr flattens an error to one line, adding the last line of a kind
// RunError's output (the useful part, which its message leaves out). The
// result still wraps err, so errors.Is finds a deadline.
func flatErr(err error) error {
	msg := err.Error()
	var re *kindexec.RunError
	if errors.As(err, &re) {
		if last := lastLine(re.Output); last != "" {
			msg += ": " + last
		}
	}
	return lineError{msg: strings.Join(strings.Fields(msg), " "), err: err}
}

type lineError struct {
	msg string
	err error
}

func (e lineError) Error() string { return e.msg }
func (e lineError) Unwrap() error { return e.err }

// lastLine is the last non-blank line of a command's output.
func lastLine(out []byte) string {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	return strings.TrimSpace(string(lines[len(lines)-1]))
}
