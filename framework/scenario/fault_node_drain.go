package scenario

import (
	"context"
	"fmt"
	"sync"
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
		Name: FaultNodeDrain, Target: true,
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
			if err := e.WaitInject(); err != nil {
				return err
			}
			began := time.Now()
			i := e.Record(results.FaultRecord{Kind: FaultNodeDrain, Target: e.Target, Inject: began})
			e.Logf("fault: draining %s", e.Target)
			if e.Cluster == nil {
				return drainThroughProvider(e, i, began)
			}
			ctx, cancel := context.WithTimeout(e.Ctx, 20*time.Second)
			defer cancel()
			// 1. Replacements first, so a service never loses its last
			// endpoint to the drain.
			var moved []string
			for _, srv := range e.ServerPods(e.Target) {
				spare := srv + spareSuffix
				if _, ok := e.Cluster.Pod(spare); !ok {
					continue
				}
				pr, err := e.Cluster.Start(spare, serverSpec())
				if err != nil {
					return err
				}
				if err := e.Cluster.WaitProcessReady(ctx, pr); err != nil {
					return fmt.Errorf("replacement %s: %w", spare, err)
				}
				moved = append(moved, spare)
			}
			if err := e.waitEndpoints(ctx, moved); err != nil {
				return err
			}
			replaced := time.Now()
			// 2. Evict: SIGTERM every process of every workload on the node
			// at once, as the kubelet does, each with the drain deadline.
			var wg sync.WaitGroup
			for _, p := range e.plan.Pods {
				if nodeName(p.Node) != e.Target || (p.Role != "server" && p.Role != "client") {
					continue
				}
				pod, _ := e.Cluster.Pod(p.Name)
				for _, pr := range pod.Processes() {
					wg.Add(1)
					go func() { defer wg.Done(); e.Cluster.Stop(pr, e.drain()+time.Second) }()
				}
			}
			wg.Wait()
			evicted := time.Now()
			detail := fmt.Sprintf("replacements %v ready and in service after %s; workloads stopped after %s", moved, ms(replaced.Sub(began)), ms(evicted.Sub(replaced)))
			// 3. The node proxy goes last, draining what is left.
			if e.Mode == "ambient" {
				np, err := capability[nodeProxyDrainer](e, "a node proxy")
				if err != nil {
					return err
				}
				_, done, err := np.DrainNodeProxy(ctx, e.Target)
				if err != nil {
					return err
				}
				select {
				case <-done:
					detail += fmt.Sprintf("; node proxy drained and exited after %s", ms(time.Since(evicted)))
				case <-ctx.Done():
					return fmt.Errorf("node proxy on %s did not exit: %w", e.Target, ctx.Err())
				}
			}
			e.r.update(func() { e.tr.Faults[i].Detail = detail })
			e.Logf("fault: %s drained (%s)", e.Target, detail)
			return nil
		},
	})
}

// waitEndpoints waits until every pod is an endpoint of the services it
// belongs to.
func (e *FaultEnv) waitEndpoints(ctx context.Context, pods []string) error {
	for _, s := range e.Cluster.Services() {
		for _, pod := range pods {
			if !contains(s.Pods, pod) {
				continue
			}
			for !contains(s.Endpoints(), pod) {
				select {
				case <-ctx.Done():
					return fmt.Errorf("%s never became an endpoint of %s: %w", pod, s.Name, ctx.Err())
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// nodeDrainer drains a node on a provider other than the embedded cluster
// (Kubernetes: replacements scaled up and in service, cordon, evictions).
type nodeDrainer interface {
	DrainNode(ctx context.Context, node string, replacements []string) (replaced, evicted time.Time, detail string, err error)
}

func drainThroughProvider(e *FaultEnv, i int, began time.Time) error {
	d, ok := e.Infra.(nodeDrainer)
	if !ok {
		return fmt.Errorf("fault %s: this provider cannot drain a node", e.Fault.Kind)
	}
	var spares []string
	for _, srv := range e.ServerPods(e.Target) {
		spares = append(spares, srv+spareSuffix)
	}
	ctx, cancel := context.WithTimeout(e.Ctx, 3*time.Minute)
	defer cancel()
	replaced, evicted, how, err := d.DrainNode(ctx, e.Target, spares)
	if err != nil {
		return err
	}
	detail := fmt.Sprintf("replacements %v ready and in service after %s; pods evicted after %s; %s", spares, ms(replaced.Sub(began)), ms(evicted.Sub(replaced)), how)
	e.r.update(func() { e.tr.Faults[i].Detail = detail })
	e.Logf("fault: %s drained (%s)", e.Target, detail)
	return nil
}
