package node

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/netnsx"
	"blastradius.dev/blastradius/proxy/xds"
)

// What the ztunnel chart mounts into its container, and the ports its probe
// and its Prometheus annotations name.
const (
	ZtunnelTokenFile = "/var/run/secrets/tokens/istio-token"  // projected token, audience istio-ca
	ZtunnelRootCert  = "/var/run/secrets/istio/root-cert.pem" // ConfigMap istio-ca-root-cert
	ZtunnelZDSSocket = "/var/run/ztunnel/ztunnel.sock"        // istio-cni's ZDS socket (hostPath)
	ZtunnelReadyAddr = ":15021"                               // readinessProbe: /healthz/ready
	ZtunnelStatsAddr = ":15020"                               // containerPort ztunnel-stats
)

const ztunnelName = "blastradius proxy ztunnel" // prefix of its error lines

// ztunnelConfig is the node proxy's configuration in ztunnel mode: the
// chart's environment, each value overridable by a flag.
type ztunnelConfig struct {
	xdsAddr, caAddr                                 string
	podName, podNamespace, node, instanceIP         string
	serviceAccount, clusterID                       string
	tokenFile, rootCert, zdsSocket                  string
	readyAddr, statsAddr, admin, readyFile, handoff string
	mark                                            uint64
	drain, connectTimeout, configWait               time.Duration
	secretTTL                                       time.Duration
	inpodEnabled                                    string
}

// ztunnelDrain is ztunnel's drain deadline on SIGTERM: CONNECTION_TERMINATION_DEADLINE,
// else a little less than the pod's grace period (TERMINATION_GRACE_PERIOD_SECONDS,
// which the chart sets from terminationGracePeriodSeconds): 5 s less above 10 s, 1 s
// less below, at least 1 s, so that what is left is closed before the kubelet's
// SIGKILL. Neither set: the tool's own 5 s.
func ztunnelDrain(getenv func(string) string) (time.Duration, error) {
	if v := getenv("CONNECTION_TERMINATION_DEADLINE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("CONNECTION_TERMINATION_DEADLINE %q: want a positive duration", v)
		}
		return d, nil
	}
	v := getenv("TERMINATION_GRACE_PERIOD_SECONDS")
	if v == "" {
		return 5 * time.Second, nil
	}
	secs, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("TERMINATION_GRACE_PERIOD_SECONDS %q: want whole seconds", v)
	}
	if secs > 10 {
		secs -= 5
	} else if secs > 0 {
		secs--
	}
	return time.Duration(max(secs, 1)) * time.Second, nil
}

// parseZtunnel reads the chart's environment through getenv and the flags
// in args, which override it. It touches no file: the token and root are
// read when the clients are built (ztunnelConfig.clients).
func parseZtunnel(args []string, getenv func(string) string) (ztunnelConfig, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(ztunnelName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	z := ztunnelConfig{}
	env := func(p *string, name, envName, def, usage string) {
		v := getenv(envName)
		if v == "" {
			v = def
		}
		fs.StringVar(p, name, v, usage+" (env "+envName+")")
	}
	env(&z.xdsAddr, "xds-address", "XDS_ADDRESS", "", "istiod's discovery address host:port; TLS verified with --root-cert for the host's name")
	env(&z.caAddr, "ca-address", "CA_ADDRESS", "", "istiod's CA address host:port; empty means --xds-address, as ztunnel does")
	env(&z.podName, "pod-name", "POD_NAME", "", "this proxy's pod name (node id, metadata NAME)")
	env(&z.podNamespace, "pod-namespace", "POD_NAMESPACE", "", "this proxy's pod namespace; istiod requires it to be the token's")
	env(&z.node, "node", "NODE_NAME", "", "the Kubernetes node this proxy serves")
	env(&z.instanceIP, "instance-ip", "INSTANCE_IP", "", "this proxy's pod IP (node id, metadata INSTANCE_IPS)")
	env(&z.serviceAccount, "service-account", "SERVICE_ACCOUNT", "", "this proxy's service account (only logged)")
	clusterEnv := "ISTIO_META_CLUSTER_ID"
	if getenv(clusterEnv) == "" && getenv("CLUSTER_ID") != "" {
		clusterEnv = "CLUSTER_ID"
	}
	// Kubernetes is istiod's and ztunnel's own default.
	env(&z.clusterID, "cluster-id", clusterEnv, xds.DefaultIstioClusterID, "cluster id sent to istiod (ClusterID header and metadata); CLUSTER_ID is read when ISTIO_META_CLUSTER_ID is unset")
	env(&z.inpodEnabled, "inpod-enabled", "INPOD_ENABLED", "", "in-pod mode, the only one supported: true or unset")
	fs.StringVar(&z.tokenFile, "token-file", ZtunnelTokenFile, "service-account token (audience istio-ca), read at every stream and certificate")
	fs.StringVar(&z.rootCert, "root-cert", ZtunnelRootCert, "root istiod's serving certificate chains to; also a mesh root for peers")
	fs.StringVar(&z.zdsSocket, "zds-socket", ZtunnelZDSSocket, "istio-cni's ZDS socket (@name = abstract)")
	fs.StringVar(&z.readyAddr, "ready-addr", ZtunnelReadyAddr, "readiness listener: /healthz/ready")
	fs.StringVar(&z.statsAddr, "stats-addr", ZtunnelStatsAddr, "stats listener: /metrics and /stats/prometheus")
	fs.StringVar(&z.admin, "admin", "", "reference admin listener (/ready, /metrics, /config_dump, /debug/pprof/); off unless given")
	fs.Uint64Var(&z.mark, "mark", DefaultMark, "socket mark of the proxy's own connections in pods (istio-cni's rules skip 0x539)")
	drain, err := ztunnelDrain(getenv)
	if err != nil {
		return z, fs, err
	}
	fs.DurationVar(&z.drain, "drain-deadline", drain, "on SIGTERM, how long established connections may finish before they are closed (env CONNECTION_TERMINATION_DEADLINE, else TERMINATION_GRACE_PERIOD_SECONDS less a margin, as ztunnel)")
	ttl := 24 * time.Hour // ztunnel's default
	if v := getenv("SECRET_TTL"); v != "" {
		if ttl, err = time.ParseDuration(v); err != nil || ttl < time.Second {
			return z, fs, fmt.Errorf("SECRET_TTL %q: want a duration of at least 1s", v)
		}
	}
	fs.DurationVar(&z.secretTTL, "secret-ttl", ttl, "workload certificate lifetime asked of the CA (env SECRET_TTL; istiod caps it with MAX_WORKLOAD_CERT_TTL)")
	fs.StringVar(&z.handoff, "handoff", HandoffMigrate, "graceful restart strategy: migrate or none")
	fs.StringVar(&z.readyFile, "ready-file", "", "write this file once ready")
	fs.DurationVar(&z.connectTimeout, "connect-timeout", 2*time.Second, "upstream connect timeout")
	fs.DurationVar(&z.configWait, "config-wait", 5*time.Second, "how long a connection waits for a first configuration before it is reset")
	if err := fs.Parse(args); err != nil {
		return z, fs, err
	}
	if fs.NArg() > 0 {
		return z, fs, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if z.caAddr == "" {
		z.caAddr = z.xdsAddr
	}
	return z, fs, z.validate()
}

func (z *ztunnelConfig) validate() error {
	required := []struct{ val, env, flag string }{
		{z.xdsAddr, "XDS_ADDRESS", "--xds-address"},
		{z.podName, "POD_NAME", "--pod-name"},
		{z.podNamespace, "POD_NAMESPACE", "--pod-namespace"},
		{z.node, "NODE_NAME", "--node"},
		{z.instanceIP, "INSTANCE_IP", "--instance-ip"},
	}
	for _, r := range required {
		// No default would be right: a guessed namespace or IP makes
		// istiod refuse the proxy, or take it for another one.
		if strings.TrimSpace(r.val) == "" {
			return fmt.Errorf("%s is not set (the ztunnel chart sets it from the pod); or give %s", r.env, r.flag)
		}
	}
	if err := checkHostPort("--xds-address (XDS_ADDRESS)", z.xdsAddr, false); err != nil {
		return err
	}
	if err := checkHostPort("--ca-address (CA_ADDRESS)", z.caAddr, false); err != nil {
		return err
	}
	ip, err := netip.ParseAddr(z.instanceIP)
	if err != nil {
		return fmt.Errorf("--instance-ip (INSTANCE_IP) %q is not an IP address", z.instanceIP)
	}
	z.instanceIP = ip.String()
	if z.inpodEnabled != "" {
		on, err := strconv.ParseBool(z.inpodEnabled)
		switch {
		case err != nil:
			return fmt.Errorf("--inpod-enabled (INPOD_ENABLED) %q: want true or false", z.inpodEnabled)
		case !on:
			return errors.New("INPOD_ENABLED is false: only in-pod mode (pods handed over by istio-cni) is supported")
		}
	}
	if strings.TrimSpace(z.clusterID) == "" {
		return errors.New("--cluster-id is empty")
	}
	for _, p := range []struct{ name, val string }{{"--token-file", z.tokenFile}, {"--root-cert", z.rootCert}, {"--zds-socket", z.zdsSocket}} {
		if p.val == "" {
			return fmt.Errorf("%s is empty", p.name)
		}
	}
	if err := checkHostPort("--ready-addr", z.readyAddr, true); err != nil {
		return err
	}
	if err := checkHostPort("--stats-addr", z.statsAddr, true); err != nil {
		return err
	}
	if z.admin != "" {
		if err := checkHostPort("--admin", z.admin, true); err != nil {
			return err
		}
	}
	if p := listenPort(z.readyAddr); p != "0" && p == listenPort(z.statsAddr) {
		return fmt.Errorf("--ready-addr %s and --stats-addr %s share a port", z.readyAddr, z.statsAddr)
	}
	return checkRuntimeFlags(z.handoff, z.mark, z.drain, z.connectTimeout, z.configWait)
}

// checkHostPort checks that v is host:port with a numeric port; listen
// addresses may leave the host empty (every address) and use port 0.
func checkHostPort(what, v string, listen bool) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil || (!listen && host == "") {
		return fmt.Errorf("%s %q: want host:port", what, v)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && !listen) {
		return fmt.Errorf("%s %q: port %q is not a port number", what, v, port)
	}
	return nil
}

func listenPort(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// clients builds the istiod discovery and CA clients as ztunnel connects:
// TLS verified with the mounted root for the address's host name, the
// mounted token as bearer, the cluster id as header. They do not dial yet.
func (z *ztunnelConfig) clients(logf func(string, ...any), onUpdate func(xds.Snapshot)) (*xds.DeltaClient, *ca.IstioCAClient, error) {
	// The clients read the token at each use (the kubelet rotates it);
	// an absent one at start is a mistake in the deployment, said now
	// rather than at every reconnection.
	b, err := os.ReadFile(z.tokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("service-account token: %v", err)
	}
	if strings.TrimSpace(string(b)) == "" {
		return nil, nil, fmt.Errorf("service-account token %s is empty", z.tokenFile)
	}
	disc, err := xds.NewDeltaClient(xds.DeltaConfig{
		Address: z.xdsAddr, RootFile: z.rootCert, TokenFile: z.tokenFile, ClusterID: z.clusterID,
		PodName: z.podName, PodNamespace: z.podNamespace, InstanceIPs: []string{z.instanceIP}, NodeName: z.node,
	}, xds.WithLogf(logf), xds.WithOnUpdate(onUpdate))
	if err != nil {
		return nil, nil, err
	}
	cac, err := ca.NewIstioCAClient(ca.IstioCAConfig{Address: z.caAddr, RootFile: z.rootCert, TokenFile: z.tokenFile, ClusterID: z.clusterID, Validity: z.secretTTL})
	if err != nil {
		disc.Close()
		return nil, nil, err
	}
	return disc, cac, nil
}

// meshRoots are the roots peers' certificates must chain to: the mounted
// istio-ca-root-cert (read each time, so a rotated ConfigMap is followed)
// and the root istiod sent with the last certificate (which a root rotation
// changes before the ConfigMap catches up).
func meshRoots(mounted, learned func() []byte) func() []byte {
	return func() []byte {
		out := mounted()
		if l := learned(); len(l) > 0 {
			out = append(append(out, '\n'), l...)
		}
		return out
	}
}

// testHookZtunnelListening, when set, is told the bound readiness and stats
// addresses (tests bind port 0).
var testHookZtunnelListening func(ready, stats net.Addr)

// ztunnelMain is `blastradius proxy ztunnel`: the node proxy as the ztunnel
// chart runs it, configured from getenv and args.
func ztunnelMain(args []string, getenv func(string) string, stderr io.Writer) int {
	z, fs, err := parseZtunnel(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", ztunnelName, err)
		return 2
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, "%s proxy[ztunnel]: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return runZtunnel(ctx, z, logf, stderr)
}

// runZtunnel serves until ctx ends, then drains. Configuration comes from
// istiod's delta xDS, certificates from istiod's CA, pods from istio-cni.
func runZtunnel(ctx context.Context, z ztunnelConfig, logf func(string, ...any), stderr io.Writer) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", ztunnelName, err)
		return code
	}
	var px *Proxy
	disc, cac, err := z.clients(logf, func(s xds.Snapshot) {
		px.SetSnapshot(s)
		logf("config %s: %d workloads, %d services, %d policies", s.Version, len(s.Workloads), len(s.Services), len(s.Policies))
	})
	if err != nil {
		return fail(2, err)
	}
	defer cac.Close()
	// Close wants Run returned; Run starts once the listeners are up.
	var discDone chan struct{}
	defer func() {
		if discDone != nil {
			<-discDone
		}
		disc.Close()
	}()
	px = New(Options{Node: z.node, Mark: uint32(z.mark), ConnectTimeout: z.connectTimeout, ConfigWait: z.configWait,
		Handoff: z.handoff, Logf: logf, MatchByIP: true, ClusterID: z.clusterID}, cac.Sign, meshRoots(disc.RootPEM, cac.RootPEM))
	h := &inpodHandler{p: px, logf: logf}
	ready := readyFunc(px, h)

	// Listeners first: a taken port is an error at once, before anything
	// connects to istiod or istio-cni.
	var servers []*http.Server
	defer func() {
		for _, s := range servers {
			_ = s.Close()
		}
	}()
	serve := func(what, addr string, handler http.Handler) (net.Addr, error) {
		ln, err := netnsx.ListenTCP(-1, adminAddr(addr), netnsx.ListenOptions{ReusePort: true})
		if err != nil {
			return nil, fmt.Errorf("%s listener: %w", what, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		go func() { _ = srv.Serve(ln) }()
		return ln.Addr(), nil
	}
	readyMux := http.NewServeMux()
	readyMux.HandleFunc("/healthz/ready", readyHandler(ready))
	readyAt, err := serve("readiness", z.readyAddr, readyMux)
	if err != nil {
		return fail(1, err)
	}
	statsMux := http.NewServeMux()
	metrics := px.metricsHandler(z.node, "ztunnel")
	statsMux.HandleFunc("/metrics", metrics)
	statsMux.HandleFunc("/stats/prometheus", metrics) // Istio's scrape path for its proxies
	statsAt, err := serve("stats", z.statsAddr, statsMux)
	if err != nil {
		return fail(1, err)
	}
	if z.admin != "" {
		if _, err := serve("admin", z.admin, px.adminMux(mainFlags{mode: "ztunnel", node: z.node}, disc, ready)); err != nil {
			return fail(1, err)
		}
	}
	if testHookZtunnelListening != nil {
		testHookZtunnelListening(readyAt, statsAt)
	}

	discDone = make(chan struct{})
	go func() { defer close(discDone); _ = disc.Run(ctx) }()
	go func() { _ = inpod.Run(ctx, z.zdsSocket, h) }()
	go watchReady(ctx, z.readyFile, ready, logf)
	logf("started on %s as %s/%s (%s, service account %q): xds %s, ca %s, cluster %s, zds %s; ready on %s, stats on %s",
		z.node, z.podNamespace, z.podName, z.instanceIP, z.serviceAccount, z.xdsAddr, z.caAddr, z.clusterID, z.zdsSocket, readyAt, statsAt)

	<-ctx.Done()
	logf("draining (deadline %s)", z.drain)
	if z.readyFile != "" {
		os.Remove(z.readyFile)
	}
	closed := px.Drain(z.drain)
	logf("drained; %d connections closed at the deadline", closed)
	return 0
}
