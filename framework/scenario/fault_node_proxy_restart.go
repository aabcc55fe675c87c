package scenario

import (
	"context"
	"fmt"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

// FaultNodeProxyRestart restarts the target node's proxy gracefully: the
// new one binds the same listeners, then the old one drains.
const FaultNodeProxyRestart = "node-proxy-restart"

func init() {
	registerFault(&FaultKind{
		Name: FaultNodeProxyRestart, Target: true, Needs: need(CapRestartNodeProxy), Modes: ambientOnly, ModeReason: reasonNodeProxy,
		Doc: "graceful restart of the node's proxy: the new one binds the same listeners (SO_REUSEPORT), then the old one drains until the drain deadline",
		Inject: func(e *FaultEnv) error {
			if err := e.WaitInject(); err != nil {
				return err
			}
			return restartNodeProxy(e, e.Target)
		},
	})
}

// restartNodeProxy hands one node's proxy over and waits for the old one to
// exit.
func restartNodeProxy(e *FaultEnv, node string) error {
	np, err := capability[nodeProxyRestarter](e, "a node proxy")
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(e.Ctx, 30*time.Second)
	defer cancel()
	started, ready, stopped, done, err := np.RestartNodeProxy(rctx, node)
	if err != nil {
		return err
	}
	i := e.Record(results.FaultRecord{Kind: FaultNodeProxyRestart, Target: node, Inject: stopped,
		Detail: fmt.Sprintf("new proxy started, ready after %s; old proxy drained (deadline %s)", ms(ready.Sub(started)), e.drain())})
	e.Logf("fault: node proxy on %s handed over (new ready in %s), old draining", node, ms(ready.Sub(started)))
	select {
	case <-done:
		e.Recovered(i, time.Now())
		e.Logf("fault: old node proxy on %s exited", node)
		return nil
	case <-e.Ctx.Done():
		return e.Ctx.Err()
	}
}

// drain is the scenario's drain deadline as the data plane applies it.
func (e *FaultEnv) drain() time.Duration {
	if e.Scenario.Mesh.Drain > 0 {
		return e.Scenario.Mesh.Drain
	}
	return 5 * time.Second
}
