package scenario

import (
	"context"
	"fmt"
	"time"

	"blastradius.dev/blastradius/framework/results"
)

// FaultNodeDrain drains a node the way kubectl drain does: its server
// workloads get replacements on another node (pods the plan set aside,
// idle until now), which join the services; then every workload on the
// node is stopped gracefully, and in ambient mode the node's proxy drains
// and exits. Nothing comes back.
const FaultNodeDrain = "node-drain"

// spareSuffix names a server's replacement pod.
const spareSuffix = "-moved"

func init() {
	registerFault(&FaultKind{
		Name: FaultNodeDrain, Target: true, Needs: need(CapDrainNode),
		Doc: "graceful drain: the node's servers get replacements on another node, then its workloads stop (SIGTERM) and, in ambient mode, its node proxy drains",
		Scope: func(e *FaultEnv) []string {
			// The replacements' node is where the drain sends traffic, so
			// it is part of what the fault touches.
			var spares []string
			for _, p := range e.plan.Pods {
				if p.Role == "spare" {
					spares = append(spares, p.Name)
				}
			}
			return append([]string{e.Target}, e.nodesOf(spares...)...)
		},
		Inject: func(e *FaultEnv) error {
			d, err := infraCap[NodeDrainer](e, "drain a node")
			if err != nil {
				return err
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			began := time.Now()
			i := e.Record(results.FaultRecord{Kind: FaultNodeDrain, Target: e.Target, Inject: began})
			e.Logf("fault: draining %s", e.Target)
			var spares []string
			for _, srv := range e.ServerPods(e.Target) {
				if spare := srv + spareSuffix; e.planned(spare) {
					spares = append(spares, spare)
				}
			}
			ctx, cancel := context.WithTimeout(e.Ctx, 3*time.Minute)
			defer cancel()
			replaced, evicted, how, err := d.DrainNode(ctx, e.Target, spares, e.drain())
			if err != nil {
				return err
			}
			detail := fmt.Sprintf("replacements %v ready and in service after %s; workloads stopped after %s", spares, ms(replaced.Sub(began)), ms(evicted.Sub(replaced)))
			if how != "" {
				detail += "; " + how
			}
			// The node proxy goes last, draining what is left, where the data
			// plane drains one (a DaemonSet's pod stays, as kubectl drain
			// --ignore-daemonsets leaves it).
			if np, ok := e.DataPlane.(nodeProxyDrainer); ok && BaseMode(e.Mode) == "ambient" {
				pctx, cancel := context.WithTimeout(e.Ctx, 20*time.Second)
				defer cancel()
				_, done, err := np.DrainNodeProxy(pctx, e.Target)
				if err != nil {
					return err
				}
				select {
				case <-done:
					detail += fmt.Sprintf("; node proxy drained and exited after %s", ms(time.Since(evicted)))
				case <-pctx.Done():
					return fmt.Errorf("node proxy on %s did not exit: %w", e.Target, pctx.Err())
				}
			}
			e.r.update(func() { e.tr.Faults[i].Detail = detail })
			e.Logf("fault: %s drained (%s)", e.Target, detail)
			return nil
		},
	})
}

// planned says whether the plan has a pod.
func (e *FaultEnv) planned(pod string) bool {
	for _, p := range e.plan.Pods {
		if p.Name == pod {
			return true
		}
	}
	return false
}
