package scenario

import (
	"blastradius.dev/blastradius/framework/results"
)

// FaultNodeCrash takes a node's links down and SIGKILLs everything on it;
// with RecoverAfter it reboots (links up, processes started afresh).
const FaultNodeCrash = "node-crash"

func init() {
	registerFault(&FaultKind{
		Name:   FaultNodeCrash,
		Fields: []string{"recoverAfter"},
		Needs:  need(CapCrashNode),
		Doc:    "the node's links go down and every process on it is SIGKILLed; with recoverAfter it reboots",
		Target: true,
		Inject: func(e *FaultEnv) error {
			if err := e.WaitInject(); err != nil {
				return err
			}
			nodes, err := infraCap[NodeCrasher](e, "crash a node")
			if err != nil {
				return err
			}
			at, err := nodes.CrashNode(e.Target)
			if err != nil {
				return err
			}
			i := e.Record(results.FaultRecord{Kind: FaultNodeCrash, Target: e.Target, Inject: at,
				Detail: "links down, then SIGKILL of every process on the node"})
			e.Logf("fault: crashed %s", e.Target)
			if e.Fault.RecoverAfter <= 0 {
				return nil
			}
			if err := e.Sleep(at.Add(e.Fault.RecoverAfter)); err != nil {
				return err
			}
			back, err := nodes.RecoverNode(e.Target)
			if err != nil {
				return err
			}
			e.Recovered(i, back)
			e.Logf("fault: %s rebooted after %.1fs", e.Target, back.Sub(at).Seconds())
			return nil
		},
	})
}
