package kube

import (
	"errors"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"blastradius.dev/blastradius/internal/oneline"
)

// Kubeconfig is a loaded kubeconfig: where it came from and its context.
type Kubeconfig struct {
	Source  string // the file, or "$KUBECONFIG=..."
	Context string
	Server  string
	Config  *rest.Config
}

// KubeconfigSource says which kubeconfig LoadKubeconfig would read:
// explicit (--kubeconfig) wins over $KUBECONFIG, which wins over
// ~/.kube/config, as kubectl does. Empty when there is none.
func KubeconfigSource(explicit string) string {
	if explicit != "" {
		return explicit
	}
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return "$KUBECONFIG=" + env
	}
	if _, err := os.Stat(clientcmd.RecommendedHomeFile); err == nil {
		return clientcmd.RecommendedHomeFile
	}
	return ""
}

// LoadKubeconfig reads a kubeconfig (see KubeconfigSource for which) and
// its current context. It does not contact the cluster. Errors are one line.
func LoadKubeconfig(explicit string) (*Kubeconfig, error) {
	src := KubeconfigSource(explicit)
	if src == "" {
		return nil, errors.New("no kubeconfig: give --kubeconfig, set $KUBECONFIG or create ~/.kube/config")
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %v", explicit, oneline.Lines(err.Error()))
		}
		rules.ExplicitPath = explicit
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %v", src, oneline.Lines(err.Error()))
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %v", src, oneline.Lines(err.Error()))
	}
	// Faults and waits are measured in seconds; client-go's default
	// throttle (5 qps) would make the runner itself the bottleneck.
	cfg.QPS, cfg.Burst = 50, 100
	return &Kubeconfig{Source: src, Context: raw.CurrentContext, Server: cfg.Host, Config: cfg}, nil
}

// Clients builds the dynamic client and a discovery-backed REST mapper
// (discovery is fetched lazily, on the first mapping) for a config.
func Clients(cfg *rest.Config) (dynamic.Interface, meta.RESTMapper, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("dynamic client: %v", oneline.Lines(err.Error()))
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("discovery client: %v", oneline.Lines(err.Error()))
	}
	return dyn, restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)), nil
}
