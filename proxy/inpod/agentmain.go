package inpod

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultProxyMark is the node proxy's default socket mark (its --mark,
// proxy/node.DefaultMark; a test in cmd/blastradius checks they agree). The
// redirect rules let that mark through, so the proxy's own connections are
// not redirected back to it.
const DefaultProxyMark = 0x539

// DefaultSocket is the node agent's socket: abstract, so it lives in the node
// proxy pod's network namespace, which the agent's container shares.
const DefaultSocket = "@blastradius-inpod"

// Exit codes of the commands below.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// parseFlags parses args; on -h it prints usage and the flags and reports
// done with exitOK, on a bad flag one line and exitUsage.
func parseFlags(fs *flag.FlagSet, args []string, usage string, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, usage)
			fs.PrintDefaults()
			return exitOK, true
		}
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return exitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, true
	}
	return 0, false
}

// NodeAgentMain is `blastradius node-agent`: the node agent of ambient mode
// on Kubernetes (NodeAgent), run in a privileged container of the node proxy
// pod with the host's /var/run/netns mounted. It runs until SIGTERM or
// SIGINT.
func NodeAgentMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("blastradius node-agent", flag.ContinueOnError)
	node := fs.String("node", "", "the node whose pods this agent serves (its pod's spec.nodeName; required)")
	sock := fs.String("inpod", DefaultSocket, "the unix socket the node proxy connects to (@name = abstract, in the shared pod network namespace)")
	netnsDir := fs.String("netns-dir", HostNetNSDir, "where the node's pod network namespaces are bind-mounted (the host's /var/run/netns)")
	mark := fs.Uint64("mark", DefaultProxyMark, "the node proxy's socket mark (its --mark): the redirect rules let it through")
	saDir := fs.String("service-account-dir", ServiceAccountDir, "the service account token and ca.crt used with the API server")
	apiServer := fs.String("api-server", "", "API server URL (https://host:port); empty: the cluster's own, from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT")
	resync := fs.Duration("resync", DefaultResync, "how often pods whose network namespace was not found are looked for again, and namespace labels re-read")
	reqTimeout := fs.Duration("request-timeout", DefaultRequestTimeout, "deadline of each list and get request to the API server")
	watchTimeout := fs.Duration("watch-timeout", DefaultWatchTimeout, "how long one watch lasts before it is renewed")
	label := fs.String("enrol-label", AmbientLabel, "the namespace or pod label that enrols pods when it is \"ambient\" (a pod's other value opts it out)")
	initial := fs.Duration("initial-sync-timeout", DefaultInitialSyncTimeout, "exit with an error if the first pod list does not succeed within this")
	if code, done := parseFlags(fs, args, "usage: blastradius node-agent --node NAME [--inpod @socket] [--netns-dir dir] [flags]", stderr); done {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintf(stderr, "blastradius node-agent: %s\n", strings.Join(strings.Fields(msg), " "))
		return code
	}
	switch {
	case *node == "":
		return fail(exitUsage, "--node is required")
	case *label == "":
		return fail(exitUsage, "--enrol-label is empty")
	case *sock == "" || *sock == "@":
		return fail(exitUsage, "--inpod %q: want a socket path or @name", *sock)
	case *mark == 0 || *mark > 0xffffffff:
		return fail(exitUsage, "--mark %d out of range (1..0xffffffff)", *mark)
	case *resync <= 0 || *reqTimeout <= 0 || *initial <= 0:
		return fail(exitUsage, "--resync, --request-timeout and --initial-sync-timeout must be positive")
	case *watchTimeout < time.Second:
		return fail(exitUsage, "--watch-timeout %v: at least 1s", *watchTimeout)
	}
	if st, err := os.Stat(*netnsDir); err != nil || !st.IsDir() {
		return fail(exitUsage, "--netns-dir %s: not a directory (mount the host's /var/run/netns there)", *netnsDir)
	}
	var api *KubeAPI
	var err error
	if *apiServer != "" {
		if u, perr := url.Parse(*apiServer); perr != nil || u.Scheme != "https" || u.Host == "" {
			return fail(exitUsage, "--api-server %q: want https://host:port", *apiServer)
		}
		api, err = ServiceAccountAPI(*apiServer, *saDir)
	} else {
		api, err = InClusterAPI(*saDir)
	}
	if err != nil {
		return fail(exitFailure, "%v", err)
	}
	api.RequestTimeout, api.WatchTimeout = *reqTimeout, *watchTimeout
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s node-agent[%s]: %s\n", time.Now().Format("15:04:05.000"), *node, fmt.Sprintf(format, a...))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	agent := &NodeAgent{API: api, Node: *node, Socket: *sock, NetNSDir: *netnsDir, Mark: uint32(*mark), Logf: logf, Label: *label,
		Resync: *resync, InitialSyncTimeout: *initial}
	logf("starting: API server %s, pods of node %s (enrolled by %s=ambient), namespaces in %s, socket %s", api.Base, *node, *label, *netnsDir, *sock)
	if err := agent.Run(ctx); err != nil {
		return fail(exitFailure, "%v", err)
	}
	logf("stopped")
	return exitOK
}

// RedirectMain is `blastradius redirect`: the sidecar-mode init container
// (istio-init's job). It installs the in-pod redirect rules, the same as the
// embedded provider installs for a sidecar, in the network namespace it runs
// in (or --netns), and exits. Running it again replaces the rules.
func RedirectMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("blastradius redirect", flag.ContinueOnError)
	mode := fs.String("mode", "sidecar", "data plane mode: sidecar (the proxy in the pod itself serves the redirected ports)")
	podIP := fs.String("pod-ip", "", "the pod's IPv4 address: inbound TCP to it is redirected (required; the manifests pass status.podIP)")
	mark := fs.Uint64("mark", DefaultProxyMark, "the proxy's socket mark (its --mark): the proxy's own connections are let through")
	netnsPath := fs.String("netns", "", "the network namespace to install the rules in; empty: the one this runs in")
	if code, done := parseFlags(fs, args, "usage: blastradius redirect --pod-ip IP [--mode sidecar] [--mark n] [--netns path]", stderr); done {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintf(stderr, "blastradius redirect: %s\n", strings.Join(strings.Fields(msg), " "))
		return code
	}
	if *mode != "sidecar" {
		return fail(exitUsage, "--mode %q unknown (sidecar; ambient pods are redirected by the node agent)", *mode)
	}
	if *podIP == "" {
		return fail(exitUsage, "--pod-ip is required")
	}
	ip, err := netip.ParseAddr(*podIP)
	if err != nil || !ip.Unmap().Is4() {
		return fail(exitUsage, "--pod-ip %q is not an IPv4 address", *podIP)
	}
	if *mark == 0 || *mark > 0xffffffff {
		return fail(exitUsage, "--mark %d out of range (1..0xffffffff)", *mark)
	}
	path := *netnsPath
	if path == "" {
		// thread-self: the namespace of the thread that opens it, which is
		// the process's (nothing here has switched).
		path = "/proc/thread-self/ns/net"
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		code := exitFailure
		if *netnsPath != "" {
			code = exitUsage
		}
		return fail(code, "open network namespace %s: %v", path, err)
	}
	defer unix.Close(fd)
	if err := checkNetNS(fd); err != nil {
		return fail(exitUsage, "--netns %s: not a network namespace", path)
	}
	apply := func() error { return ApplyRedirect(fd, ip.Unmap(), uint32(*mark)) }
	if *netnsPath == "" {
		apply = func() error { return applyInOwnNetNS(fd, ip.Unmap(), uint32(*mark)) }
	}
	if err := apply(); err != nil {
		return fail(exitFailure, "%v", err)
	}
	fmt.Fprintf(stdout, "blastradius redirect: %s mode, pod %v: outbound TCP to :%d, inbound TCP to :%d (except :%d, :%d, :%d, :%d), mark %#x let through (nftables table %s)\n",
		*mode, ip.Unmap(), OutboundPort, InboundPort, HBONEPort, OutboundPort, InboundPort, AdminPort, *mark, RedirectTable)
	return exitOK
}

// applyInOwnNetNS installs the redirect rules in the caller's own network
// namespace, of which fd is a descriptor, with no more than CAP_NET_ADMIN.
//
// ApplyRedirect has netlink enter the namespace it is given (setns), which
// needs CAP_SYS_ADMIN: an init container granted NET_ADMIN and NET_RAW, as
// istio-init is and manifests/sidecar.yaml's is, lacks it. Netlink enters no
// namespace for descriptor 0, which it takes to mean "where the caller is".
// So the namespace's own descriptor is put at 0 for the call: entering it and
// staying are then the same, whichever way netlink goes. Descriptor 0 is put
// back as it was after.
func applyInOwnNetNS(fd int, podIP netip.Addr, mark uint32) error {
	saved, err := unix.FcntlInt(0, unix.F_DUPFD_CLOEXEC, 3)
	hadZero := err == nil
	if err != nil && !errors.Is(err, unix.EBADF) {
		return fmt.Errorf("inpod: save descriptor 0: %w", err)
	}
	if err := unix.Dup3(fd, 0, 0); err != nil {
		if hadZero {
			unix.Close(saved)
		}
		return fmt.Errorf("inpod: descriptor 0: %w", err)
	}
	defer func() {
		if hadZero {
			unix.Dup3(saved, 0, 0)
			unix.Close(saved)
		} else {
			unix.Close(0)
		}
	}()
	return ApplyRedirect(0, podIP, mark)
}
