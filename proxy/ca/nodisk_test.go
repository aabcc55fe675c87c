package ca

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestCertFlowsWriteNothing runs every key-handling flow of the package — a
// root created, exported and loaded again, workload keys and certificates
// fetched, rotated and verified — with the working directory, HOME and
// TMPDIR pointing at empty directories, and checks they stay empty: keys
// live in memory only (a proxy's workload keys die with it, and the root key
// leaves the process only as bytes returned to the caller).
func TestCertFlowsWriteNothing(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"home", "tmp", "cwd"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(filepath.Join(dir, "cwd"))
	t.Setenv("HOME", filepath.Join(dir, "home"))
	t.Setenv("TMPDIR", filepath.Join(dir, "tmp"))

	root, err := New("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := root.RootKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	authority, err := Load("cluster.local", time.Hour, root.RootPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	cm := NewCertManager(func(_ context.Context, csr []byte, id string) ([]byte, error) { return authority.Sign(csr, id) }, authority.RootPEM)
	cm.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	defer cm.Close()
	pool, err := PoolFromPEM(root.RootPEM())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, id := range []string{"spiffe://cluster.local/ns/default/sa/a", "spiffe://cluster.local/ns/default/sa/b"} {
		c, err := cm.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyPeer(pool)(c.Certificate, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Past half life: the next Get renews (a new key per certificate).
	mu.Lock()
	now = now.Add(40 * time.Minute)
	mu.Unlock()
	if _, err := cm.Get(ctx, "spiffe://cluster.local/ns/default/sa/a"); err != nil {
		t.Fatal(err)
	}

	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Errorf("%s holds a private key", path)
		} else {
			t.Errorf("%s was written", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
