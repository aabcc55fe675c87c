package netns

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// DropFlow black-holes one flow: TCP from src to the pod's port is dropped as
// it enters the pod, both for new and established connections. Dropping on the
// receiving side (not in the sender's output hook, where the sender would get
// EPERM) makes it a true black hole. It returns when the rule is live — that
// instant is the ground truth start — and a function that removes it and
// returns the instant removal began (the rule was surely live until then: the
// ground truth end) and how long removal took (the kernel commits the
// deletion early, then waits for readers, so the call returns a few ms after
// traffic flows again).
func (c *Cluster) DropFlow(pod string, src net.IP, port int) (time.Time, func() (time.Time, time.Duration, error), error) {
	p, ok := c.pods[pod]
	if !ok {
		return time.Time{}, nil, fmt.Errorf("drop flow: no pod %s", pod)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(p.fd))
	if err != nil {
		return time.Time{}, nil, err
	}
	t := conn.AddTable(&nftables.Table{Name: "blastradius-fault", Family: nftables.TableFamilyIPv4})
	ch := conn.AddChain(&nftables.Chain{Name: "drop", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(matchSrcDst(src, p.IP, port), &expr.Verdict{Kind: expr.VerdictDrop})})
	if err := conn.Flush(); err != nil {
		return time.Time{}, nil, fmt.Errorf("drop flow in %s: %w", pod, err)
	}
	start := time.Now()
	undo := func() (time.Time, time.Duration, error) {
		began := time.Now()
		conn.DelTable(t)
		if err := conn.Flush(); err != nil {
			return began, 0, fmt.Errorf("remove drop in %s: %w", pod, err)
		}
		return began, time.Since(began), nil
	}
	return start, undo, nil
}

// loopbackIndex is the loopback device's interface index, the same in every
// network namespace.
const loopbackIndex = 1

// DropPod cuts a pod off the network as a failed link would: every packet
// that enters its namespace through an interface other than loopback, and
// every packet that leaves through one, is dropped, established connections
// included. Traffic over the pod's own loopback (the app and an in-pod
// redirected proxy, a process and its own pod IP) keeps flowing, while
// every socket in the namespace that talks to the outside — the app's, and
// in ambient mode the node proxy's HBONE sockets, which live there too — is
// cut.
//
// Both drops sit in one table, added and removed in one batch each, so the
// hole opens and closes in both directions at once:
//
//   - inbound in prerouting at raw priority: before conntrack and before the
//     ambient inbound redirect (nat prerouting), so a dropped packet changes
//     no state in the pod, as one that never arrives would not;
//   - outbound in postrouting at raw priority, not in output: the pod's own
//     nat output rules (the ambient redirect to the in-pod proxy, service
//     DNAT) reroute a packet after the output hook has already fixed its
//     output device, so "oif is not lo" in output would also drop the app's
//     connection to its own proxy, which a real hole leaves alone.
//     Postrouting sees the device the packet really leaves by, whatever mark
//     its socket carries (the ambient rules let the proxy's marked sockets
//     skip the redirect, not this drop). A locally sent packet dropped there
//     fails inside the pod's TCP stack, which retries on its retransmission
//     timers with back-off as after a loss; no error reaches the application.
//
// The table is inet, so IPv6 is cut too. ARP is not IP and passes: a
// neighbour entry outlives a hole of seconds anyway.
//
// It returns the instant the rules are live (the ground truth start) and a
// function that removes them and returns, as DropFlow's does, the instant
// removal began (the ground truth end) and how long removal took.
func (c *Cluster) DropPod(pod string) (time.Time, func() (time.Time, time.Duration, error), error) {
	p, ok := c.pods[pod]
	if !ok {
		return time.Time{}, nil, fmt.Errorf("drop pod: no pod %s", pod)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(p.fd))
	if err != nil {
		return time.Time{}, nil, err
	}
	t := conn.AddTable(&nftables.Table{Name: "blastradius-pod-hole", Family: nftables.TableFamilyINet})
	for _, d := range []struct {
		name string
		hook *nftables.ChainHook
		key  expr.MetaKey
	}{
		{"in", nftables.ChainHookPrerouting, expr.MetaKeyIIF},
		{"out", nftables.ChainHookPostrouting, expr.MetaKeyOIF},
	} {
		ch := conn.AddChain(&nftables.Chain{Name: d.name, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: d.hook, Priority: nftables.ChainPriorityRaw})
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: d.key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, loopbackIndex)},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	if err := conn.Flush(); err != nil {
		return time.Time{}, nil, fmt.Errorf("drop pod %s: %w", pod, err)
	}
	start := time.Now()
	undo := func() (time.Time, time.Duration, error) {
		began := time.Now()
		conn.DelTable(t)
		if err := conn.Flush(); err != nil {
			return began, 0, fmt.Errorf("remove drop of pod %s: %w", pod, err)
		}
		return began, time.Since(began), nil
	}
	return start, undo, nil
}
