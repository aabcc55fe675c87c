package scenario

import (
	"context"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

// FaultControlPlaneCrash SIGKILLs the control plane; its supervisor
// restarts it at once.
const FaultControlPlaneCrash = "controlplane-crash"

func init() {
	registerFault(&FaultKind{
		Name: FaultControlPlaneCrash, ControlPlane: true, Needs: need(CapCrashControlPlane), Modes: meshedModes, ModeReason: reasonControlPlane,
		Doc:   "SIGKILL of the control plane; its supervisor restarts it and proxies reconnect",
		Scope: controlPlaneScope,
		Inject: func(e *FaultEnv) error {
			cp, err := capability[controlPlane](e, "a control plane")
			if err != nil {
				return err
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			at, err := cp.CrashControlPlane()
			if err != nil {
				return err
			}
			i := e.Record(results.FaultRecord{Kind: FaultControlPlaneCrash, Target: "controlplane", Inject: at,
				Detail: "SIGKILL; recovered when it serves again"})
			e.Logf("fault: control plane killed")
			// StartControlPlane only waits here: the supervisor restarts a
			// killed process by itself.
			rctx, cancel := context.WithTimeout(e.Ctx, 20*time.Second)
			defer cancel()
			if _, err := cp.StartControlPlane(rctx); err != nil {
				return err
			}
			back := time.Now()
			e.Recovered(i, back)
			e.Logf("fault: control plane serving again after %s", ms(back.Sub(at)))
			return nil
		},
	})
}
