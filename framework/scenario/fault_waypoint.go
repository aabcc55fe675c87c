package scenario

import (
	"fmt"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

// Waypoint faults. The scenario must put a waypoint in front of a service
// (Mesh.Waypoint).
const (
	// FaultWaypointKill SIGKILLs one waypoint replica (Fault.Pod, default the
	// last one); its supervisor restarts it.
	FaultWaypointKill = "waypoint-replica-kill"
	// FaultWaypointAllKilled SIGKILLs every replica at once; their
	// supervisors restart them.
	FaultWaypointAllKilled = "waypoint-all-killed"
	// FaultWaypointOutage stops every replica for RecoverAfter.
	FaultWaypointOutage = "waypoint-outage"
)

const reasonWaypoint = "waypoints are an ambient-mode component"

func init() {
	registerFault(&FaultKind{
		Name: FaultWaypointKill, Fields: []string{"pod"}, NeedsWaypoint: true, Needs: need(CapWaypoints), Modes: ambientOnly, ModeReason: reasonWaypoint,
		Doc: "SIGKILL of one waypoint replica (pod, default the last); its supervisor restarts it",
		Scope: func(e *FaultEnv) []string {
			pod, err := e.waypointTarget()
			if err != nil {
				return nil
			}
			return e.nodesOf(pod)
		},
		Inject: func(e *FaultEnv) error {
			wp, err := capability[waypoints](e, "waypoints")
			if err != nil {
				return err
			}
			pod, err := e.waypointTarget()
			if err != nil {
				return err
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			at, err := wp.CrashWaypoint(pod)
			if err != nil {
				return err
			}
			e.Record(results.FaultRecord{Kind: FaultWaypointKill, Target: pod, Inject: at, Detail: "SIGKILL; the supervisor restarts it"})
			e.Logf("fault: waypoint replica %s killed", pod)
			return nil
		},
	})
	registerFault(&FaultKind{
		Name: FaultWaypointAllKilled, NeedsWaypoint: true, Needs: need(CapWaypoints), Modes: ambientOnly, ModeReason: reasonWaypoint,
		Doc:   "SIGKILL of every waypoint replica at once; their supervisors restart them",
		Scope: waypointNodes,
		Inject: func(e *FaultEnv) error {
			wp, err := capability[waypoints](e, "waypoints")
			if err != nil {
				return err
			}
			pods := wp.WaypointPods()
			if len(pods) == 0 {
				return fmt.Errorf("fault %s: the scenario has no waypoint (mesh.waypoint)", e.Fault.Kind)
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			var first time.Time
			for _, pod := range pods {
				at, err := wp.CrashWaypoint(pod)
				if err != nil {
					return err
				}
				if first.IsZero() {
					first = at
				}
			}
			e.Record(results.FaultRecord{Kind: FaultWaypointAllKilled, Target: "waypoint", Inject: first,
				Detail: fmt.Sprintf("SIGKILL of all %d replicas; the supervisors restart them", len(pods))})
			e.Logf("fault: every waypoint replica killed")
			return nil
		},
	})
	registerFault(&FaultKind{
		Name: FaultWaypointOutage, Fields: []string{"recoverAfter"}, NeedsWaypoint: true, Needs: need(CapWaypoints), Modes: ambientOnly, ModeReason: reasonWaypoint,
		Doc:   "every waypoint replica is stopped; they come back after recoverAfter",
		Scope: waypointNodes,
		Inject: func(e *FaultEnv) error {
			wp, err := capability[waypoints](e, "waypoints")
			if err != nil {
				return err
			}
			if len(wp.WaypointPods()) == 0 {
				return fmt.Errorf("fault %s: the scenario has no waypoint (mesh.waypoint)", e.Fault.Kind)
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			at, err := wp.StopWaypoints()
			if err != nil {
				return err
			}
			// Stopping drains the replicas first; the outage lasts
			// RecoverAfter from when the last one is gone.
			down := time.Now()
			i := e.Record(results.FaultRecord{Kind: FaultWaypointOutage, Target: "waypoint", Inject: at,
				Detail: fmt.Sprintf("all %d replicas stopped (drained in %s)", len(wp.WaypointPods()), ms(down.Sub(at)))})
			e.Logf("fault: every waypoint replica stopped")
			return e.RecoverAfter(i, down, "waypoints back", wp.StartWaypoints)
		},
	})
}

// waypointNodes is where every replica runs.
func waypointNodes(e *FaultEnv) []string {
	wp, err := capability[waypoints](e, "waypoints")
	if err != nil {
		return nil
	}
	return e.nodesOf(wp.WaypointPods()...)
}

// waypointTarget is the replica a single-replica fault aims at.
func (e *FaultEnv) waypointTarget() (string, error) {
	wp, err := capability[waypoints](e, "waypoints")
	if err != nil {
		return "", err
	}
	pods := wp.WaypointPods()
	if len(pods) == 0 {
		return "", fmt.Errorf("fault %s: the scenario has no waypoint (mesh.waypoint)", e.Fault.Kind)
	}
	if e.Fault.Pod == "" {
		return pods[len(pods)-1], nil
	}
	if !contains(pods, e.Fault.Pod) {
		return "", fmt.Errorf("fault %s: %s is not a waypoint replica (%v)", e.Fault.Kind, e.Fault.Pod, pods)
	}
	return e.Fault.Pod, nil
}

// nodesOf lists the nodes pods run on.
func (e *FaultEnv) nodesOf(pods ...string) []string {
	var out []string
	for _, name := range pods {
		if n, ok := e.podNode(name); ok && !contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
