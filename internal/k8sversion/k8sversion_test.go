package k8sversion

import (
	"os"
	"regexp"
	"testing"
)

// The Go code and the build (tools/k8s/go.mod, which the Makefile reads)
// must name the same release, or local-k8s would look for binaries that
// were never built.
func TestVersionIsTheOneToolsK8sBuilds(t *testing.T) {
	b, err := os.ReadFile("../../tools/k8s/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^require k8s\.io/kubernetes (v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("tools/k8s/go.mod requires no k8s.io/kubernetes")
	}
	if string(m[1]) != Version {
		t.Errorf("tools/k8s/go.mod builds %s, k8sversion.Version is %s", m[1], Version)
	}
}
