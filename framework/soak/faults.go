package soak

import (
	"context"
	"fmt"
	"time"

	"blastradius.dev/blastradius/framework/dataplane"
	"blastradius.dev/blastradius/framework/scenario"
)

// The rotation's faults, named as the scenario catalogue names them: the
// soak injects each the way the catalogue's fault does, over and over.
const (
	FaultNodeProxyCrash    = scenario.FaultNodeProxyCrash
	FaultNodeAgentCrash    = scenario.FaultNodeAgentCrash
	FaultNodeProxyRestart  = scenario.FaultNodeProxyRestart
	FaultControlPlaneCrash = scenario.FaultControlPlaneCrash
	FaultWaypointKill      = scenario.FaultWaypointKill
	FaultControlPlaneDown  = scenario.FaultControlPlaneDown
)

// A rotFault is one fault of the rotation. inject carries it out and waits
// until its target serves again; it returns the target, the instant the
// fault took effect and when it was over.
type rotFault struct {
	name   string
	inject func(ctx context.Context) (target, detail string, at, back time.Time, err error)
}

func rotNames(rot []rotFault) []string {
	var out []string
	for _, f := range rot {
		out = append(out, f.name)
	}
	return out
}

// recoverWait bounds every wait for a faulted process to serve again.
const recoverWait = 30 * time.Second

// rotation is the faults the soak cycles through, in order: each exercises
// a path where state can be left behind. A crashed node proxy leaves its
// peers with dead HBONE connections to clean up; a graceful restart hands
// listeners over and drains; a node agent crash makes the node proxy
// reconnect and reconcile its pods; a control plane crash or restart makes
// every proxy's xDS and CA clients reconnect; a waypoint crash does the same
// to the node proxies' waypoint connections. Node proxies are faulted on
// node-2..node-N in turn, never on node-1, and the waypoint fault hits the
// last replica, never waypoint-0, so those live through the whole soak.
func (s *soak) rotation() []rotFault {
	n := s.cfg.Nodes
	var proxyTurn, agentTurn int
	// nextProxyNode cycles node-2..node-N.
	nextProxyNode := func() string { proxyTurn++; return fmt.Sprintf("node-%d", 2+(proxyTurn-1)%(n-1)) }
	// nextAgentNode cycles node-1..node-N: a node agent crash leaves the
	// node proxy running (it reconnects), so node-1 takes part.
	nextAgentNode := func() string { agentTurn++; return fmt.Sprintf("node-%d", 1+(agentTurn-1)%n) }
	agentDown := min(5*time.Second, s.cfg.FaultEvery/3)
	rot := []rotFault{
		{FaultNodeProxyCrash, func(ctx context.Context) (string, string, time.Time, time.Time, error) {
			node := nextProxyNode()
			t := s.find(nodeProxyPod(node))
			old := t.pr.Pid()
			at, err := s.dp.CrashNodeProxy(node)
			if err != nil {
				return node, "", at, time.Time{}, err
			}
			back, err := s.waitServing(ctx, t, old)
			return node, "SIGKILL; the supervisor restarts it", at, back, err
		}},
		{FaultNodeAgentCrash, func(ctx context.Context) (string, string, time.Time, time.Time, error) {
			node := nextAgentNode()
			at, err := s.dp.CrashNodeAgent(node)
			if err != nil {
				return node, "", at, time.Time{}, err
			}
			select {
			case <-ctx.Done():
			case <-time.After(agentDown):
			}
			// Restarted even when interrupted: the node agent is the
			// runner's, and a closed one is what Close expects anyway.
			back, err := s.dp.RestartNodeAgent(node)
			return node, fmt.Sprintf("node agent down for %s, then restarted with its pods", agentDown), at, back, err
		}},
		{FaultNodeProxyRestart, func(ctx context.Context) (string, string, time.Time, time.Time, error) {
			node := nextProxyNode()
			name := nodeProxyPod(node)
			rctx, cancel := context.WithTimeout(ctx, recoverWait)
			defer cancel()
			started, ready, stopped, done, err := s.dp.RestartNodeProxy(rctx, node)
			if err != nil {
				return node, "", started, time.Time{}, err
			}
			// The fault loop is the only writer of dp.Proxies, and this
			// runs on it.
			s.replaced(name, s.dp.Proxies[name])
			detail := fmt.Sprintf("graceful: new proxy ready after %s, old one drains", ready.Sub(started).Round(time.Millisecond))
			select {
			case <-done:
				return node, detail, stopped, time.Now(), nil
			case <-time.After(s.dp.Drain + recoverWait):
				return node, detail, stopped, time.Time{}, fmt.Errorf("old proxy on %s still running %s after SIGTERM", node, s.dp.Drain+recoverWait)
			}
		}},
		{FaultControlPlaneCrash, func(ctx context.Context) (string, string, time.Time, time.Time, error) {
			t := s.find(dataplane.ControlPlanePod)
			old := t.pr.Pid()
			at, err := s.dp.CrashControlPlane()
			if err != nil {
				return dataplane.ControlPlanePod, "", at, time.Time{}, err
			}
			// The supervisor restarts it. Waiting for its readiness alone
			// would return at once: the killed process counts as ready
			// until its exit has been reaped.
			back, err := s.waitServing(ctx, t, old)
			return dataplane.ControlPlanePod, "SIGKILL; the supervisor restarts it", at, back, err
		}},
	}
	if wps := s.dp.WaypointPods(); len(wps) > 1 {
		victim := wps[len(wps)-1]
		rot = append(rot, rotFault{FaultWaypointKill, func(ctx context.Context) (string, string, time.Time, time.Time, error) {
			t := s.find(victim)
			old := t.pr.Pid()
			at, err := s.dp.CrashWaypoint(victim)
			if err != nil {
				return victim, "", at, time.Time{}, err
			}
			back, err := s.waitServing(ctx, t, old)
			return victim, "SIGKILL; the supervisor restarts it", at, back, err
		}})
	}
	rot = append(rot, rotFault{FaultControlPlaneDown, func(ctx context.Context) (string, string, time.Time, time.Time, error) {
		at, err := s.dp.StopControlPlane()
		if err != nil {
			return dataplane.ControlPlanePod, "", at, time.Time{}, err
		}
		// Started again even when interrupted: StopControlPlane parked it,
		// and the proxies are better off with one.
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		rctx, cancel := context.WithTimeout(context.Background(), recoverWait)
		defer cancel()
		if _, err = s.dp.StartControlPlane(rctx); err != nil {
			return dataplane.ControlPlanePod, "", at, time.Time{}, err
		}
		return dataplane.ControlPlanePod, "SIGTERM, down 2s, started again", at, time.Now(), nil
	}})
	return rot
}

func nodeProxyPod(node string) string {
	var i int
	fmt.Sscanf(node, "node-%d", &i)
	return dataplane.ZtunnelPod(i)
}

// find returns a copy of a tracked process's current state.
func (s *soak) find(name string) tracked {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.procs {
		if t.name == name {
			return *t
		}
	}
	return tracked{name: name}
}

// waitServing waits until a crashed process runs again under a new PID and
// passes its readiness probe.
func (s *soak) waitServing(ctx context.Context, t tracked, oldPID int) (time.Time, error) {
	if t.pr == nil {
		return time.Time{}, fmt.Errorf("%s is not tracked", t.name)
	}
	deadline := time.After(recoverWait)
	for {
		if pid := t.pr.Pid(); pid != 0 && pid != oldPID && t.pr.Ready() {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-deadline:
			return time.Time{}, fmt.Errorf("%s not serving again %s after the crash", t.name, recoverWait)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// faultLoop injects fault k of the rotation at start + k × FaultEvery +
// SampleEvery/2 until the end (or ctx ends). The half sampling interval keeps
// faults between samples: with intervals that are multiples of each other
// every fault would otherwise land on a sample and find its target down.
// Faults run one at a time: one that takes longer than the interval delays
// the next rather than overlapping it.
func (s *soak) faultLoop(ctx context.Context, rot []rotFault) {
	for k := 1; ; k++ {
		at := s.start.Add(time.Duration(k)*s.cfg.FaultEvery + s.cfg.SampleEvery/2)
		if !at.Before(s.end) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		f := rot[(k-1)%len(rot)]
		target, detail, inj, back, err := f.inject(ctx)
		if inj.IsZero() {
			inj = time.Now()
		}
		rec := FaultRecord{Kind: "fault", N: k, Fault: f.name, Target: target, At: inj, Elapsed: s.elapsed(inj), Detail: detail}
		if !back.IsZero() {
			rec.Recovered = &back
			rec.TookS = float64(back.Sub(inj).Milliseconds()) / 1000
		}
		if err != nil {
			rec.Error = err.Error()
			s.logf("fault %d: %s on %s: %v", k, f.name, target, err)
		} else {
			s.logf("fault %d: %s on %s (back after %.2fs)", k, f.name, target, rec.TookS)
		}
		s.mu.Lock()
		s.faults = append(s.faults, rec)
		s.mu.Unlock()
		s.write(rec)
	}
}

// neverFaulted names the processes no fault of the rotation targets:
// node-1's proxy and the first waypoint replica (with a single replica
// there is no waypoint fault at all: a crash would leave the service with
// no waypoint, an outage rather than a leak test).
func (s *soak) neverFaulted() []string {
	out := []string{dataplane.ZtunnelPod(1)}
	if wps := s.dp.WaypointPods(); len(wps) > 0 {
		out = append(out, wps[0])
	}
	return out
}
