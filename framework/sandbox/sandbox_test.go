package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// When a kernel setting forbids user namespaces, the error must name it.
func TestExplainNamesTheForbiddingSetting(t *testing.T) {
	dir := t.TempDir()
	saved := knobs
	defer func() { knobs = saved }()
	path := filepath.Join(dir, "max_user_namespaces")
	knobs = []knob{{path, "user.max_user_namespaces=0", func(v string) bool { return v == "0" }}}

	if err := os.WriteFile(path, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	msg := explain(errors.New("fork/exec: " + syscall.ENOSPC.Error())).Error()
	if !strings.Contains(msg, "kernel setting user.max_user_namespaces=0 forbids it") || strings.Contains(msg, "\n") {
		t.Errorf("message %q does not name the setting on one line", msg)
	}
	if err := os.WriteFile(path, []byte("15000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	msg = explain(syscall.EPERM).Error()
	if strings.Contains(msg, "forbids it") || !strings.Contains(msg, "user.max_user_namespaces") {
		t.Errorf("with the setting allowed, message %q should list what to check", msg)
	}
}
