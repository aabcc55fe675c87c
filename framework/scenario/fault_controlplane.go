package scenario

import (
	"blastradius.dev/blastradius/framework/results"
)

// Control-plane faults.
const (
	// FaultControlPlaneDown stops the control plane for RecoverAfter (0:
	// until the end). With a certificate TTL shorter than the outage it is
	// the "outage longer than the certificate TTL" fault.
	FaultControlPlaneDown = "controlplane-down"
	// FaultNodeProxyCrashCPDown stops the control plane, SIGKILLs the target
	// node's proxy Then later, and brings the control plane back after
	// RecoverAfter.
	FaultNodeProxyCrashCPDown = "node-proxy-crash-during-cp-outage"
)

var meshedModes = []string{"sidecar", "ambient"}

const reasonControlPlane = "mode none has no control plane"

func init() {
	registerFault(&FaultKind{
		Name: FaultControlPlaneDown, Fields: []string{"recoverAfter"}, ControlPlane: true, Needs: need(CapStopControlPlane), Modes: meshedModes, ModeReason: reasonControlPlane,
		Doc:    "the control plane is stopped (not restarted) for recoverAfter, or until the end",
		Scope:  controlPlaneScope,
		Inject: controlPlaneOutage,
		Reach: func(sc Scenario, _ string) (Reach, string) {
			if ttl := sc.Mesh.CertTTL; ttl > 0 && (sc.Fault.RecoverAfter == 0 || sc.Fault.RecoverAfter > ttl) {
				return ReachAll, "the control plane stays down past the certificate TTL, so every workload's certificate expires"
			}
			return ReachNodes, ""
		},
	})
	registerFault(&FaultKind{
		Name: FaultNodeProxyCrashCPDown, Fields: []string{"then", "recoverAfter"}, Target: true, ControlPlane: true, Needs: need(CapStopControlPlane, CapCrashNodeProxy), Modes: ambientOnly, ModeReason: reasonNodeProxy,
		Doc: "the control plane goes down; `then` later the node's proxy is SIGKILLed and restarts with no configuration; the control plane returns after recoverAfter",
		Scope: func(e *FaultEnv) []string {
			return append(controlPlaneScope(e), e.Target)
		},
		Inject: controlPlaneOutage,
	})
}

// controlPlaneScope is the control plane's node.
func controlPlaneScope(e *FaultEnv) []string {
	cp, err := capability[controlPlane](e, "a control plane")
	if err != nil {
		return nil
	}
	if n, ok := e.podNode(cp.ControlPlanePod()); ok {
		return []string{n}
	}
	return nil
}

func controlPlaneOutage(e *FaultEnv) error {
	cp, err := capability[controlPlane](e, "a control plane")
	if err != nil {
		return err
	}
	if err := e.WaitInject(); err != nil {
		return err
	}
	at, err := cp.StopControlPlane()
	if err != nil {
		return err
	}
	// Certificates held now are all the proxies will have. Asked after the
	// stop: a renewal just before it would otherwise be missed.
	if exp, err := cp.CertExpiries(e.Ctx); err == nil {
		e.r.update(func() { e.tr.CertExpiries = exp })
	} else {
		e.Logf("certificate expiries: %v", err)
	}
	i := e.Record(results.FaultRecord{Kind: FaultControlPlaneDown, Target: "controlplane", Inject: at, Detail: "control plane stopped"})
	e.Logf("fault: control plane down")
	if e.Fault.Kind == FaultNodeProxyCrashCPDown {
		if err := e.Sleep(at.Add(e.Fault.Then)); err != nil {
			return err
		}
		np, err := capability[nodeProxyCrasher](e, "a node proxy")
		if err != nil {
			return err
		}
		kat, err := np.CrashNodeProxy(e.Target)
		if err != nil {
			return err
		}
		e.Record(results.FaultRecord{Kind: FaultNodeProxyCrash, Target: e.Target, Inject: kat,
			Detail: "SIGKILL of the node proxy while the control plane is down"})
		e.Logf("fault: node proxy on %s killed during the outage", e.Target)
	}
	return e.RecoverAfter(i, at, "control plane back", cp.StartControlPlane)
}
