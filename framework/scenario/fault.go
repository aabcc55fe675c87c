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
func (r *Runner) inject(ctx context.Context, cl *netns.Cluster, dp DataPlane, sc Scenario, p plan, tr *results.Trial,
	start time.Time, phase *phaseBox, logf func(string, ...any)) error {
	f := sc.Fault
	if f.Kind == FaultNone {
		return nil
	}
	mf, _ := dp.(MeshFaulter)
	switch f.Kind {
	case FaultNodeProxyCrash, FaultNodeProxyRestart, FaultControlPlaneDown, FaultNodeProxyCrashCPDown:
		if mf == nil {
			return fmt.Errorf("fault %s needs a data plane that supports it (mode %s)", f.Kind, modeName(r.opt.Mode))
		}
	}
	record := func(rec results.FaultRecord) int {
		i := 0
		r.update(func() { tr.Faults = append(tr.Faults, rec); i = len(tr.Faults) - 1 })
		return i
	}
	recovered := func(i int, at time.Time) { r.update(func() { tr.Faults[i].Recover = &at }) }
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
	case FaultNodeProxyCrash:
		target := nodeName(p.Target)
		at, err := mf.CrashNodeProxy(target)
		if err != nil {
			return err
		}
		record(results.FaultRecord{Kind: f.Kind, Target: target, Inject: at, Detail: "SIGKILL of the node proxy; the supervisor restarts it"})
		logf("fault: node proxy on %s killed", target)
		return nil
	case FaultNodeProxyRestart:
		target := nodeName(p.Target)
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		started, ready, stopped, done, err := mf.RestartNodeProxy(rctx, target)
		if err != nil {
			return err
		}
		i := record(results.FaultRecord{Kind: f.Kind, Target: target, Inject: stopped,
			Detail: fmt.Sprintf("new proxy started, ready after %.0f ms; old proxy drained (deadline %s)",
				float64(ready.Sub(started).Microseconds())/1000, sc.Mesh.Drain)})
		logf("fault: node proxy on %s handed over (new ready in %.0f ms), old draining", target, float64(ready.Sub(started).Microseconds())/1000)
		select {
		case <-done:
			recovered(i, time.Now())
			logf("fault: old node proxy on %s exited", target)
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	case FaultControlPlaneDown, FaultNodeProxyCrashCPDown:
		at, err := mf.StopControlPlane()
		if err != nil {
			return err
		}
		// Certificates held now are all the proxies will have. Asked after
		// the stop: a renewal just before it would otherwise be missed.
		if exp, err := mf.CertExpiries(ctx); err == nil {
			r.update(func() { tr.CertExpiries = exp })
		} else {
			logf("certificate expiries: %v", err)
		}
		i := record(results.FaultRecord{Kind: FaultControlPlaneDown, Target: "controlplane", Inject: at, Detail: "control plane stopped"})
		logf("fault: control plane down")
		if f.Kind == FaultNodeProxyCrashCPDown {
			if err := sleepUntil(ctx, at.Add(f.Then)); err != nil {
				return err
			}
			target := nodeName(p.Target)
			kat, err := mf.CrashNodeProxy(target)
			if err != nil {
				return err
			}
			record(results.FaultRecord{Kind: FaultNodeProxyCrash, Target: target, Inject: kat,
				Detail: "SIGKILL of the node proxy while the control plane is down"})
			logf("fault: node proxy on %s killed during the outage", target)
		}
		if f.RecoverAfter <= 0 {
			return nil
		}
		if err := sleepUntil(ctx, at.Add(f.RecoverAfter)); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		back, err := mf.StartControlPlane(rctx)
		if err != nil {
			return err
		}
		recovered(i, back)
		phase.set("recover")
		logf("fault: control plane back")
		return nil
	}
	return fmt.Errorf("unknown fault kind %q", f.Kind)
}

// MeshFaulter is what a data plane offers for mesh faults; modes without
// it skip those scenarios.
type MeshFaulter interface {
	CrashNodeProxy(node string) (time.Time, error)
	RestartNodeProxy(ctx context.Context, node string) (started, ready, stopped time.Time, done <-chan struct{}, err error)
	StopControlPlane() (time.Time, error)
	StartControlPlane(ctx context.Context) (time.Time, error)
	CertExpiries(ctx context.Context) (map[string]time.Time, error)
}
