package localk8s

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"blastradius.dev/blastradius/internal/oneline"
)

// Control plane deadlines: every component is local, so minutes mean
// something is wrong (the component's log says what).
const (
	etcdReadyTimeout      = 30 * time.Second
	apiserverReadyTimeout = 90 * time.Second
)

// startHostProc starts a control plane process detached from the caller
// (its own session, output to its log file), so it outlives a CLI `up`,
// and records it in the state file at once.
func startHostProc(sf *stateFile, l layout, name string, argv []string) error {
	if err := os.MkdirAll(filepath.Dir(l.log(name)), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(l.log(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = l.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	// Reap it if it dies while this process lives; after this process
	// exits, the machine's init does.
	go func() { _ = cmd.Wait() }()
	return sf.update(func(s *state) { s.Procs = append(s.Procs, newProc(name, cmd.Process.Pid)) })
}

func startControlPlane(ctx context.Context, sf *stateFile, l layout, b binaries, logf func(string, ...any)) error {
	t0 := time.Now()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	if err := startHostProc(sf, l, "etcd", []string{b.Etcd,
		"--name=local-k8s",
		"--data-dir=" + l.etcdData(),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=local-k8s=" + peerURL,
		"--initial-cluster-state=new",
		// A throwaway cluster: no fsync, etcd's main cost on a shared disk.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}); err != nil {
		return err
	}
	if err := waitHTTP(ctx, http.DefaultClient, etcdURL+"/health", `"health":"true"`, etcdReadyTimeout, "etcd", l.log("etcd"), logf); err != nil {
		return err
	}
	logf("etcd ready (%s)", time.Since(t0).Round(100*time.Millisecond))

	pki := l.pki
	if err := startHostProc(sf, l, "kube-apiserver", []string{b.Apiserver,
		"--etcd-servers=" + etcdURL,
		"--bind-address=0.0.0.0",
		fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--advertise-address=" + bridgeIP.String(),
		"--tls-cert-file=" + pki("apiserver.crt"),
		"--tls-private-key-file=" + pki("apiserver.key"),
		"--client-ca-file=" + pki("ca.crt"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pki("sa.pub"),
		"--service-account-signing-key-file=" + pki("sa.key"),
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority=" + pki("ca.crt"),
		// Nodes have no resolvable names: exec, logs and port-forward
		// reach kubelets at their node IP.
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
		"--v=1",
	}); err != nil {
		return err
	}
	admin, err := adminHTTPClient(l)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, admin, fmt.Sprintf("https://127.0.0.1:%d/readyz", apiserverPort), "ok", apiserverReadyTimeout, "kube-apiserver", l.log("kube-apiserver"), logf); err != nil {
		return err
	}
	logf("kube-apiserver ready (%s)", time.Since(t0).Round(100*time.Millisecond))

	// The controller-manager gives the apiserver 10 s to be healthy and
	// then exits: start it only once the apiserver is ready.
	if err := startHostProc(sf, l, "kube-controller-manager", []string{b.ControllerManager,
		"--kubeconfig=" + l.kubeconfig("controller-manager"),
		// No HTTPS endpoint: nothing here reads its health or metrics,
		// and a fixed port would be one more thing to collide.
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + pki("sa.key"),
		"--root-ca-file=" + pki("ca.crt"),
		"--cluster-signing-cert-file=" + pki("ca.crt"),
		"--cluster-signing-key-file=" + pki("ca.key"),
		"--service-cluster-ip-range=" + serviceCIDR,
		// The CNI configuration of each node assigns pod addresses; the
		// node IPAM controller would only fight it.
		"--controllers=*,-nodeipam",
		"--node-monitor-grace-period=" + NodeMonitorGracePeriod.String(),
		"--node-monitor-period=2s",
		"--profiling=false",
		"--v=1",
	}); err != nil {
		return err
	}
	return startHostProc(sf, l, "kube-scheduler", []string{b.Scheduler,
		"--kubeconfig=" + l.kubeconfig("scheduler"),
		"--secure-port=0",
		"--leader-elect=false",
		"--profiling=false",
		"--v=1",
	})
}

func adminHTTPClient(l layout) (*http.Client, error) {
	caPEM, err := os.ReadFile(l.pki("ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(l.pki("admin.crt"), l.pki("admin.key"))
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}, nil
}

// waitHTTP polls url until its body contains want. On timeout the error
// names the component and quotes the last line of its log.
func waitHTTP(ctx context.Context, c *http.Client, url, want string, timeout time.Duration, what, logPath string, logf func(string, ...any)) error {
	deadline := time.Now().Add(timeout)
	lastNote := time.Now()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(want)) {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.Join(strings.Fields(string(body)), " "))
		} else {
			last = err.Error()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s (%s; last log line: %s)", what, timeout, oneline.Fold(last, 300), lastLogLine(logPath))
		}
		if time.Since(lastNote) >= progressEvery {
			lastNote = time.Now()
			logf("waiting for %s (%s of %s): %s", what, time.Since(deadline.Add(-timeout)).Round(time.Second), timeout, oneline.Fold(last, 300))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// lastLogLine is the last non-empty line of a log, shortened.
func lastLogLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	s := strings.TrimSpace(lines[len(lines)-1])
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	if s == "" {
		return "(empty) " + path
	}
	return s + " [" + path + "]"
}
