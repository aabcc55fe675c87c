package scenario

import (
	"context"
	"time"
)

// What a data plane may offer for faults. Each fault asks for the one it
// needs (see capability), so a data plane without it makes the fault an
// error with the reason, never a crash.

type nodeProxyCrasher interface {
	CrashNodeProxy(node string) (time.Time, error)
}

type nodeProxyRestarter interface {
	RestartNodeProxy(ctx context.Context, node string) (started, ready, stopped time.Time, done <-chan struct{}, err error)
}

type nodeProxyDrainer interface {
	DrainNodeProxy(ctx context.Context, node string) (stopped time.Time, done <-chan struct{}, err error)
}

type controlPlane interface {
	StopControlPlane() (time.Time, error)
	StartControlPlane(ctx context.Context) (time.Time, error)
	CrashControlPlane() (time.Time, error)
	CertExpiries(ctx context.Context) (map[string]time.Time, error)
	// ControlPlanePod names the control plane's pod, to find its node.
	ControlPlanePod() string
}

type nodeAgentCrasher interface {
	CrashNodeAgent(node string) (time.Time, error)
	RestartNodeAgent(node string) (time.Time, error)
}

type waypoints interface {
	WaypointPods() []string
	CrashWaypoint(pod string) (time.Time, error)
	StopWaypoints() (time.Time, error)
	StartWaypoints(ctx context.Context) (time.Time, error)
}

type sidecarCrasher interface {
	CrashSidecar(pod string) (time.Time, error)
}

type appPodRestarter interface {
	RestartAppPod(ctx context.Context, pod string) (stopped, ready time.Time, err error)
}

// waypointConfigurer is how a scenario's waypoint reaches the data plane
// before it deploys.
type waypointConfigurer interface {
	ConfigureWaypoint(service string, replicas int)
}
