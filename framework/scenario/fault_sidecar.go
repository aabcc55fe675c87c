package scenario

import (
	"context"
	"fmt"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

// Sidecar faults.
const (
	// FaultSidecarCrash SIGKILLs the sidecar of one pod (Fault.Pod, default
	// the server on the target node); its supervisor restarts it.
	FaultSidecarCrash = "sidecar-crash"
	// FaultSidecarRolling is a sidecar upgrade: every server pod is
	// restarted, one at a time (Then apart), its sidecar draining first.
	FaultSidecarRolling = "sidecar-rolling-restart"
)

var sidecarOnly = []string{"sidecar"}

const reasonSidecar = "only sidecar mode has sidecars"

func init() {
	registerFault(&FaultKind{
		Name: FaultSidecarCrash, Fields: []string{"pod"}, Target: true, Needs: need(CapCrashSidecar), Modes: sidecarOnly, ModeReason: reasonSidecar,
		Doc: "SIGKILL of one pod's sidecar (pod, default the server on the node); its supervisor restarts it",
		Scope: func(e *FaultEnv) []string {
			if pod, err := e.sidecarTarget(); err == nil {
				return e.nodesOf(pod)
			}
			return nil
		},
		Inject: func(e *FaultEnv) error {
			sc, err := capability[sidecarCrasher](e, "sidecars")
			if err != nil {
				return err
			}
			pod, err := e.sidecarTarget()
			if err != nil {
				return err
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			at, err := sc.CrashSidecar(pod)
			if err != nil {
				return err
			}
			e.Record(results.FaultRecord{Kind: FaultSidecarCrash, Target: pod, Inject: at, Detail: "SIGKILL of the sidecar; the supervisor restarts it"})
			e.Logf("fault: sidecar of %s killed", pod)
			return nil
		},
	})
	registerFault(&FaultKind{
		Name: FaultSidecarRolling, Fields: []string{"then"}, Needs: need(CapRestartAppPod), Modes: sidecarOnly, ModeReason: reasonSidecar,
		Doc: "a sidecar upgrade: every server pod is restarted in turn (its sidecar drains first); load clients, the instrument, are not",
		Scope: func(e *FaultEnv) []string {
			return e.nodesOf(e.podsWithRole("server")...)
		},
		Inject: func(e *FaultEnv) error {
			rp, err := capability[appPodRestarter](e, "pod restarts")
			if err != nil {
				return err
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			for k, pod := range e.podsWithRole("server") {
				if k > 0 && e.Fault.Then > 0 {
					if err := e.Sleep(time.Now().Add(e.Fault.Then)); err != nil {
						return err
					}
				}
				began := time.Now()
				rctx, cancel := context.WithTimeout(e.Ctx, e.drain()+20*time.Second)
				stopped, ready, err := rp.RestartAppPod(rctx, pod)
				cancel()
				if err != nil {
					return fmt.Errorf("restart %s: %w", pod, err)
				}
				i := e.Record(results.FaultRecord{Kind: FaultSidecarRolling, Target: pod, Inject: began,
					Detail: fmt.Sprintf("pod restarted: stopped after %s, ready %s later", ms(stopped.Sub(began)), ms(ready.Sub(stopped)))})
				e.Recovered(i, ready)
				e.Logf("fault: pod %s restarted (%s)", pod, ms(ready.Sub(began)))
			}
			return nil
		},
	})
}

// sidecarTarget is the pod whose sidecar a sidecar crash kills.
func (e *FaultEnv) sidecarTarget() (string, error) {
	if e.Fault.Pod != "" {
		if _, ok := e.podNode(e.Fault.Pod); !ok {
			return "", fmt.Errorf("fault %s: no pod %s", e.Fault.Kind, e.Fault.Pod)
		}
		return e.Fault.Pod, nil
	}
	pods := e.ServerPods(e.Target)
	if len(pods) == 0 {
		return "", fmt.Errorf("fault %s: no server pod on %s", e.Fault.Kind, e.Target)
	}
	return pods[0], nil
}
