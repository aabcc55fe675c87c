package scenario

import (
	"fmt"
	"net"
	"strconv"

	"blastradius.dev/blastradius/framework/results"
)

// FaultBlackHole drops one flow's packets for exactly the given hole
// lengths: the measurement's ground truth.
const FaultBlackHole = "blackhole"

func init() {
	registerFault(&FaultKind{
		Name: FaultBlackHole,
		Doc:  "one flow's packets are dropped (nftables) for exactly each of the given hole lengths: ground truth for the measurement",
		Scope: func(e *FaultEnv) []string {
			if f := e.blackHoleFlow(); f != nil {
				return []string{nodeName(f.ClientNode), nodeName(f.ServerNode)}
			}
			return nil
		},
		Inject: func(e *FaultEnv) error {
			f := e.Fault
			flow := e.blackHoleFlow()
			if flow == nil {
				return fmt.Errorf("black hole: no flow %q", f.Flow)
			}
			if err := e.WaitInject(); err != nil {
				return err
			}
			cp, _ := e.Cluster.Pod(flow.Client)
			port := HTTPPort
			if flow.Kind.Profile == ProfileStream {
				port = TCPPort
			}
			for i, d := range f.Holes {
				at, undo, err := e.Cluster.DropFlow(flow.Server, cp.IP, port)
				if err != nil {
					return err
				}
				rec := results.FaultRecord{Kind: FaultBlackHole, Target: flow.ID, Inject: at,
					Detail: "drop " + net.JoinHostPort(cp.IP.String(), "*") + " -> " + flow.Server + ":" + strconv.Itoa(port) + " for " + d.String()}
				// Hold the hole for exactly d from the instant the rule went live.
				serr := e.Sleep(at.Add(d))
				end, took, uerr := undo()
				if uerr != nil {
					return uerr
				}
				rec.Recover = &end
				rec.Detail += fmt.Sprintf(" (rule removal took %s)", ms(took))
				e.Record(rec)
				e.Logf("fault: black hole %d/%d on %s: %s (ground truth %s)", i+1, len(f.Holes), flow.ID, d, ms(end.Sub(at)))
				if serr != nil {
					return serr
				}
				if err := e.Sleep(end.Add(f.Gap)); err != nil {
					return err
				}
			}
			return nil
		},
	})
}

// blackHoleFlow is the flow the black hole drops: the named one, or the
// first that is not the control flow.
func (e *FaultEnv) blackHoleFlow() *plannedFlow {
	for i := range e.plan.Flows {
		if e.plan.Flows[i].ID == e.Fault.Flow || (e.Fault.Flow == "" && !e.plan.Flows[i].Control) {
			return &e.plan.Flows[i]
		}
	}
	return nil
}
