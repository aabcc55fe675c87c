package inpod

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The node proxy's ports inside each pod, as in ztunnel.
const (
	OutboundPort = 15001 // the pod's outgoing TCP, redirected
	InboundPort  = 15006 // plaintext TCP to the pod, redirected
	HBONEPort    = 15008 // HBONE (mTLS tunnel) to the pod, reached directly
	// AdminPort is a sidecar's admin/readiness port. Like the kubelet's
	// probes in Istio, readiness probes must reach it directly, not through
	// the proxy they are probing.
	AdminPort     = 15020
	RedirectTable = "blastradius-inpod"
)

// RedirectPriority is the priority of both redirect chains. It is below
// kube-proxy's DNAT (-100, nftables "dstnat"), which may live in the same pod
// namespace: the first NAT chain that rewrites a connection wins, so the
// proxy sees the service VIP the application dialled, not a backend kube-proxy
// chose.
const RedirectPriority = -110

// ApplyRedirect installs, in the pod network namespace nsFD, the rules
// istio-cni installs for ztunnel's in-pod mode:
//
//   - outbound (nat output): TCP whose packet mark is not mark and whose
//     destination is not in 127.0.0.0/8 is redirected to :15001 (the proxy
//     marks its own sockets with mark, so its upstream connections escape);
//   - inbound (nat prerouting): TCP to podIP, except to ports 15008, 15001,
//     15006 and 15020, is redirected to :15006.
//
// The table is replaced in one netlink batch, so a pod is never seen with half
// its rules, and calling ApplyRedirect again (new mark, new IP) is safe.
func ApplyRedirect(nsFD int, podIP netip.Addr, mark uint32) error {
	if nsFD < 0 {
		// Unlike netnsx, no "current namespace" shorthand: redirecting the
		// agent's own namespace would capture the node's traffic.
		return fmt.Errorf("inpod: apply redirect: need a pod netns fd, got %d", nsFD)
	}
	podIP = podIP.Unmap()
	if !podIP.Is4() {
		return fmt.Errorf("inpod: apply redirect: pod IP %v is not IPv4", podIP)
	}
	conn, err := dropTable(nsFD)
	if err != nil {
		return fmt.Errorf("inpod: apply redirect: %w", err)
	}
	t := conn.AddTable(&nftables.Table{Name: RedirectTable, Family: nftables.TableFamilyIPv4})
	out := conn.AddChain(&nftables.Chain{Name: "outbound", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(RedirectPriority)})
	in := conn.AddChain(&nftables.Chain{Name: "inbound", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(RedirectPriority)})
	// Empty NAT chains on the remaining hooks: the reply direction of a
	// redirect is undone there, and older kernels only run NAT on hooks that
	// have a NAT chain.
	conn.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityNATSource})
	conn.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})

	conn.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: concat(
		tcp(),
		[]expr.Any{
			// meta mark != mark
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, mark)},
			// ip daddr != 127.0.0.0/8
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{127, 0, 0, 0}},
		},
		redirectTo(OutboundPort),
	)})

	ip := podIP.As4()
	inbound := concat(tcp(), []expr.Any{
		// ip daddr == podIP
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip[:]},
		// tcp dport
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	})
	// dport not in {15008, 15001, 15006}: a conjunction of "!=" needs no set.
	for _, p := range []uint16{HBONEPort, OutboundPort, InboundPort, AdminPort} {
		inbound = append(inbound, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, p)})
	}
	conn.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: append(inbound, redirectTo(InboundPort)...)})

	if err := conn.Flush(); err != nil {
		return fmt.Errorf("inpod: apply redirect in netns fd %d: %w", nsFD, err)
	}
	return nil
}

// RemoveRedirect deletes the redirect table from the pod namespace nsFD. It
// succeeds when there is none.
func RemoveRedirect(nsFD int) error {
	if nsFD < 0 {
		return fmt.Errorf("inpod: remove redirect: need a pod netns fd, got %d", nsFD)
	}
	conn, err := dropTable(nsFD)
	if err == nil {
		err = conn.Flush()
	}
	if err != nil {
		return fmt.Errorf("inpod: remove redirect in netns fd %d: %w", nsFD, err)
	}
	return nil
}

// dropTable starts a batch on nsFD that creates the table if missing and
// deletes it. Creating first makes the delete valid whether or not the table
// existed, so the batch is an idempotent remove, or, with the table added
// again after it, an atomic replace.
func dropTable(nsFD int) (*nftables.Conn, error) {
	conn, err := nftables.New(nftables.WithNetNSFd(nsFD))
	if err != nil {
		return nil, err
	}
	t := &nftables.Table{Name: RedirectTable, Family: nftables.TableFamilyIPv4}
	conn.AddTable(t)
	conn.DelTable(t)
	return conn, nil
}

func tcp() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

// redirectTo redirects to port on the local host: 127.0.0.1 for locally
// generated packets (output), the incoming interface's address in prerouting.
func redirectTo(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
		&expr.Redir{RegisterProtoMin: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
