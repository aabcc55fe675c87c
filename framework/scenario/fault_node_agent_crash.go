package scenario

import "blastradius.dev/blastradius/framework/results"

// FaultNodeAgentCrash crashes the node agent (the CNI-like component that
// hands pods to the node proxy) and restarts it after RecoverAfter.
const FaultNodeAgentCrash = "node-agent-crash"

func init() {
	registerFault(&FaultKind{
		Name: FaultNodeAgentCrash, Fields: []string{"recoverAfter"}, Target: true, Needs: need(CapCrashNodeAgent), Modes: ambientOnly, ModeReason: "only ambient mode has a node agent",
		Doc: "the node agent (CNI-like, hands pod namespaces to the node proxy) crashes; with recoverAfter it restarts and re-sends its pods",
		Inject: func(e *FaultEnv) error {
			na, err := capability[nodeAgentCrasher](e, "a node agent")
			if err != nil {
				return err
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			at, err := na.CrashNodeAgent(e.Target)
			if err != nil {
				return err
			}
			i := e.Record(results.FaultRecord{Kind: FaultNodeAgentCrash, Target: e.Target, Inject: at,
				Detail: "node agent gone: the node proxy keeps the pods it has"})
			e.Logf("fault: node agent on %s crashed", e.Target)
			if e.Fault.RecoverAfter <= 0 {
				return nil
			}
			if err := e.Sleep(at.Add(e.Fault.RecoverAfter)); err != nil {
				return err
			}
			back, err := na.RestartNodeAgent(e.Target)
			if err != nil {
				return err
			}
			e.Recovered(i, back)
			e.Logf("fault: node agent on %s restarted", e.Target)
			return nil
		},
	})
}
