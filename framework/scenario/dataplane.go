package scenario

import (
	"context"

	"blastradius.dev/blastradius/framework/cluster/netns"
)

// DataPlane is a mesh installed on the embedded cluster. Mode "none" has
// none: plain networking and kube-proxy-like VIPs.
type DataPlane interface {
	// InfraPods are the data plane's own pods (control plane, node proxies,
	// waypoints), added to the cluster at bring-up.
	InfraPods(nodes int) []netns.PodSpec
	// Deploy starts the data plane and meshes the application pods; it runs
	// before any application process starts and returns when it is ready.
	Deploy(ctx context.Context, cl *netns.Cluster, apps []netns.PodSpec) error
	// EndpointsChanged follows the endpoint controller.
	EndpointsChanged(netns.EndpointChange)
	// Collect saves the data plane's own evidence (metrics, config dumps)
	// into dir at the end of a trial.
	Collect(ctx context.Context, dir string) error
	// Describe names the implementation and version for run.json.
	Describe() string
	// Close releases what Deploy created outside the cluster.
	Close()
}

// NewDataPlane builds the data plane for a mode; set by the package that
// implements the reference data plane, so scenario does not depend on it.
var NewDataPlane = func(mode, dir string, logf func(string, ...any)) (DataPlane, error) { return nil, nil }
