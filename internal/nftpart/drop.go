package nftpart

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Undo removes a drop and returns the instant removal began (the rule was
// surely live until then: the ground truth end of a hole) and how long
// removal took (the kernel commits the deletion early, then waits for
// readers, so the call returns a few ms after traffic flows again).
type Undo func() (began time.Time, took time.Duration, err error)

// DropFlow black-holes one flow in the network namespace fd of its server
// pod (address dst): TCP from src to dst on any of ports is dropped as it
// enters the pod, new and established connections alike. Dropping on the
// receiving side (not in the sender's output hook, where the sender would
// get EPERM) makes it a true black hole. It returns when the rules are live:
// that instant is the ground truth start.
func DropFlow(fd int, src, dst net.IP, ports ...int) (time.Time, Undo, error) {
	if len(ports) == 0 {
		return time.Time{}, nil, fmt.Errorf("drop flow: no port")
	}
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return time.Time{}, nil, err
	}
	t := conn.AddTable(&nftables.Table{Name: "blastradius-fault", Family: nftables.TableFamilyIPv4})
	ch := conn.AddChain(&nftables.Chain{Name: "drop", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	for _, port := range ports {
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(MatchSrcDst(src, dst, port), &expr.Verdict{Kind: expr.VerdictDrop})})
	}
	if err := conn.Flush(); err != nil {
		return time.Time{}, nil, err
	}
	return time.Now(), undo(conn, t), nil
}

// loopbackIndex is the loopback device's interface index, the same in every
// network namespace.
const loopbackIndex = 1

// DropPod cuts the pod whose network namespace is fd off the network as a
// failed link would: every packet that enters its namespace through an
// interface other than loopback, and every packet that leaves through one,
// is dropped, established connections included. Traffic over the pod's own
// loopback (the app and an in-pod redirected proxy, a process and its own
// pod IP) keeps flowing, while every socket in the namespace that talks to
// the outside — the app's, and in ambient mode the node proxy's HBONE
// sockets, which live there too — is cut.
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
// neighbour entry outlives a hole of seconds anyway. It returns the instant
// the rules are live (the ground truth start).
func DropPod(fd int) (time.Time, Undo, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
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
		return time.Time{}, nil, err
	}
	return time.Now(), undo(conn, t), nil
}

func undo(conn *nftables.Conn, t *nftables.Table) Undo {
	return func() (time.Time, time.Duration, error) {
		began := time.Now()
		conn.DelTable(t)
		if err := conn.Flush(); err != nil {
			return began, 0, fmt.Errorf("remove table %s: %w", t.Name, err)
		}
		return began, time.Since(began), nil
	}
}

// MatchDst matches TCP to ip:port.
func MatchDst(ip net.IP, port int) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip.To4()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, uint16(port))},
	}
}

// MatchSrcDst matches TCP from src to dst:port.
func MatchSrcDst(src, dst net.IP, port int) []expr.Any {
	return append([]expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src.To4()},
	}, MatchDst(dst, port)...)
}
