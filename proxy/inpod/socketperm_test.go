package inpod

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSocketFileOwnerOnly: a node agent socket on the filesystem is 0600
// whatever the umask, since a client that connects is sent every pod's
// network namespace.
func TestSocketFileOwnerOnly(t *testing.T) {
	// The most permissive umask, so the test fails without the chmod.
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "agent.sock")
	s, err := NewServer(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket %s has mode %v, want 0600", path, perm)
	}
}
