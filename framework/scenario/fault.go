package scenario

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"blastradius.dev/blastradius/framework/cluster/netns"
	"blastradius.dev/blastradius/framework/results"
)

// sleepUntil waits for t or ctx.
func sleepUntil(ctx context.Context, t time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Until(t)):
		return nil
	}
}

// inject carries out the scenario's fault on schedule and records each
// injection and recovery the moment it happens.
func (r *Runner) inject(ctx context.Context, cl *netns.Cluster, sc Scenario, p plan, tr *results.Trial,
	start time.Time, phase *phaseBox, logf func(string, ...any)) error {
	f := sc.Fault
	if f.Kind == FaultNone {
		return nil
	}
	if err := sleepUntil(ctx, start.Add(f.At)); err != nil {
		return err
	}
	phase.set("fault")
	switch f.Kind {
	case FaultNodeCrash:
		target := nodeName(p.Target)
		at, err := cl.CrashNode(target)
		if err != nil {
			return err
		}
		rec := results.FaultRecord{Kind: FaultNodeCrash, Target: target, Inject: at,
			Detail: "links down, then SIGKILL of every process on the node"}
		r.update(func() { tr.Faults = append(tr.Faults, rec) })
		logf("fault: crashed %s", target)
		if f.RecoverAfter <= 0 {
			return nil
		}
		if err := sleepUntil(ctx, at.Add(f.RecoverAfter)); err != nil {
			return err
		}
		back, err := cl.RecoverNode(target)
		if err != nil {
			return err
		}
		r.update(func() { tr.Faults[len(tr.Faults)-1].Recover = &back })
		phase.set("recover")
		logf("fault: %s rebooted after %.1fs", target, back.Sub(at).Seconds())
		return nil
	case FaultBlackHole:
		var flow *plannedFlow
		for i := range p.Flows {
			if p.Flows[i].ID == f.Flow || (f.Flow == "" && !p.Flows[i].Control) {
				flow = &p.Flows[i]
				break
			}
		}
		if flow == nil {
			return fmt.Errorf("black hole: no flow %q", f.Flow)
		}
		cp, _ := cl.Pod(flow.Client)
		port := HTTPPort
		if flow.Kind.Profile == ProfileStream {
			port = TCPPort
		}
		for i, d := range f.Holes {
			at, undo, err := cl.DropFlow(flow.Server, cp.IP, port)
			if err != nil {
				return err
			}
			rec := results.FaultRecord{Kind: FaultBlackHole, Target: flow.ID, Inject: at,
				Detail: "drop " + net.JoinHostPort(cp.IP.String(), "*") + " -> " + flow.Server + ":" + strconv.Itoa(port) + " for " + d.String()}
			// Hold the hole for exactly d from the instant the rule went live.
			serr := sleepUntil(ctx, at.Add(d))
			end, took, uerr := undo()
			if uerr != nil {
				return uerr
			}
			rec.Recover = &end
			rec.Detail += fmt.Sprintf(" (rule removal took %.1f ms)", float64(took.Microseconds())/1000)
			r.update(func() { tr.Faults = append(tr.Faults, rec) })
			logf("fault: black hole %d/%d on %s: %s (ground truth %.1f ms)", i+1, len(f.Holes), flow.ID, d, float64(end.Sub(at).Microseconds())/1000)
			if serr != nil {
				return serr
			}
			if err := sleepUntil(ctx, end.Add(f.Gap)); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown fault kind %q", f.Kind)
}
