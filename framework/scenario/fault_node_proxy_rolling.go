package scenario

import (
	"fmt"
	"sync"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

// FaultNodeProxyRolling is a rolling upgrade of the node proxies: a
// graceful restart of each node's proxy in turn, the next one starting once
// the previous old proxy has exited (plus Then).
const FaultNodeProxyRolling = "node-proxy-rolling-upgrade"

func init() {
	registerFault(&FaultKind{
		Name: FaultNodeProxyRolling, Fields: []string{"then"}, Needs: need(CapRollNodeProxies), Modes: ambientOnly, ModeReason: reasonNodeProxy,
		Doc:   "rolling upgrade: a graceful restart of every node's proxy, one node at a time",
		Scope: func(e *FaultEnv) []string { return e.Nodes() },
		Reach: func(Scenario, string) (Reach, string) {
			return ReachAll, "every node's proxy is restarted, and every pod's traffic crosses one"
		},
		Inject: func(e *FaultEnv) error {
			if err := e.WaitInject(); err != nil {
				return err
			}
			if r, ok := e.DataPlane.(nodeProxyRoller); ok {
				return rollNodeProxies(e, r)
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

// rollNodeProxies has the data plane's controller roll the node proxies and
// records each node's hand-over as it happens: injected when the old proxy
// is told to stop, recovered when it has exited.
func rollNodeProxies(e *FaultEnv, r nodeProxyRoller) error {
	var mu sync.Mutex
	idx := map[string]int{}
	stopped := func(node string, at, ready time.Time) {
		i := e.Record(results.FaultRecord{Kind: FaultNodeProxyRestart, Target: node, Inject: at,
			Detail: fmt.Sprintf("rolled by its controller: the new proxy was ready %s before the old one was stopped", ms(at.Sub(ready)))})
		mu.Lock()
		idx[node] = i
		mu.Unlock()
		e.Logf("fault: node proxy on %s handed over (new ready %s before), old draining", node, ms(at.Sub(ready)))
	}
	gone := func(node string, at time.Time) {
		mu.Lock()
		i, ok := idx[node]
		mu.Unlock()
		if ok {
			e.Recovered(i, at)
			e.Logf("fault: old node proxy on %s exited", node)
		}
	}
	return r.RollNodeProxies(e.Ctx, e.Nodes(), stopped, gone)
}
