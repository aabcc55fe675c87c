package suiterun

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Providers the suites run on. The suites do not change with the provider:
// the binary is told which one with --provider, and a fault the provider
// cannot inject comes back as a skipped trial whose reason the spec skips
// with.
const (
	ProviderNetns      = "netns"      // the embedded cluster (default)
	ProviderKind       = "kind"       // a kind cluster from kind-config.yaml at the repository root
	ProviderKubeconfig = "kubeconfig" // an existing cluster: $KUBECONFIG
)

// Provider is the provider the suites run on: $PROVIDER, or netns. The
// local cluster (make local-k8s-up) is a kubeconfig provider.
func Provider() string {
	switch p := os.Getenv("PROVIDER"); p {
	case "":
		return ProviderNetns
	case "local-k8s":
		return ProviderKubeconfig
	default:
		return p
	}
}

// CheckProvider fails the suite at once on a PROVIDER it does not know,
// rather than running every spec against the wrong cluster. Call it from
// BeforeSuite.
func CheckProvider() error {
	switch Provider() {
	case ProviderNetns, ProviderKind, ProviderKubeconfig:
		return nil
	}
	return fmt.Errorf("PROVIDER=%q unknown (netns, kind, kubeconfig, local-k8s)", os.Getenv("PROVIDER"))
}

// ProviderArgs are the run flags that select the provider. On Kubernetes,
// $BLASTRADIUS_IMAGE names the image the nodes have (the suite's own build
// of the binary does not know the version `make images` stamped).
func ProviderArgs() []string {
	if img := os.Getenv("BLASTRADIUS_IMAGE"); img != "" && OnKubernetes() {
		return append(providerArgs(), "--image", img)
	}
	return providerArgs()
}

func providerArgs() []string {
	switch Provider() {
	case ProviderKind:
		return []string{"--provider", "kind", "--kind-config", filepath.Join(repoRoot(), "kind-config.yaml")}
	case ProviderKubeconfig:
		args := []string{"--provider", "kubeconfig"}
		if kc := os.Getenv("KUBECONFIG"); kc != "" {
			args = append(args, "--kubeconfig", kc)
		} else if os.Getenv("PROVIDER") == "local-k8s" {
			args = append(args, "--kubeconfig", filepath.Join(repoRoot(), ".cache", "local-k8s", "kubeconfig"))
		}
		return args
	}
	return []string{"--provider", "netns"}
}

// ProviderLabel is the spec label naming the provider.
func ProviderLabel() string { return "provider:" + Provider() }

// OnKubernetes says whether the suites run against a Kubernetes cluster.
func OnKubernetes() bool { return Provider() != ProviderNetns }

// TrialTimeout bounds one trial's run: a Kubernetes trial also applies
// objects, waits for pods and publishes the registry.
func TrialTimeout(load time.Duration) time.Duration {
	if OnKubernetes() {
		return 6*time.Minute + 2*load
	}
	return 3 * time.Minute
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	// suites/internal/suiterun/provider.go
	return strings.TrimSuffix(filepath.Dir(file), filepath.Join("suites", "internal", "suiterun"))
}
