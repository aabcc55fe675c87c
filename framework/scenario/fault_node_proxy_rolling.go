package scenario

import "time"

// FaultNodeProxyRolling is a rolling upgrade of the node proxies: a
// graceful restart of each node's proxy in turn, the next one starting once
// the previous old proxy has exited (plus Then).
const FaultNodeProxyRolling = "node-proxy-rolling-upgrade"

func init() {
	registerFault(&FaultKind{
		Name: FaultNodeProxyRolling, Fields: []string{"then"}, Needs: need(CapRestartNodeProxy), Modes: ambientOnly, ModeReason: reasonNodeProxy,
		Doc:   "rolling upgrade: a graceful restart of every node's proxy, one node at a time",
		Scope: func(e *FaultEnv) []string { return e.Nodes() },
		Reach: func(Scenario, string) (Reach, string) {
			return ReachAll, "every node's proxy is restarted, and every pod's traffic crosses one"
		},
		Inject: func(e *FaultEnv) error {
			if err := e.WaitInject(); err != nil {
				return err
			}
			for i, n := range e.Nodes() {
				if i > 0 && e.Fault.Then > 0 {
					if err := e.Sleep(time.Now().Add(e.Fault.Then)); err != nil {
						return err
					}
				}
				if err := restartNodeProxy(e, n); err != nil {
					return err
				}
			}
			return nil
		},
	})
}
