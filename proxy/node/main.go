package node

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/internal/promtext"
	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/netnsx"
	"blastradius.dev/blastradius/proxy/xds"
)

// DefaultMark is the socket mark of the proxy's own connections.
const DefaultMark = 0x539

type mainFlags struct {
	mode, node, cp, inpodPath, podUID, podIP, admin, handoff, readyFile string
	mark                                                                uint64
	drain, connectTimeout, configWait                                   time.Duration
}

// Main is `blastradius proxy`, and `blastradius proxy ztunnel` as the ztunnel
// chart runs it (see ztunnelMain).
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "ztunnel" {
		return ztunnelMain(args[1:], os.Getenv, stderr)
	}
	fs := flag.NewFlagSet("blastradius proxy", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := mainFlags{}
	fs.StringVar(&f.mode, "mode", "node", "node (one proxy per node, pods handed over by the node agent), sidecar (serves the pod it runs in) or waypoint (L7 proxy for services bound to it)")
	fs.StringVar(&f.node, "node", "", "node name, reported to the control plane")
	fs.StringVar(&f.cp, "control-plane", "", "control plane address ip:port (discovery and CA)")
	fs.StringVar(&f.inpodPath, "inpod", "@blastradius-inpod", "node mode: the node agent's unix socket (@name = abstract)")
	fs.StringVar(&f.podUID, "pod", "", "sidecar and waypoint mode: UID of the pod it runs in (namespace/name)")
	fs.StringVar(&f.podIP, "pod-ip", "", "sidecar mode: the pod's IP")
	fs.StringVar(&f.admin, "admin", ":15020", "admin listener: /ready, /metrics, /config_dump")
	fs.Uint64Var(&f.mark, "mark", DefaultMark, "socket mark of the proxy's own connections (the redirect rules skip it)")
	fs.DurationVar(&f.drain, "drain-deadline", 5*time.Second, "on SIGTERM, how long established connections may finish before they are closed")
	fs.StringVar(&f.handoff, "handoff", HandoffMigrate, "graceful restart strategy: migrate (tcp_migrate_req moves queued connections to the new proxy) or none")
	fs.StringVar(&f.readyFile, "ready-file", "", "write this file once ready (lets a graceful restart wait for the new proxy)")
	fs.DurationVar(&f.connectTimeout, "connect-timeout", 2*time.Second, "upstream connect timeout")
	fs.DurationVar(&f.configWait, "config-wait", 5*time.Second, "how long a connection waits for a first configuration before it is reset")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "blastradius proxy: %v\n", err)
		return 2
	}
	// A word the flags do not take would otherwise be dropped silently
	// ("blastradius proxy --node n1 ztunnel" is not ztunnel mode).
	if fs.NArg() > 0 {
		hint := ""
		if fs.Arg(0) == "ztunnel" {
			hint = ` (ztunnel mode is "blastradius proxy ztunnel [flags]", the word first)`
		}
		fmt.Fprintf(stderr, "blastradius proxy: unexpected argument %q%s\n", fs.Arg(0), hint)
		return 2
	}
	if err := f.validate(); err != nil {
		fmt.Fprintf(stderr, "blastradius proxy: %v\n", err)
		return 2
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s proxy[%s]: %s\n", time.Now().Format("15:04:05.000"), f.mode, fmt.Sprintf(format, a...))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if f.mode == "waypoint" {
		return runWaypoint(ctx, f, logf, stderr)
	}
	return runProxy(ctx, f, logf, stderr)
}

func (f *mainFlags) validate() error {
	switch f.mode {
	case "node", "sidecar", "waypoint":
	default:
		return fmt.Errorf("--mode %q unknown (node, sidecar, waypoint)", f.mode)
	}
	if _, err := netip.ParseAddrPort(f.cp); err != nil {
		return fmt.Errorf("--control-plane %q: want ip:port", f.cp)
	}
	if f.node == "" {
		return errors.New("--node is required")
	}
	if f.mode != "node" && f.podUID == "" {
		return fmt.Errorf("--pod is required in %s mode", f.mode)
	}
	if f.mode == "sidecar" {
		if _, err := netip.ParseAddr(f.podIP); err != nil {
			return fmt.Errorf("--pod-ip %q is not an IP", f.podIP)
		}
	}
	return checkRuntimeFlags(f.handoff, f.mark, f.drain, f.connectTimeout, f.configWait)
}

// inpodHandler adapts the node agent protocol to the proxy.
//
// When the connection to the node agent drops, the proxy keeps serving every
// pod it has (their namespaces are open descriptors it holds) and inpod.Run
// reconnects with back-off, as ztunnel does when istio-cni restarts. The
// agent's snapshot on reconnection re-adds the pods it still knows (a no-op
// for an unchanged pod, see Proxy.AddPod); once it is complete, pods it did
// not mention were deleted while the proxy was disconnected and are dropped
// (ztunnel's reconciliation).
type inpodHandler struct {
	p    *Proxy
	logf func(string, ...any)
	done atomic.Bool
	// seen holds the pods added on the current connection. Handler methods
	// and Disconnected are called one at a time by inpod.Run, so it needs
	// no lock.
	seen     map[string]bool
	snapshot bool // the current connection's snapshot is complete
}

func (h *inpodHandler) Add(uid string, nsFD int, info *zdsapi.WorkloadInfo) error {
	ip, err := netnsx.PodIP(nsFD)
	if err != nil {
		closeFD(nsFD)
		return fmt.Errorf("pod %s (%s/%s): %w", uid, info.GetNamespace(), info.GetName(), err)
	}
	if h.seen == nil {
		h.seen = map[string]bool{}
	}
	h.seen[uid] = true
	meta := podMeta{name: info.GetName(), namespace: info.GetNamespace(), serviceAccount: info.GetServiceAccount()}
	return h.p.addPod(uid, meta, nsFD, ip)
}

// Keep marks a pod the agent still knows but could not hand over again
// (its namespace was not found after the agent restarted): it survives the
// snapshot if the proxy has it. One the proxy does not have cannot be served
// without its namespace; as ztunnel does, the keep is acked and changes
// nothing.
func (h *inpodHandler) Keep(uid string) error {
	if !slices.Contains(h.p.Pods(), uid) {
		h.logf("node agent keeps pod %s, which this proxy does not serve", uid)
		return nil
	}
	if h.seen == nil {
		h.seen = map[string]bool{}
	}
	h.seen[uid] = true
	return nil
}

func (h *inpodHandler) Del(uid string) error {
	delete(h.seen, uid)
	h.p.DelPod(uid)
	return nil
}

func (h *inpodHandler) SnapshotDone() {
	if !h.snapshot {
		h.snapshot = true
		for _, uid := range h.p.Pods() {
			if !h.seen[uid] {
				h.logf("pod %s not in the node agent's snapshot: deleted while disconnected, dropping it", uid)
				h.p.DelPod(uid)
			}
		}
	}
	h.done.Store(true)
}

// Disconnected implements inpod.DisconnectHandler: the pods stay served, and
// the next connection starts a new snapshot.
func (h *inpodHandler) Disconnected(err error) {
	if h.snapshot || len(h.seen) > 0 {
		h.logf("node agent connection lost (%v); serving %d pods, reconnecting", err, len(h.p.Pods()))
	}
	h.seen, h.snapshot = nil, false
}

func runProxy(ctx context.Context, f mainFlags, logf func(string, ...any), stderr io.Writer) int {
	var px *Proxy
	client, err := xds.NewClient(f.cp, f.node, xds.WithLogf(logf), markedDial(f), xds.WithOnUpdate(func(s xds.Snapshot) {
		px.SetSnapshot(s)
		logf("config %s: %d workloads, %d services, %d policies", s.Version, len(s.Workloads), len(s.Services), len(s.Policies))
	}))
	if err != nil {
		fmt.Fprintf(stderr, "blastradius proxy: %v\n", err)
		return 1
	}
	defer client.Close()
	px = New(Options{Node: f.node, Mark: uint32(f.mark), ConnectTimeout: f.connectTimeout, ConfigWait: f.configWait,
		Handoff: f.handoff, Logf: logf}, client.Sign, client.RootPEM)
	go func() { _ = client.Run(ctx) }()

	h := &inpodHandler{p: px, logf: logf}
	switch f.mode {
	case "node":
		go func() { _ = inpod.Run(ctx, f.inpodPath, h) }()
	case "sidecar":
		fd, err := syscall.Open("/proc/self/ns/net", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			fmt.Fprintf(stderr, "blastradius proxy: own netns: %v\n", err)
			return 1
		}
		if err := px.AddPod(f.podUID, fd, netip.MustParseAddr(f.podIP)); err != nil {
			fmt.Fprintf(stderr, "blastradius proxy: %v\n", err)
			return 1
		}
		h.done.Store(true)
	}
	ready := readyFunc(px, h)
	adminLn, err := netnsx.ListenTCP(-1, adminAddr(f.admin), netnsx.ListenOptions{ReusePort: true})
	if err != nil {
		fmt.Fprintf(stderr, "blastradius proxy: admin: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: px.adminMux(f, client, ready), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(adminLn) }()
	go watchReady(ctx, f.readyFile, ready, logf)
	logf("started on %s", f.node)

	<-ctx.Done()
	logf("draining (deadline %s)", f.drain)
	if f.readyFile != "" {
		os.Remove(f.readyFile)
	}
	closed := px.Drain(f.drain)
	logf("drained; %d connections closed at the deadline", closed)
	_ = srv.Close()
	return 0
}

// readyFunc is the proxy's readiness: it has a configuration and the node
// agent's pods (in sidecar mode, its own pod).
func readyFunc(px *Proxy, h *inpodHandler) func() (bool, string) {
	return func() (bool, string) {
		switch {
		case px.Index() == nil:
			return false, "no configuration from the control plane yet"
		case !h.done.Load():
			return false, "pods not yet received from the node agent"
		}
		return true, "ready"
	}
}

// markedDial makes the control plane connection carry the mark: as a sidecar
// the proxy shares its pod's redirect rules and would otherwise capture its
// own traffic.
func markedDial(f mainFlags) xds.ClientOption {
	return xds.WithDialOptions(grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return netnsx.DialTCP(ctx, -1, addr, uint32(f.mark), f.connectTimeout)
	}))
}

func adminAddr(a string) string {
	if len(a) > 0 && a[0] == ':' {
		return "0.0.0.0" + a
	}
	return a
}

// watchReady writes the ready file the first time the proxy is ready.
func watchReady(ctx context.Context, path string, ready func() (bool, string), logf func(string, ...any)) {
	for {
		if ok, _ := ready(); ok {
			logf("ready")
			if path != "" {
				if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
					logf("ready file: %v", err)
				}
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readyHandler answers 200 once ready() holds, 503 with the reason before.
func readyHandler(ready func() (bool, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		ok, why := ready()
		if !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, why)
	}
}

// metricsHandler serves the proxy's metrics in Prometheus text format.
func (p *Proxy) metricsHandler(node, mode string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		writeMetrics(w, promtext.L("node", node, "mode", mode), &p.Metrics, &p.HBONEIn, &p.HBONEOut)
	}
}

// discoveryState is what /config_dump reports of a discovery client
// (xds.Client or xds.DeltaClient).
type discoveryState interface {
	Connected() bool
	LastNack() string
}

func (p *Proxy) adminMux(f mainFlags, client discoveryState, ready func() (bool, string)) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", readyHandler(ready))
	mux.HandleFunc("/metrics", p.metricsHandler(f.node, f.mode))
	// Profiles of a live proxy, for performance work (docs/performance.md).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/config_dump", func(w http.ResponseWriter, _ *http.Request) {
		dump := map[string]any{"mode": f.mode, "node": f.node, "controlPlaneConnected": client.Connected(),
			"lastNack": client.LastNack()}
		pods := p.Pods()
		sort.Strings(pods)
		dump["pods"] = pods
		dump["certificates"] = p.CertExpiries()
		if ix := p.Index(); ix != nil {
			dump["config"] = ix.Snap
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(dump)
	})
	return mux
}

// checkRuntimeFlags checks the flags every mode of the node proxy shares
// (the reference modes and the ztunnel mode).
func checkRuntimeFlags(handoff string, mark uint64, drain, connectTimeout, configWait time.Duration) error {
	if handoff != HandoffMigrate && handoff != HandoffNone {
		return fmt.Errorf("--handoff %q unknown (migrate, none)", handoff)
	}
	if mark == 0 || mark > 0xffffffff {
		return fmt.Errorf("--mark %d out of range", mark)
	}
	if drain < 0 || connectTimeout <= 0 || configWait <= 0 {
		return errors.New("durations must be positive")
	}
	return nil
}
