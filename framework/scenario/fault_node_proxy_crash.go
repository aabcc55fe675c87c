package scenario

import "blastradius.dev/blastradius/framework/results"

// FaultNodeProxyCrash SIGKILLs the target node's proxy; its supervisor
// restarts it.
const FaultNodeProxyCrash = "node-proxy-crash"

var ambientOnly = []string{"ambient"}

const reasonNodeProxy = "only ambient mode has a proxy per node"

func init() {
	registerFault(&FaultKind{
		Name: FaultNodeProxyCrash, Target: true, Needs: need(CapCrashNodeProxy), Modes: ambientOnly, ModeReason: reasonNodeProxy,
		Doc: "SIGKILL of the node's proxy; its supervisor restarts it with back-off",
		Inject: func(e *FaultEnv) error {
			np, err := capability[nodeProxyCrasher](e, "a node proxy")
			if err != nil {
				return err
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			at, err := np.CrashNodeProxy(e.Target)
			if err != nil {
				return err
			}
			e.Record(results.FaultRecord{Kind: FaultNodeProxyCrash, Target: e.Target, Inject: at,
				Detail: "SIGKILL of the node proxy; the supervisor restarts it"})
			e.Logf("fault: node proxy on %s killed", e.Target)
			return nil
		},
	})
}
