package nstest

import (
	"testing"
)

// A package whose tests cannot get their namespaces fails, unless the
// machine is declared unable to create them: it never reports ok having
// run nothing.
func TestCannotCreateNamespacesFailsUnlessDeclared(t *testing.T) {
	const missing = "/nonexistent/blastradius-test-binary" // Start fails as it would without namespaces
	t.Setenv(EnvNoNamespaces, "")
	if code := reexec("demo", missing, nil); code == 0 {
		t.Fatalf("exit %d when the namespaces could not be created, want a failure", code)
	}
	t.Setenv(EnvNoNamespaces, "1")
	if code := reexec("demo", missing, nil); code != 0 {
		t.Fatalf("exit %d with %s=1, want 0 (skipped)", code, EnvNoNamespaces)
	}
}
