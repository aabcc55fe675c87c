package localk8s

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// certValidity covers any cluster's life: clusters are torn down, not renewed.
const certValidity = 365 * 24 * time.Hour

// ca signs every certificate of one cluster. Keys are ECDSA P-256 (fast to
// make, accepted by every component); the service-account key is RSA, the
// one kind every token verifier takes.
type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
	l    layout
}

func newCA(l layout) (*ca, error) {
	if err := os.MkdirAll(filepath.Dir(l.pki("x")), 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "blastradius-local-k8s-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &ca{cert: cert, key: key, l: l}
	if err := writePEM(l.pki("ca.crt"), "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return c, writeKey(l.pki("ca.key"), key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// certSpec is one certificate to issue.
type certSpec struct {
	file   string // pki/<file>.crt and .key
	cn     string
	orgs   []string
	dns    []string
	ips    []net.IP
	server bool
	client bool
}

func (c *ca) issue(s certSpec) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     s.dns,
		IPAddresses:  s.ips,
	}
	if s.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return err
	}
	if err := writePEM(c.l.pki(s.file+".crt"), "CERTIFICATE", der, 0o644); err != nil {
		return err
	}
	return writeKey(c.l.pki(s.file+".key"), key)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// makePKI writes the CA, every component's certificate, the
// service-account key pair and the kubeconfigs of one cluster.
func makePKI(l layout, nodes []nodeState) error {
	c, err := newCA(l)
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	loopback := net.IPv4(127, 0, 0, 1)
	specs := []certSpec{
		{file: "apiserver", cn: "kube-apiserver", server: true,
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			ips: []net.IP{loopback, bridgeIP, net.ParseIP(serviceIP)}},
		// The apiserver's identity towards kubelets (exec, logs,
		// port-forward): system:masters passes the kubelets' webhook
		// authorization.
		{file: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{file: "admin", cn: "kubernetes-admin", orgs: []string{"system:masters"}, client: true},
		// The bootstrap RBAC policy binds these users to their roles.
		{file: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{file: "scheduler", cn: "system:kube-scheduler", client: true},
		{file: "kube-proxy", cn: "system:kube-proxy", client: true},
	}
	for _, n := range nodes {
		specs = append(specs,
			// The Node authorizer and NodeRestriction admission know a
			// kubelet by this name and group.
			certSpec{file: n.Name + "-kubelet-client", cn: "system:node:" + n.Name, orgs: []string{"system:nodes"}, client: true},
			certSpec{file: n.Name + "-kubelet", cn: n.Name, dns: []string{n.Name}, ips: []net.IP{net.ParseIP(n.IP)}, server: true})
	}
	for _, s := range specs {
		if err := c.issue(s); err != nil {
			return fmt.Errorf("certificate %s: %w", s.file, err)
		}
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	if err := writeKey(l.pki("sa.key"), sa); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(sa.Public())
	if err != nil {
		return err
	}
	if err := writePEM(l.pki("sa.pub"), "PUBLIC KEY", pub, 0o644); err != nil {
		return err
	}

	local := fmt.Sprintf("https://127.0.0.1:%d", apiserverPort)
	fromNodes := fmt.Sprintf("https://%s:%d", bridgeIP, apiserverPort)
	kcs := []struct{ path, server, cert string }{
		{l.Kubeconfig(), local, "admin"},
		{l.kubeconfig("controller-manager"), local, "controller-manager"},
		{l.kubeconfig("scheduler"), local, "scheduler"},
		{l.kubeconfig("kube-proxy"), fromNodes, "kube-proxy"},
	}
	for _, n := range nodes {
		kcs = append(kcs, struct{ path, server, cert string }{l.kubeconfig(n.Name), fromNodes, n.Name + "-kubelet-client"})
	}
	for _, k := range kcs {
		if err := writeKubeconfig(l, k.path, k.server, k.cert); err != nil {
			return fmt.Errorf("kubeconfig %s: %w", k.path, err)
		}
	}
	return nil
}

// writeKubeconfig embeds the certificates, so a kubeconfig is one file
// that works from anywhere on the machine.
func writeKubeconfig(l layout, path, server, cert string) error {
	caPEM, err := os.ReadFile(l.pki("ca.crt"))
	if err != nil {
		return err
	}
	crt, err := os.ReadFile(l.pki(cert + ".crt"))
	if err != nil {
		return err
	}
	key, err := os.ReadFile(l.pki(cert + ".key"))
	if err != nil {
		return err
	}
	const name = "local-k8s"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: crt, ClientKeyData: key}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, path)
}
