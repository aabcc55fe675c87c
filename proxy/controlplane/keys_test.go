package controlplane

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/xds"
)

// noPrivateKeyUnder fails if any file under dir holds a PEM private key.
func noPrivateKeyUnder(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a private key", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCARootFromEnvNeverOnDisk: with the root handed over in the environment
// (as the embedded cluster's runner does), the control plane signs with that
// root, drops it from its environment, and writes no key anywhere: not in
// its working directory, HOME or TMPDIR.
func TestCARootFromEnvNeverOnDisk(t *testing.T) {
	root, err := ca.New("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := root.RootKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{"home", "tmp", "cwd"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(filepath.Join(dir, "cwd"))
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("TMPDIR", filepath.Join(dir, "tmp"))
	t.Setenv(EnvCARootCert, string(root.RootPEM()))
	t.Setenv(EnvCARootKey, string(keyPEM))
	reg := filepath.Join(dir, "registry.json")
	writeRegistry(t, reg, registrySnapshot(1))

	var stdout, stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- Main([]string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--registry", reg}, &stdout, &stderr)
	}()
	stopped := false
	defer func() {
		if !stopped {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			<-exit
		}
	}()
	addrRE := regexp.MustCompile(`xds=(\S+)`)
	var addr string
	eventually(t, "startup line", func() bool {
		m := addrRE.FindStringSubmatch(stdout.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	if v, ok := os.LookupEnv(EnvCARootKey); ok {
		t.Errorf("$%s still set after start (%d bytes)", EnvCARootKey, len(v))
	}

	c, err := xds.NewClient(addr, "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := xds.SpiffeID("cluster.local", "default", "server")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	chain, err := c.Sign(ctx, mustCSR(t, id), id)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(chain)
	if b == nil {
		t.Fatalf("no PEM in %q", chain)
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := ca.PoolFromPEM(root.RootPEM())
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("leaf not signed by the root from the environment: %v", err)
	}

	_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	stopped = true
	if code := <-exit; code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	noPrivateKeyUnder(t, dir)
}

// TestCARootSourcesExclusive: half a root in the environment, or a root in
// both the environment and --ca-dir, is a usage error, not a silent choice.
func TestCARootSourcesExclusive(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "registry.json")
	t.Setenv(EnvCARootCert, "x")
	var stdout, stderr syncBuffer
	if code := Main([]string{"--registry", reg}, &stdout, &stderr); code != exitUsage {
		t.Errorf("certificate without key: exit %d (%s), want %d", code, stderr.String(), exitUsage)
	}
	t.Setenv(EnvCARootKey, "y")
	if code := Main([]string{"--registry", reg, "--ca-dir", t.TempDir()}, &stdout, &stderr); code != exitUsage {
		t.Errorf("env and --ca-dir: exit %d (%s), want %d", code, stderr.String(), exitUsage)
	}
}

// TestCADirKeyReadableByOthersRefused: a persisted root key whose mode lets
// others read it is refused, and a fresh one is written 0600 even under the
// most permissive umask.
func TestCADirKeyReadableByOthersRefused(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := loadCA(dir, "cluster.local", time.Hour); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "root-key.pem")
	for path, want := range map[string]os.FileMode{dir: 0o700, key: 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, %v; want mode %v", path, fi.Mode().Perm(), err, want)
		}
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadCA(dir, "cluster.local", time.Hour); err == nil {
		t.Error("a world-readable root key was loaded")
	}
}
