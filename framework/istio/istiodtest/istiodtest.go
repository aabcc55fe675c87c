// Package istiodtest runs a real istiod (pilot-discovery, built from the
// pinned istio.io/istio by `make istio-bins`) against the tests' real
// kube-apiserver (kubetest): the workloads, services, policies and
// certificates it serves come from Istio's own control plane code, fed by
// pod and service objects whose status the test sets. No kubelet runs.
//
// The binary is read from $BLASTRADIUS_ISTIO_BINS, else from .cache/istio at
// the repository root. Without it a test skips with one line saying so,
// unless BLASTRADIUS_REQUIRE_ISTIO=1, in which case it fails.
//
// Imported by tests only.
package istiodtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	clusterkube "blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/cluster/kube/kubetest"
	"blastradius.dev/blastradius/framework/istio/istioinstall"
)

// Environment variables read.
const (
	EnvBins    = "BLASTRADIUS_ISTIO_BINS"
	EnvRequire = "BLASTRADIUS_REQUIRE_ISTIO"
)

// Namespace is where istiod runs, as the charts install it.
const Namespace = "istio-system"

// ClusterID is the cluster name istiod is given (the charts' default).
const ClusterID = "Kubernetes"

// readyTimeout bounds istiod's start: it lists every watched kind from the
// API server before it reports ready; seconds on an idle machine.
const readyTimeout = 90 * time.Second

// Istiod is a running pilot-discovery.
type Istiod struct {
	// XDS is the plaintext gRPC address (the charts' 15010): xDS without
	// authentication, as a sidecar-less test client may use it.
	XDS string
	// SecureXDS is the TLS gRPC address (the charts' 15012): xDS and the
	// CA, authenticated with a service-account token.
	SecureXDS string
	// RootPEM is the CA root istiod generated, as it publishes it in the
	// istio-ca-root-cert ConfigMap.
	RootPEM []byte
	// Log is istiod's output file.
	Log string

	cmd  *exec.Cmd
	done chan error
}

// Bins is the folder the binaries are read from.
func Bins() string {
	if d := os.Getenv(EnvBins); d != "" {
		return d
	}
	assets := kubetest.Assets() // <root>/.cache/k8s/<version>
	if assets == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(filepath.Dir(assets)), "istio")
}

// Start runs istiod against kube for the rest of the test.
func Start(t testing.TB, kube *kubetest.Server) *Istiod {
	t.Helper()
	return start(t, kube, false)
}

// StartWithGateways starts istiod as Start does on a cluster that also has
// the Gateway API CRDs and the sidecar injector's templates (the
// istio-discovery chart's istio-sidecar-injector ConfigMap, rendered by
// istioinstall with the tool's values): istiod then runs its gateway
// deployment controller, which writes a waypoint's Deployment and Service
// from a Gateway of class istio-waypoint.
func StartWithGateways(t testing.TB, kube *kubetest.Server) *Istiod {
	t.Helper()
	return start(t, kube, true)
}

func start(t testing.TB, kube *kubetest.Server, gateways bool) *Istiod {
	t.Helper()
	bin := filepath.Join(Bins(), "pilot-discovery")
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		msg := fmt.Sprintf("no pilot-discovery in %s: run `make istio-bins` (or set $%s) for the tests against a real istiod", Bins(), EnvBins)
		if os.Getenv(EnvRequire) != "1" {
			t.Skip(msg)
		}
		t.Fatal(msg + " ($" + EnvRequire + "=1: required, not skipped)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("namespace %s: %v", Namespace, err)
	}
	// Istio's CRDs, from the charts built with the binary (the base
	// chart's), before istiod starts: it watches AuthorizationPolicy,
	// PeerAuthentication and the rest from the first list on.
	crds := filepath.Join(Bins(), "charts", "base", "files", "crd-all.gen.yaml")
	if _, err := envtest.InstallCRDs(kube.Config, envtest.CRDInstallOptions{Paths: []string{crds}, ErrorIfPathMissing: true,
		MaxTime: readyTimeout}); err != nil {
		t.Fatalf("Istio CRDs from %s: %v", crds, err)
	}
	if gateways {
		if err := installGateways(ctx, kube, cs); err != nil {
			t.Fatalf("gateway API CRDs and injector templates: %v", err)
		}
	}
	dir := t.TempDir()
	kc, err := kube.Kubeconfig("istiod")
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	d := &Istiod{XDS: addr(ports[1]), SecureXDS: addr(ports[2]), Log: filepath.Join(dir, "istiod.log"), done: make(chan error, 1)}
	logf, err := os.Create(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(bin, "discovery",
		"--kubeconfig", kcPath,
		"--httpAddr", addr(ports[0]),
		"--grpcAddr", d.XDS,
		"--secureGRPCAddr", d.SecureXDS,
		"--httpsAddr", addr(ports[3]),
		"--monitoringAddr", addr(ports[4]),
		"--domain", "cluster.local",
		"--log_output_level", "default:info",
	)
	d.cmd.Dir = dir
	// What the istio-discovery chart sets with profile=ambient, minus what
	// needs a pod of its own (webhooks patch themselves only when their
	// configurations exist; there are none).
	d.cmd.Env = append(os.Environ(),
		"POD_NAME=istiod-test",
		"POD_NAMESPACE="+Namespace,
		"SERVICE_ACCOUNT=istiod",
		"REVISION=default",
		"PILOT_CERT_PROVIDER=istiod",
		"CA_TRUSTED_NODE_ACCOUNTS="+Namespace+"/ztunnel",
		"PILOT_ENABLE_AMBIENT=true",
		"PILOT_ENABLE_ANALYSIS=false",
		"CLUSTER_ID="+ClusterID,
		"KUBECONFIG="+kcPath,
		"ISTIOD_CUSTOM_HOST=localhost",
	)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Killed with the test binary, whatever ends it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start istiod: %v", err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	t.Logf("istiod: log %s", d.Log)
	if err := d.waitReady(ctx, "http://"+addr(ports[0])+"/ready"); err != nil {
		t.Fatalf("istiod not ready: %v; log %s:\n%s", err, d.Log, tail(d.Log, 40))
	}
	root, err := waitRoot(ctx, cs)
	if err != nil {
		t.Fatalf("istiod root: %v; log %s:\n%s", err, d.Log, tail(d.Log, 40))
	}
	d.RootPEM = root
	return d
}

func (d *Istiod) waitReady(ctx context.Context, url string) error {
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("%s within %v (last: %s)", url, readyTimeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitRoot reads the root istiod publishes to every namespace.
func waitRoot(ctx context.Context, cs kubernetes.Interface) ([]byte, error) {
	for {
		cm, err := cs.CoreV1().ConfigMaps(Namespace).Get(ctx, "istio-ca-root-cert", metav1.GetOptions{})
		if err == nil && cm.Data["root-cert.pem"] != "" {
			return []byte(cm.Data["root-cert.pem"]), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ConfigMap %s/istio-ca-root-cert not written within %v (last: %v)", Namespace, readyTimeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (d *Istiod) stop(t testing.TB) {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
		t.Errorf("istiod did not stop within 10s of SIGTERM; killed")
	}
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tail returns the last n lines of a file, for a failure message.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// installGateways applies the Gateway API CRDs and the injector's
// ConfigMap as the tool's install renders them.
func installGateways(ctx context.Context, kube *kubetest.Server, cs kubernetes.Interface) error {
	parts, err := istioinstall.Render(istioinstall.Options{})
	if err != nil {
		return err
	}
	var injector *unstructured.Unstructured
	for _, p := range parts {
		for _, o := range p.Objects {
			if o.GetKind() == "ConfigMap" && o.GetName() == InjectorConfigMap {
				injector = o
			}
		}
	}
	if injector == nil {
		return fmt.Errorf("the rendered charts have no ConfigMap %s", InjectorConfigMap)
	}
	dyn, mapper, err := clusterkube.Clients(kube.Config)
	if err != nil {
		return err
	}
	c := istioinstall.Cluster{Client: cs, Dynamic: dyn, Mapper: mapper}
	return istioinstall.Install(ctx, c, []istioinstall.Part{
		parts[0],
		{Name: "injector", Chart: "istio-control/istio-discovery", Objects: []*unstructured.Unstructured{injector}},
	}, istioinstall.InstallOptions{NoWait: true})
}

// InjectorConfigMap holds the injection templates, the waypoint's among
// them (the chart's name for the default revision).
const InjectorConfigMap = "istio-sidecar-injector"
