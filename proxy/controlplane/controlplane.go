// Package controlplane is the `blastradius controlplane` subcommand: the
// reference mesh's istiod. It serves workload discovery (xds) and the CA to
// the node proxies, reading the cluster state from a registry file that the
// harness rewrites as pods come and go.
package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"blastradius.dev/blastradius/internal/promtext"
	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/xds"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // run-time failure: cannot listen, CA files unusable, a server died
	exitUsage   = 2 // bad flags: nothing was started
)

// pollInterval is how often the registry file is stat'ed. Polling rather
// than inotify: it works the same on every filesystem the harness may use
// and 100ms is well below the resolution at which the suite measures.
const pollInterval = 100 * time.Millisecond

// shutdownGrace bounds GracefulStop; a proxy that stopped reading would
// otherwise hold the process forever.
const shutdownGrace = 5 * time.Second

// EnvCARootCert and EnvCARootKey, set together, hand the control plane its CA
// root (PEM certificate, PEM private key) from the process that starts it. The
// key then exists only in memory — the starter's and the control plane's —
// and a restarted control plane keeps the same root without a key file that
// would outlive the run in its results folder (the embedded cluster's runner
// does this). They are removed from the environment once read.
const (
	EnvCARootCert = "BLASTRADIUS_CA_ROOT_CERT"
	EnvCARootKey  = "BLASTRADIUS_CA_ROOT_KEY"
)

type config struct {
	listen, registry, trustDomain, admin, caDir string
	certTTL                                     time.Duration
}

const usageLine = "usage: blastradius controlplane --registry file [--listen addr] [--admin addr] [--trust-domain td] [--cert-ttl dur] [--ca-dir dir]"

// Main runs the control plane until SIGTERM/SIGINT. Exit status: 0 after a
// signal-initiated graceful stop, 1 on a run-time failure, 2 on bad flags
// (one line on stderr).
//
// On start it prints one line to stdout with the bound addresses (useful
// with port 0). Logs go to stderr.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	// The flag package would print the error and the whole usage; callers
	// keep logs and want one line.
	fs.SetOutput(io.Discard)
	var c config
	fs.StringVar(&c.listen, "listen", ":15010", "gRPC address for discovery and certificate signing (plaintext)")
	fs.StringVar(&c.registry, "registry", "", "JSON file holding the cluster state (an xds Snapshot without version); re-read when it changes")
	fs.StringVar(&c.trustDomain, "trust-domain", "cluster.local", "SPIFFE trust domain of issued identities")
	fs.DurationVar(&c.certTTL, "cert-ttl", time.Hour, "validity of issued workload certificates (proxies renew at half of it)")
	fs.StringVar(&c.admin, "admin", ":15014", "HTTP admin address (/ready, /debug/status, /debug/snapshot); empty: none")
	fs.StringVar(&c.caDir, "ca-dir", "", "directory keeping the CA root (root-cert.pem, root-key.pem, the key 0600 in a 0700 directory) across restarts; created if missing. Empty: the root in $"+EnvCARootCert+"/$"+EnvCARootKey+", else a new in-memory root per start")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, usageLine)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return exitOK
		}
		fmt.Fprintf(stderr, "controlplane: %v\n", err)
		return exitUsage
	}
	if err := c.check(fs); err != nil {
		fmt.Fprintf(stderr, "controlplane: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return run(ctx, c, stdout, stderr)
}

func (c *config) check(fs *flag.FlagSet) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case c.registry == "":
		return errors.New("--registry is required")
	case c.listen == "":
		return errors.New("--listen must not be empty")
	case c.certTTL < time.Second:
		// Short TTLs are legitimate (scenarios use 10s to provoke expiry
		// during an outage); sub-second ones only make proxies spin.
		return fmt.Errorf("--cert-ttl %s out of range (at least 1s)", c.certTTL)
	}
	if err := ca.ValidTrustDomain(c.trustDomain); err != nil {
		return fmt.Errorf("--trust-domain: %v", err)
	}
	_, haveCert := os.LookupEnv(EnvCARootCert)
	_, haveKey := os.LookupEnv(EnvCARootKey)
	switch {
	case haveCert != haveKey:
		return fmt.Errorf("$%s and $%s go together: one is set without the other", EnvCARootCert, EnvCARootKey)
	case haveCert && c.caDir != "":
		return fmt.Errorf("--ca-dir and $%s are two sources for the CA root: give one", EnvCARootCert)
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return fmt.Errorf("--listen %q: %v", c.listen, err)
	}
	if c.admin != "" {
		if _, _, err := net.SplitHostPort(c.admin); err != nil {
			return fmt.Errorf("--admin %q: %v", c.admin, err)
		}
	}
	return nil
}

func run(ctx context.Context, c config, stdout, stderr io.Writer) int {
	logger := log.New(stderr, "controlplane: ", log.LstdFlags|log.Lmicroseconds)

	authority, fromEnv, err := caFromEnv(c.trustDomain, c.certTTL)
	if err == nil && !fromEnv {
		authority, err = loadCA(c.caDir, c.trustDomain, c.certTTL)
	}
	if err != nil {
		logger.Printf("CA: %v", err)
		return exitFailure
	}
	srv := xds.NewServer(authority, c.trustDomain)
	srv.Logf = logger.Printf
	reg := &registry{path: c.registry, trustDomain: c.trustDomain, srv: srv, logf: logger.Printf}
	// Load before listening so the first proxies get state at once.
	reg.poll()

	lis, err := net.Listen("tcp", c.listen)
	if err != nil {
		logger.Printf("%v", err)
		return exitFailure
	}
	var adminLis net.Listener
	if c.admin != "" {
		if adminLis, err = net.Listen("tcp", c.admin); err != nil {
			lis.Close()
			logger.Printf("%v", err)
			return exitFailure
		}
	}

	g := grpc.NewServer(xds.ServerOptions()...)
	srv.Register(g)
	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("grpc server: %w", g.Serve(lis)) }()
	var hs *http.Server
	adminAddr := "none"
	if adminLis != nil {
		hs = &http.Server{Handler: adminHandler(srv), ReadHeaderTimeout: 5 * time.Second}
		go func() { errc <- fmt.Errorf("admin server: %w", hs.Serve(adminLis)) }()
		adminAddr = adminLis.Addr().String()
	}
	fmt.Fprintf(stdout, "controlplane: xds=%s admin=%s trust-domain=%s\n", lis.Addr(), adminAddr, c.trustDomain)

	code := exitOK
	t := time.NewTicker(pollInterval)
	defer t.Stop()
loop:
	for {
		select {
		case <-t.C:
			reg.poll()
		case <-ctx.Done():
			logger.Printf("signal received, stopping")
			break loop
		case err := <-errc:
			logger.Printf("%v", err)
			code = exitFailure
			break loop
		}
	}

	// Streams never end on their own, so end them first; GracefulStop
	// then only waits for in-flight certificate requests.
	srv.Close()
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		g.Stop()
		<-done
	}
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		_ = hs.Shutdown(sctx)
		cancel()
	}
	return code
}

func adminHandler(srv *xds.Server) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		// Ready means "has state to serve": a control plane that would push
		// nothing is not one a proxy should be pointed at yet.
		if v := srv.Version(); v != "" {
			fmt.Fprintf(w, "ready %s\n", v)
			return
		}
		http.Error(w, "no snapshot loaded yet", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/debug/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, struct {
			Version string                    `json:"version"`
			Nodes   map[string]xds.NodeStatus `json:"nodes"`
		}{srv.Version(), srv.Status()})
	})
	// go_goroutines (client_golang's name) lets the soak (framework/soak)
	// watch the control plane for goroutine leaks as it does the proxies.
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", promtext.ContentType)
		_ = promtext.Write(w, promtext.Goroutines())
	})
	mux.HandleFunc("/debug/snapshot", func(w http.ResponseWriter, _ *http.Request) {
		snap, ok := srv.Snapshot()
		if !ok {
			http.Error(w, "no snapshot loaded yet", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, snap)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

// registry follows the registry file. It re-reads only when the file's
// identity, mtime or size changed, and logs each distinct problem once: the
// harness may rewrite the file at high rate and a stuck bad file must not
// flood the log.
type registry struct {
	path        string
	trustDomain string
	srv         *xds.Server
	logf        func(format string, args ...any)

	last    os.FileInfo // of the last read attempt
	lastErr string
}

func (r *registry) poll() {
	fi, err := os.Stat(r.path)
	if err != nil {
		r.problem(fmt.Sprintf("registry %s: %v; keeping version %q", r.path, err, r.srv.Version()))
		r.last = nil
		return
	}
	if r.last != nil && os.SameFile(r.last, fi) && fi.ModTime().Equal(r.last.ModTime()) && fi.Size() == r.last.Size() {
		return
	}
	// Remember the attempt even if it fails: a half-written file changes
	// size or mtime again when the writer finishes, which triggers a
	// re-read; a file that stays bad is reported once.
	r.last = fi
	snap, err := r.read()
	if err != nil {
		r.problem(fmt.Sprintf("registry %s malformed, keeping version %q: %v", r.path, r.srv.Version(), err))
		return
	}
	r.lastErr = ""
	if err := snap.Validate(); err != nil {
		// Published anyway on purpose: rejecting bad state is the proxies'
		// job (NACK), and the suite wants to see that path work.
		r.logf("registry %s: snapshot is invalid, proxies will NACK it: %v", r.path, err)
	}
	before := r.srv.Version()
	if v := r.srv.SetSnapshot(*snap); v != before {
		r.logf("registry %s: published %s (%d workloads, %d services, %d policies)", r.path, v, len(snap.Workloads), len(snap.Services), len(snap.Policies))
	}
}

func (r *registry) problem(msg string) {
	if msg != r.lastErr {
		r.logf("%s", msg)
		r.lastErr = msg
	}
}

func (r *registry) read() (*xds.Snapshot, error) {
	data, err := os.ReadFile(r.path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	// Unknown fields are typos ("endpoint" for "endpoints") that would
	// otherwise silently empty a service.
	dec.DisallowUnknownFields()
	var snap xds.Snapshot
	if err := dec.Decode(&snap); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	if snap.TrustDomain == "" {
		snap.TrustDomain = r.trustDomain
	}
	if snap.TrustDomain != r.trustDomain {
		return nil, fmt.Errorf("trust domain %q, but this control plane's CA is for %q", snap.TrustDomain, r.trustDomain)
	}
	return &snap, nil
}

// caFromEnv returns the CA whose root is in EnvCARootCert/EnvCARootKey, and
// false when they are not set. It unsets them: nothing this process starts
// needs the key.
func caFromEnv(trustDomain string, ttl time.Duration) (*ca.CA, bool, error) {
	certPEM, haveCert := os.LookupEnv(EnvCARootCert)
	keyPEM, haveKey := os.LookupEnv(EnvCARootKey)
	if !haveCert && !haveKey {
		return nil, false, nil
	}
	os.Unsetenv(EnvCARootCert)
	os.Unsetenv(EnvCARootKey)
	authority, err := ca.Load(trustDomain, ttl, []byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, true, fmt.Errorf("$%s/$%s: %w", EnvCARootCert, EnvCARootKey, err)
	}
	return authority, true, nil
}

// loadCA returns a CA whose root survives restarts when dir is set.
func loadCA(dir, trustDomain string, ttl time.Duration) (*ca.CA, error) {
	if dir == "" {
		return ca.New(trustDomain, ttl)
	}
	certPath, keyPath := filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "root-key.pem")
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		// Like ssh with a private key file: a root key others can read is
		// a mesh anyone on the machine can impersonate; refuse it rather
		// than keep using it.
		if fi, err := os.Stat(keyPath); err != nil {
			return nil, err
		} else if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s has mode %v: a CA key must be readable by its owner only (chmod 600)", keyPath, fi.Mode().Perm())
		}
		return ca.Load(trustDomain, ttl, certPEM, keyPEM)
	case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
	case cerr != nil:
		return nil, cerr
	default:
		return nil, kerr
	}
	authority, err := ca.New(trustDomain, ttl)
	if err != nil {
		return nil, err
	}
	keyPEM, err = authority.RootKeyPEM()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// Key first: a crash in between leaves a key without a certificate,
	// which the next start reports instead of silently using a half pair.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certPath, authority.RootPEM(), 0o644); err != nil {
		return nil, err
	}
	return authority, nil
}

// writeFileAtomic writes data to path with exactly perm, through a temporary
// file renamed into place.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	// A temporary file left by a crash keeps its mode through os.WriteFile
	// and may be a symlink planted elsewhere: remove it and create anew,
	// exclusively, so the key is never written into a file we did not make.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	// The umask can only take bits away; Chmod states the mode exactly.
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
