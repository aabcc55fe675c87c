package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"
	securityv1alpha1 "istio.io/api/security/v1alpha1"
	"istio.io/istio/pkg/workloadapi"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/xds"
)

// chartEnv is the environment the ztunnel chart's DaemonSet gives its
// container (default values, downward API filled in as the kubelet would).
func chartEnv() map[string]string {
	return map[string]string{
		"CA_ADDRESS":                       "istiod.istio-system.svc:15012",
		"XDS_ADDRESS":                      "istiod.istio-system.svc:15012",
		"RUST_LOG":                         "info",
		"RUST_BACKTRACE":                   "1",
		"ISTIO_META_CLUSTER_ID":            "Kubernetes",
		"INPOD_ENABLED":                    "true",
		"TERMINATION_GRACE_PERIOD_SECONDS": "30",
		"POD_NAME":                         "ztunnel-x7k2p",
		"POD_NAMESPACE":                    "istio-system",
		"NODE_NAME":                        "node-1",
		"INSTANCE_IP":                      "10.244.1.3",
		"SERVICE_ACCOUNT":                  "ztunnel",
		"ZTUNNEL_CPU_LIMIT":                "0",
	}
}

func getenvOf(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

func TestParseZtunnelChartEnv(t *testing.T) {
	want := ztunnelConfig{
		xdsAddr: "istiod.istio-system.svc:15012", caAddr: "istiod.istio-system.svc:15012",
		podName: "ztunnel-x7k2p", podNamespace: "istio-system", node: "node-1", instanceIP: "10.244.1.3",
		serviceAccount: "ztunnel", clusterID: "Kubernetes", inpodEnabled: "true",
		tokenFile: "/var/run/secrets/tokens/istio-token", rootCert: "/var/run/secrets/istio/root-cert.pem",
		zdsSocket: "/var/run/ztunnel/ztunnel.sock", readyAddr: ":15021", statsAddr: ":15020",
		handoff: HandoffMigrate, mark: 0x539, connectTimeout: 2 * time.Second, configWait: 5 * time.Second,
		// ztunnel's: 5 s less than the chart's 30 s grace period; 24 h.
		drain: 25 * time.Second, secretTTL: 24 * time.Hour,
	}
	for _, tc := range []struct {
		name string
		env  func(map[string]string)
		args []string
		want func(*ztunnelConfig)
	}{
		{name: "chart defaults"},
		{name: "CA_ADDRESS unset defaults to XDS_ADDRESS",
			env: func(e map[string]string) {
				delete(e, "CA_ADDRESS")
				e["XDS_ADDRESS"] = "istiod-canary.istio-system.svc:15012"
			},
			want: func(z *ztunnelConfig) {
				z.xdsAddr, z.caAddr = "istiod-canary.istio-system.svc:15012", "istiod-canary.istio-system.svc:15012"
			}},
		{name: "CA_ADDRESS of its own",
			env:  func(e map[string]string) { e["CA_ADDRESS"] = "ca.example:443" },
			want: func(z *ztunnelConfig) { z.caAddr = "ca.example:443" }},
		{name: "cluster from CLUSTER_ID when ISTIO_META_CLUSTER_ID is unset",
			env:  func(e map[string]string) { delete(e, "ISTIO_META_CLUSTER_ID"); e["CLUSTER_ID"] = "east" },
			want: func(z *ztunnelConfig) { z.clusterID = "east" }},
		{name: "ISTIO_META_CLUSTER_ID wins over CLUSTER_ID",
			env:  func(e map[string]string) { e["ISTIO_META_CLUSTER_ID"] = "west"; e["CLUSTER_ID"] = "east" },
			want: func(z *ztunnelConfig) { z.clusterID = "west" }},
		{name: "no cluster id: istiod's default",
			env:  func(e map[string]string) { delete(e, "ISTIO_META_CLUSTER_ID") },
			want: func(z *ztunnelConfig) { z.clusterID = "Kubernetes" }},
		{name: "INPOD_ENABLED unset",
			env:  func(e map[string]string) { delete(e, "INPOD_ENABLED") },
			want: func(z *ztunnelConfig) { z.inpodEnabled = "" }},
		{name: "SERVICE_ACCOUNT unset",
			env:  func(e map[string]string) { delete(e, "SERVICE_ACCOUNT") },
			want: func(z *ztunnelConfig) { z.serviceAccount = "" }},
		{name: "IPv6 instance IP, canonical form",
			env:  func(e map[string]string) { e["INSTANCE_IP"] = "fd00:0::5" },
			want: func(z *ztunnelConfig) { z.instanceIP = "fd00::5" }},
		{name: "a short grace period leaves 1 s",
			env:  func(e map[string]string) { e["TERMINATION_GRACE_PERIOD_SECONDS"] = "8" },
			want: func(z *ztunnelConfig) { z.drain = 7 * time.Second }},
		{name: "CONNECTION_TERMINATION_DEADLINE wins",
			env:  func(e map[string]string) { e["CONNECTION_TERMINATION_DEADLINE"] = "3s" },
			want: func(z *ztunnelConfig) { z.drain = 3 * time.Second }},
		{name: "no grace period: the tool's 5 s",
			env:  func(e map[string]string) { delete(e, "TERMINATION_GRACE_PERIOD_SECONDS") },
			want: func(z *ztunnelConfig) { z.drain = 5 * time.Second }},
		{name: "SECRET_TTL",
			env:  func(e map[string]string) { e["SECRET_TTL"] = "10s" },
			want: func(z *ztunnelConfig) { z.secretTTL = 10 * time.Second }},
		{name: "flags override the environment",
			args: []string{"--xds-address", "127.0.0.1:15012", "--pod-name", "z", "--pod-namespace", "zns", "--node", "n9",
				"--instance-ip", "10.0.0.9", "--cluster-id", "c9", "--token-file", "/t", "--root-cert", "/r",
				"--zds-socket", "@zds", "--ready-addr", "127.0.0.1:0", "--stats-addr", "127.0.0.1:0", "--admin", "127.0.0.1:15000"},
			want: func(z *ztunnelConfig) {
				z.xdsAddr, z.podName, z.podNamespace, z.node, z.instanceIP, z.clusterID = "127.0.0.1:15012", "z", "zns", "n9", "10.0.0.9", "c9"
				z.tokenFile, z.rootCert, z.zdsSocket, z.readyAddr, z.statsAddr, z.admin = "/t", "/r", "@zds", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:15000"
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := chartEnv()
			if tc.env != nil {
				tc.env(env)
			}
			w := want
			if tc.want != nil {
				tc.want(&w)
			}
			got, _, err := parseZtunnel(tc.args, getenvOf(env))
			if err != nil {
				t.Fatal(err)
			}
			if got != w {
				t.Errorf("config\n got %+v\nwant %+v", got, w)
			}
		})
	}
}

func TestParseZtunnelRefuses(t *testing.T) {
	unset := func(k string) func(map[string]string) { return func(e map[string]string) { delete(e, k) } }
	set := func(k, v string) func(map[string]string) { return func(e map[string]string) { e[k] = v } }
	for _, tc := range []struct {
		name string
		env  func(map[string]string)
		args []string
		want string
	}{
		{"no XDS_ADDRESS", unset("XDS_ADDRESS"), nil, "XDS_ADDRESS is not set"},
		{"no POD_NAME", unset("POD_NAME"), nil, "POD_NAME is not set"},
		{"no POD_NAMESPACE", unset("POD_NAMESPACE"), nil, "POD_NAMESPACE is not set"},
		{"no NODE_NAME", unset("NODE_NAME"), nil, "NODE_NAME is not set"},
		{"no INSTANCE_IP", unset("INSTANCE_IP"), nil, "INSTANCE_IP is not set"},
		{"blank POD_NAMESPACE", set("POD_NAMESPACE", " "), nil, "POD_NAMESPACE is not set"},
		{"flag empties NODE_NAME", nil, []string{"--node="}, "NODE_NAME is not set (the ztunnel chart sets it from the pod); or give --node"},
		{"XDS_ADDRESS without port", set("XDS_ADDRESS", "istiod.istio-system.svc"), nil, `--xds-address (XDS_ADDRESS) "istiod.istio-system.svc": want host:port`},
		{"XDS_ADDRESS without host", set("XDS_ADDRESS", ":15012"), nil, `--xds-address (XDS_ADDRESS) ":15012": want host:port`},
		{"XDS_ADDRESS named port", set("XDS_ADDRESS", "istiod:grpc"), nil, `port "grpc" is not a port number`},
		{"XDS_ADDRESS a URL", set("XDS_ADDRESS", "https://istiod.istio-system.svc:15012"), nil, "want host:port"},
		{"CA_ADDRESS port 0", set("CA_ADDRESS", "istiod:0"), nil, `--ca-address (CA_ADDRESS) "istiod:0": port "0" is not a port number`},
		{"CA_ADDRESS port too big", set("CA_ADDRESS", "istiod:150120"), nil, `port "150120" is not a port number`},
		{"INSTANCE_IP not an IP", set("INSTANCE_IP", "10.244.1"), nil, `--instance-ip (INSTANCE_IP) "10.244.1" is not an IP address`},
		{"INSTANCE_IP a host name", set("INSTANCE_IP", "node-1"), nil, "is not an IP address"},
		{"INPOD_ENABLED false", set("INPOD_ENABLED", "false"), nil, "only in-pod mode"},
		{"INPOD_ENABLED garbage", set("INPOD_ENABLED", "yes please"), nil, `--inpod-enabled (INPOD_ENABLED) "yes please": want true or false`},
		{"empty cluster id", nil, []string{"--cluster-id", ""}, "--cluster-id is empty"},
		{"empty token path", nil, []string{"--token-file", ""}, "--token-file is empty"},
		{"empty ZDS socket", nil, []string{"--zds-socket="}, "--zds-socket is empty"},
		{"ready address without port", nil, []string{"--ready-addr", "15021"}, `--ready-addr "15021": want host:port`},
		{"stats port out of range", nil, []string{"--stats-addr", ":99999"}, `--stats-addr ":99999": port "99999"`},
		{"admin address bad", nil, []string{"--admin", "localhost"}, `--admin "localhost": want host:port`},
		{"ready and stats on one port", nil, []string{"--ready-addr", ":15020"}, "share a port"},
		{"mark 0", nil, []string{"--mark", "0"}, "--mark 0 out of range"},
		{"handoff unknown", nil, []string{"--handoff", "teleport"}, `--handoff "teleport" unknown`},
		{"stray argument", nil, []string{"shared"}, `unexpected argument "shared"`},
		{"SECRET_TTL garbage", set("SECRET_TTL", "a day"), nil, `SECRET_TTL "a day": want a duration of at least 1s`},
		{"SECRET_TTL too short", set("SECRET_TTL", "500ms"), nil, `SECRET_TTL "500ms"`},
		{"grace period not seconds", set("TERMINATION_GRACE_PERIOD_SECONDS", "30s"), nil, `TERMINATION_GRACE_PERIOD_SECONDS "30s": want whole seconds`},
		{"termination deadline garbage", set("CONNECTION_TERMINATION_DEADLINE", "-1s"), nil, `CONNECTION_TERMINATION_DEADLINE "-1s": want a positive duration`},
		{"unknown flag", nil, []string{"--dns-proxy"}, "flag provided but not defined: -dns-proxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := chartEnv()
			if tc.env != nil {
				tc.env(env)
			}
			_, _, err := parseZtunnel(tc.args, getenvOf(env))
			switch {
			case err == nil:
				t.Fatalf("accepted; want an error saying %q", tc.want)
			case strings.ContainsAny(err.Error(), "\r\n"):
				t.Errorf("error is not one line: %q", err)
			case !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// ztunnelMain exits 2 with one line for bad input, including what only
// shows when the clients are built (token, root), and 0 for --help.
func TestZtunnelMainBadInput(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "istio-token")
	if err := os.WriteFile(token, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty-token")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  func(map[string]string)
		args []string
		want string
	}{
		{"missing POD_NAMESPACE", func(e map[string]string) { delete(e, "POD_NAMESPACE") }, nil, "blastradius proxy ztunnel: POD_NAMESPACE is not set"},
		{"token not mounted", nil, []string{"--token-file", filepath.Join(dir, "nope")}, "service-account token: open " + filepath.Join(dir, "nope")},
		{"token empty", nil, []string{"--token-file", empty}, "service-account token " + empty + " is empty"},
		{"root not mounted", nil, []string{"--token-file", token, "--root-cert", filepath.Join(dir, "nope.pem")}, "istiod root: open " + filepath.Join(dir, "nope.pem")},
		{"root not PEM", nil, []string{"--token-file", token, "--root-cert", notPEM}, notPEM + " holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := chartEnv()
			if tc.env != nil {
				tc.env(env)
			}
			var stderr strings.Builder
			code := ztunnelMain(tc.args, getenvOf(env), &stderr)
			msg := stderr.String()
			if code != 2 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and one line saying %q", code, msg, tc.want)
			}
		})
	}
	var stderr strings.Builder
	if code := ztunnelMain([]string{"--help"}, getenvOf(chartEnv()), &stderr); code != 0 || !strings.Contains(stderr.String(), "XDS_ADDRESS") {
		t.Errorf("--help: exit %d, %q", code, stderr.String())
	}
}

// Reference mode keeps its flags; the ztunnel word must come first.
func TestReferenceModeRefusesStrayArgument(t *testing.T) {
	var stderr strings.Builder
	code := Main([]string{"--node", "n1", "ztunnel"}, io.Discard, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), `unexpected argument "ztunnel"`) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestMatchByIP: istio-cni names a pod by its Kubernetes UID and istiod its
// workload Kubernetes//Pod/<ns>/<name>; in ztunnel mode the pod is its
// workload by IP, unless the workload at that IP is another pod (an IP
// reused before the configuration caught up). Reference mode matches UIDs.
func TestMatchByIP(t *testing.T) {
	s := snap()
	for i := range s.Workloads {
		w := &s.Workloads[i]
		w.UID = "Kubernetes//Pod/" + w.Namespace + "/" + w.Name
	}
	ix := NewIndex(s)
	ip := netip.MustParseAddr("10.244.2.2") // b
	const k8sUID = "8f1c2b7e-3d4a-4c55-9e0f-1a2b3c4d5e6f"
	byIP := New(Options{MatchByIP: true}, nil, func() []byte { return nil })
	byUID := New(Options{}, nil, func() []byte { return nil })
	for _, tc := range []struct {
		name    string
		p       *Proxy
		pd      *pod
		wantID  string
		wantErr string
	}{
		{"ztunnel: by IP", byIP, &pod{uid: k8sUID, ip: ip, meta: podMeta{"b", "default", "b"}}, bID, ""},
		{"ztunnel: by IP, no workload info", byIP, &pod{uid: k8sUID, ip: ip}, bID, ""},
		{"ztunnel: IP of another pod", byIP, &pod{uid: k8sUID, ip: ip, meta: podMeta{"b-7d9f", "default", "b"}},
			"", "IP 10.244.2.2 is workload default/b"},
		{"ztunnel: IP of another namespace's pod", byIP, &pod{uid: k8sUID, ip: ip, meta: podMeta{"b", "prod", "b"}}, "", "is workload default/b"},
		{"ztunnel: another service account", byIP, &pod{uid: k8sUID, ip: ip, meta: podMeta{"b", "default", "admin"}}, "", `service account "admin"`},
		{"ztunnel: IP unknown", byIP, &pod{uid: k8sUID, ip: netip.MustParseAddr("10.244.9.9"), meta: podMeta{"b", "default", "b"}},
			"", "no workload with IP 10.244.9.9"},
		{"reference: Kubernetes UID is not a workload UID", byUID, &pod{uid: k8sUID, ip: ip}, "", "unknown to the control plane"},
		{"reference: by UID, whatever the IP", byUID, &pod{uid: "Kubernetes//Pod/default/a", ip: ip}, aID, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, _, err := tc.p.identityOf(ix, tc.pd)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("identity %q, error %v; want an error saying %q", id, err, tc.wantErr)
				}
				return
			}
			if err != nil || id != tc.wantID {
				t.Fatalf("identity %q, %v; want %s", id, err, tc.wantID)
			}
		})
	}

	// The reference control plane names workloads namespace/name; on
	// Kubernetes the node agent names the pod by its Kubernetes UID, and
	// the pod is found by the name and namespace the agent sent with it.
	ref := NewIndex(snap())
	if id, _, err := byUID.identityOf(ref, &pod{uid: k8sUID, ip: ip, meta: podMeta{"b", "default", "b"}}); err != nil || id != bID {
		t.Errorf("reference mode, Kubernetes UID with workload info default/b: %q, %v; want %s", id, err, bID)
	}
	if id, _, err := byUID.identityOf(ref, &pod{uid: k8sUID, ip: ip, meta: podMeta{"gone", "default", "b"}}); err == nil {
		t.Errorf("reference mode, workload info of a pod the control plane does not know: identity %q, want an error", id)
	}
	if id, _, err := byUID.identityOf(ref, &pod{uid: "default/a", ip: ip, meta: podMeta{"b", "default", "b"}}); err != nil || id != aID {
		t.Errorf("reference mode, a known UID goes first: %q, %v; want %s", id, err, aID)
	}
}

// --- a fake istiod: delta xDS and CA on one TLS port, as on 15012 ---------

type fakeStreamInfo struct {
	md   metadata.MD
	node *corev3.Node
}

type fakeCAReq struct {
	auth, clusterID, identity string
}

type fakeIstiod struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	securityv1alpha1.UnimplementedIstioCertificateServiceServer
	root      *x509.Certificate
	rootKey   *ecdsa.PrivateKey
	rootPEM   []byte
	addresses []*discoveryv3.Resource
	release   chan struct{} // closed: streams get their responses
	addr      string

	mu      sync.Mutex
	streams []fakeStreamInfo
	caReqs  []fakeCAReq
}

func (f *fakeIstiod) DeltaAggregatedResources(st discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	md, _ := metadata.FromIncomingContext(st.Context())
	first, err := st.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.streams = append(f.streams, fakeStreamInfo{md: md, node: first.GetNode()})
	f.mu.Unlock()
	go func() { // the second subscription and the ACKs
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	select {
	case <-f.release:
	case <-st.Context().Done():
		return nil
	}
	for _, r := range []*discoveryv3.DeltaDiscoveryResponse{
		{TypeUrl: xds.IstioAddressType, Nonce: "n1", SystemVersionInfo: "v1", Resources: f.addresses},
		{TypeUrl: xds.IstioAuthorizationType, Nonce: "n2", SystemVersionInfo: "v1"},
	} {
		if err := st.Send(r); err != nil {
			return err
		}
	}
	<-st.Context().Done()
	return nil
}

func (f *fakeIstiod) CreateCertificate(ctx context.Context, req *securityv1alpha1.IstioCertificateRequest) (*securityv1alpha1.IstioCertificateResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	id := req.GetMetadata().GetFields()["ImpersonatedIdentity"].GetStringValue()
	f.mu.Lock()
	f.caReqs = append(f.caReqs, fakeCAReq{auth: first("authorization"), clusterID: first("clusterid"), identity: id})
	f.mu.Unlock()
	b, _ := pem.Decode([]byte(req.GetCsr()))
	if b == nil {
		return nil, errors.New("no CSR")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.root, csr.PublicKey, f.rootKey)
	if err != nil {
		return nil, err
	}
	leaf := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &securityv1alpha1.IstioCertificateResponse{CertChain: []string{string(leaf), string(f.rootPEM)}}, nil
}

func (f *fakeIstiod) snapshot() ([]fakeStreamInfo, []fakeCAReq) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeStreamInfo(nil), f.streams...), append([]fakeCAReq(nil), f.caReqs...)
}

// testRoot is a self-signed CA: istiod's root, which signs both its serving
// certificate and the workloads'.
func testRoot(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mesh root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// startFakeIstiod serves on 127.0.0.1 with a certificate for the name
// "localhost" only: a client that connects to localhost:port verifies it
// only if it checks the address's host name (no IP SAN to fall back on).
func startFakeIstiod(t *testing.T, addresses ...*discoveryv3.Resource) *fakeIstiod {
	t.Helper()
	root, rootKey, rootPEM := testRoot(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "istiod"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeIstiod{root: root, rootKey: rootKey, rootPEM: rootPEM, addresses: addresses, release: make(chan struct{})}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, f)
	securityv1alpha1.RegisterIstioCertificateServiceServer(g, f)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(lis.Addr().String())
	f.addr = "localhost:" + port
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return f
}

// istioWorkload is a pod as istiod sends it to ztunnel.
func istioWorkload(t *testing.T, ns, name, sa, ip string) *discoveryv3.Resource {
	t.Helper()
	uid := "Kubernetes//Pod/" + ns + "/" + name
	a, err := anypb.New(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
		Uid: uid, Name: name, Namespace: ns, ServiceAccount: sa, Node: "node-1",
		Addresses: [][]byte{netip.MustParseAddr(ip).AsSlice()}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
		Status: workloadapi.WorkloadStatus_HEALTHY, ClusterId: "Kubernetes",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return &discoveryv3.Resource{Name: uid, Version: "1", Resource: a}
}

// ztunnelRun runs the ztunnel mode as `blastradius proxy ztunnel` with the
// chart's environment pointing at f and the files in dir; it returns the
// readiness and stats base URLs and a stop function that checks exit 0.
func ztunnelRun(t *testing.T, f *fakeIstiod, rootPEM []byte, sock string, log *logLines) (readyURL, statsURL string, stop func()) {
	t.Helper()
	dir := t.TempDir()
	token := filepath.Join(dir, "istio-token")
	root := filepath.Join(dir, "root-cert.pem")
	if err := os.WriteFile(token, []byte("ztunnel-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root, rootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	env := chartEnv()
	env["XDS_ADDRESS"] = f.addr
	delete(env, "CA_ADDRESS") // ztunnel's default: the discovery address
	env["ISTIO_META_CLUSTER_ID"] = "cluster-7"
	env["INSTANCE_IP"] = "10.244.0.5"
	z, _, err := parseZtunnel([]string{"--token-file", token, "--root-cert", root, "--zds-socket", sock,
		"--ready-addr", "127.0.0.1:0", "--stats-addr", "127.0.0.1:0", "--drain-deadline", "100ms"}, getenvOf(env))
	if err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]net.Addr, 1)
	testHookZtunnelListening = func(ready, stats net.Addr) { addrs <- [2]net.Addr{ready, stats} }
	t.Cleanup(func() { testHookZtunnelListening = nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr strings.Builder
	go func() { done <- runZtunnel(ctx, z, log.logf, &stderr) }()
	var a [2]net.Addr
	select {
	case a = <-addrs:
	case code := <-done:
		t.Fatalf("runZtunnel exited %d: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("runZtunnel did not listen")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("runZtunnel exit %d: %s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("runZtunnel did not stop")
		}
	}
	t.Cleanup(stop)
	return "http://" + a[0].String(), "http://" + a[1].String(), stop
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady polls /healthz/ready until it answers code with a body holding
// body.
func waitReady(t *testing.T, readyURL string, code int, body string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, b := httpGet(t, readyURL+"/healthz/ready")
		if got == code && strings.Contains(b, body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz/ready: %d %q, want %d with %q", got, b, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestZtunnelModeAgainstFakeIstiod runs the ztunnel mode with the chart's
// environment against an in-process istiod (delta xDS and CA on one TLS
// port) and node agent: it connects as ztunnel does, is ready only once it
// has both the configuration and the node agent's snapshot, and serves a
// pod istio-cni names by its Kubernetes UID as the workload istiod names
// Kubernetes//Pod/<ns>/<name> (matched by IP): it asks the CA for that
// workload's identity.
func TestZtunnelModeAgainstFakeIstiod(t *testing.T) {
	ip := netip.MustParseAddr("10.244.2.2")
	podFD := agentPodNS(t, ip)
	f := startFakeIstiod(t, istioWorkload(t, "default", "b", "b", ip.String()), istioWorkload(t, "default", "a", "a", "10.244.1.2"))
	sock := filepath.Join(t.TempDir(), "ztunnel.sock")
	log := &logLines{}
	readyURL, statsURL, stop := ztunnelRun(t, f, f.rootPEM, sock, log)

	// Before istiod answers: not ready, and the probe says why.
	waitReady(t, readyURL, http.StatusServiceUnavailable, "no configuration")
	deadline := time.Now().Add(20 * time.Second)
	for {
		streams, _ := f.snapshot()
		if len(streams) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no discovery stream reached istiod; log %q", log.matching(""))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := httpGet(t, readyURL+"/healthz/ready"); code != http.StatusServiceUnavailable {
		t.Fatalf("ready with no configuration: %d", code)
	}

	// Configuration, but no node agent yet: still not ready.
	close(f.release)
	waitReady(t, readyURL, http.StatusServiceUnavailable, "pods not yet received from the node agent")

	// istio-cni comes up knowing the pod, named by its Kubernetes UID.
	const k8sUID = "0e6f3c59-5a8e-4d7a-9c1b-2f3e4d5a6b7c"
	agent, err := inpod.NewServer(sock, inpod.WithPods(inpod.Pod{UID: k8sUID, NetNSFD: podFD,
		Workload: &zdsapi.WorkloadInfo{Name: "b", Namespace: "default", ServiceAccount: "b"}}))
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	waitReady(t, readyURL, http.StatusOK, "ready")

	// The discovery stream: ztunnel's node id and metadata, the mounted
	// token as bearer, the cluster id as header.
	streams, _ := f.snapshot()
	st := streams[0]
	if got := st.md.Get("authorization"); len(got) != 1 || got[0] != "Bearer ztunnel-token" {
		t.Errorf("discovery authorization %q", got)
	}
	if got := st.md.Get("clusterid"); len(got) != 1 || got[0] != "cluster-7" {
		t.Errorf("discovery ClusterID %q", got)
	}
	if want := "ztunnel~10.244.0.5~ztunnel-x7k2p.istio-system~istio-system.svc.cluster.local"; st.node.GetId() != want {
		t.Errorf("node id %q, want %q", st.node.GetId(), want)
	}
	md := st.node.GetMetadata().GetFields()
	for k, want := range map[string]string{"NAME": "ztunnel-x7k2p", "NAMESPACE": "istio-system", "NODE_NAME": "node-1",
		"INSTANCE_IPS": "10.244.0.5", "CLUSTER_ID": "cluster-7"} {
		if got := md[k].GetStringValue(); got != want {
			t.Errorf("node metadata %s = %q, want %q", k, got, want)
		}
	}

	// The pod's certificate, asked of the CA at the discovery address on
	// the pod's behalf: only possible if the pod was matched to its
	// workload.
	deadline = time.Now().Add(20 * time.Second)
	var reqs []fakeCAReq
	for {
		_, reqs = f.snapshot()
		if len(reqs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate asked for; log %q", log.matching(""))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := reqs[0]; r.identity != bID || r.auth != "Bearer ztunnel-token" || r.clusterID != "cluster-7" {
		t.Errorf("CA request %+v, want identity %s, the token and cluster-7", r, bID)
	}
	if code, _ := httpGet(t, readyURL+"/metrics"); code != http.StatusNotFound {
		t.Errorf("readiness port serves /metrics (%d), want readiness only", code)
	}

	for _, path := range []string{"/metrics", "/stats/prometheus"} {
		code, body := httpGet(t, statsURL+path)
		if code != http.StatusOK || !strings.Contains(body, `node="node-1",mode="ztunnel"`) {
			t.Errorf("stats %s: %d %.200q", path, code, body)
		}
	}
	// The reference admin endpoints are not on the stats port.
	if code, _ := httpGet(t, statsURL+"/config_dump"); code != http.StatusNotFound {
		t.Errorf("stats /config_dump: %d, want 404", code)
	}
	stop()
	if drained := log.matching("drained"); len(drained) != 1 {
		t.Errorf("no drain on stop: %q", log.matching(""))
	}
}

// The ztunnel mode trusts istiod only through the mounted root: with a
// root of another CA no discovery stream reaches it and the proxy never
// becomes ready.
func TestZtunnelModeVerifiesIstiod(t *testing.T) {
	f := startFakeIstiod(t)
	close(f.release)
	_, _, otherRoot := testRoot(t)
	log := &logLines{}
	readyURL, _, _ := ztunnelRun(t, f, otherRoot, "@blastradius-ztunnel-test-none", log)
	time.Sleep(1500 * time.Millisecond)
	if streams, reqs := f.snapshot(); len(streams) != 0 || len(reqs) != 0 {
		t.Fatalf("an unverified istiod got %d streams, %d CA requests", len(streams), len(reqs))
	}
	if code, body := httpGet(t, readyURL+"/healthz/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no configuration") {
		t.Errorf("/healthz/ready: %d %q", code, body)
	}
	if l := log.matching("istiod certificate not trusted"); len(l) == 0 {
		t.Errorf("no log line says why istiod is refused: %q", log.matching(""))
	}
}
