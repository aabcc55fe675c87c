// Package kubetest starts a real etcd and kube-apiserver for tests, through
// controller-runtime's envtest, with the Chaos Mesh CRDs installed: the
// server-side apply, field validation, CRD schemas, evictions and watches the
// kube package relies on are the API server's own, not a fake's. No
// controllers or kubelets run, so nothing ever becomes ready by itself; a
// test plays a controller by writing status.
//
// The binaries come from `make k8s-test-bins` (tools/k8s). Tests find them in
// $KUBEBUILDER_ASSETS, else in the repository's .cache/k8s/<version>. Without
// them a test skips with one line saying so, unless BLASTRADIUS_REQUIRE_K8S=1
// (as `make test` and CI set it), in which case it fails: CI must not pass by
// skipping.
//
// Imported by tests only.
package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"blastradius.dev/blastradius/internal/k8sversion"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// Version is the Kubernetes release `make k8s-test-bins` builds; the default
// assets folder is named after it.
const Version = k8sversion.Version

// Environment variables read.
const (
	// EnvAssets is envtest's own: the folder holding etcd, kube-apiserver
	// and crds/.
	EnvAssets = "KUBEBUILDER_ASSETS"
	// EnvRequire, set to 1, turns a missing binary into a failure.
	EnvRequire = "BLASTRADIUS_REQUIRE_K8S"
	// EnvLogDir, if set, is a folder each API server writes its log into.
	EnvLogDir = "BLASTRADIUS_KUBETEST_LOG_DIR"
)

// startTimeout bounds each of etcd's and the API server's start. The API
// server is up in a few seconds on an idle machine; the suite shares two
// cores with other packages' tests, hence the margin.
const startTimeout = 90 * time.Second

// Server is a running etcd + kube-apiserver.
type Server struct {
	// Config reaches the API server as a cluster admin (system:masters).
	Config *rest.Config
	// Assets is the folder the binaries and CRDs came from.
	Assets string
	// StartTook is how long etcd, the API server and the CRDs took to be
	// ready.
	StartTook time.Duration

	env      *envtest.Environment
	wrappers string
	log      *os.File
	stopOnce sync.Once
	stopErr  error
}

// Start starts a server for one test and stops it when the test ends. If the
// binaries are missing it skips the test (fails it under
// BLASTRADIUS_REQUIRE_K8S=1).
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start()
	if err != nil {
		missing(t, err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop test API server: %v", err)
		}
	})
	return s
}

// Shared is one server for every test of a package that asks for it: the
// start-up (seconds) is paid once. The first Get starts it; TestMain stops it
// after m.Run:
//
//	var apiServer kubetest.Shared
//
//	func TestMain(m *testing.M) { os.Exit(apiServer.Run(m)) }
type Shared struct {
	mu  sync.Mutex
	s   *Server
	err error
}

// Get returns the shared server, starting it on the first call. Every test
// that calls it skips (or, under BLASTRADIUS_REQUIRE_K8S=1, fails) when the
// binaries are missing or the server did not start; a failed start is not
// retried.
func (sh *Shared) Get(t testing.TB) *Server {
	t.Helper()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.s == nil && sh.err == nil {
		sh.s, sh.err = start()
		if sh.err == nil {
			t.Logf("test API server (kube-apiserver %s, etcd) started in %s", Version, sh.s.StartTook.Round(time.Millisecond))
		}
	}
	if sh.err != nil {
		missing(t, sh.err)
	}
	return sh.s
}

// Run runs the tests, then stops the server if one was started. An error
// stopping it fails the run.
func (sh *Shared) Run(m *testing.M) int {
	code := m.Run()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.s != nil {
		if err := sh.s.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop test API server: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Stop stops the API server and etcd and removes their folders. Safe to
// call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stopErr = s.env.Stop()
		if s.log != nil {
			s.log.Close()
		}
		if s.wrappers != "" {
			os.RemoveAll(s.wrappers)
		}
	})
	return s.stopErr
}

// errMissing marks a start that failed because the binaries are not there,
// as opposed to binaries that are there and failed.
type errMissing struct{ msg string }

func (e *errMissing) Error() string { return e.msg }

// missing reports a failed start: a skip when the binaries are absent
// (unless required), a failure otherwise.
func missing(t testing.TB, err error) {
	t.Helper()
	var m *errMissing
	if errors.As(err, &m) {
		if os.Getenv(EnvRequire) != "1" {
			t.Skip(m.msg)
		}
		t.Fatal(m.msg + " ($" + EnvRequire + "=1: required, not skipped)")
	}
	t.Fatal(err)
}

// Assets is the folder the binaries are read from: $KUBEBUILDER_ASSETS if
// set, else .cache/k8s/<Version> at the repository root (where `make
// k8s-test-bins` puts them), found from the working directory up.
func Assets() string {
	if d := os.Getenv(EnvAssets); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module blastradius.dev/blastradius\n")) {
			return filepath.Join(dir, ".cache", "k8s", Version)
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}

// findAssets returns the assets folder, or an errMissing saying what is
// not there.
func findAssets() (string, error) {
	assets := Assets()
	var absent []string
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if st, err := os.Stat(filepath.Join(assets, b)); err != nil || st.IsDir() {
			absent = append(absent, b)
		}
	}
	crds := filepath.Join(assets, "crds")
	if m, _ := filepath.Glob(filepath.Join(crds, "*.yaml")); len(m) == 0 {
		absent = append(absent, "crds/")
	}
	if len(absent) > 0 {
		where := assets
		if where == "" {
			where = "(no $" + EnvAssets + " and no repository root)"
		}
		return "", &errMissing{fmt.Sprintf("no %s in %s: run `make k8s-test-bins` (or set $%s) for the tests against a real API server",
			strings.Join(absent, ", "), where, EnvAssets)}
	}
	return assets, nil
}

func start() (*Server, error) {
	assets, err := findAssets()
	if err != nil {
		return nil, err
	}
	crds := filepath.Join(assets, "crds")
	// controller-runtime warns on stderr, with a stack, if its logger is
	// never set; what it would log here is envtest's start-up chatter.
	ctrllog.SetLogger(logr.Discard())

	s := &Server{Assets: assets}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{crds},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: startTimeout,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	// envtest starts each binary in a process group of its own, so a test
	// binary that dies (a panic, go test's -timeout) would leave etcd and the
	// API server running. Started through setpriv --pdeathsig, they are
	// killed with it. Without setpriv they run as envtest starts them. (The
	// signal comes when the OS thread that started them ends; Go ends a
	// thread only when a goroutine locked to it exits, which a test that
	// shares its server must not do.)
	if setpriv, err := exec.LookPath("setpriv"); err == nil {
		dir, err := os.MkdirTemp("", "kubetest-bin-")
		if err != nil {
			return nil, err
		}
		s.wrappers = dir
		etcd, err := wrap(dir, setpriv, filepath.Join(assets, "etcd"))
		if err == nil {
			var api string
			api, err = wrap(dir, setpriv, filepath.Join(assets, "kube-apiserver"))
			env.ControlPlane.GetAPIServer().Path = api
		}
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		env.ControlPlane.Etcd = &envtest.Etcd{Path: etcd}
	}
	// $BLASTRADIUS_KUBETEST_LOG_DIR keeps each API server's own log (at -v=2,
	// which names the controllers' retries) for a failure that needs it,
	// such as a CRD whose deletion stalls.
	if dir := os.Getenv(EnvLogDir); dir != "" {
		f, err := os.CreateTemp(dir, "kube-apiserver-*.log")
		if err != nil {
			return nil, fmt.Errorf("API server log: %w", err)
		}
		api := env.ControlPlane.GetAPIServer()
		api.Out, api.Err = f, f
		api.Configure().Set("v", "2")
		s.log = f
	}
	s.env = env
	t0 := time.Now()
	cfg, err := env.Start()
	if err != nil {
		// Start leaves whatever it had started running.
		_ = env.Stop()
		if s.wrappers != "" {
			os.RemoveAll(s.wrappers)
		}
		return nil, fmt.Errorf("start test API server from %s: %w", assets, err)
	}
	s.StartTook = time.Since(t0)
	s.Config = cfg
	return s, nil
}

// wrap writes a script that runs bin with SIGKILL as its parent-death
// signal. exec keeps the process ID, so envtest's stop signal reaches bin.
func wrap(dir, setpriv, bin string) (string, error) {
	p := filepath.Join(dir, filepath.Base(bin))
	script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL -- %s \"$@\"\n", shellQuote(setpriv), shellQuote(bin))
	return p, os.WriteFile(p, []byte(script), 0o755)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Kubeconfig returns a kubeconfig for a new cluster-admin user of the
// server, for a process the test starts (a control plane under test reads
// the API server the way it would in a cluster).
func (s *Server) Kubeconfig(user string) ([]byte, error) {
	u, err := s.env.AddUser(envtest.User{Name: user, Groups: []string{"system:masters"}}, s.Config)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig for %s: %w", user, err)
	}
	return u.KubeConfig()
}
