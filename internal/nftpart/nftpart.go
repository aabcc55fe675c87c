// Package nftpart installs the nftables rules that cut a machine off from
// its peers: the one partition mechanism of every provider that has
// network namespaces for its nodes (the embedded cluster's nodes and
// local-k8s's).
//
// The drop sits in the machine's prerouting hook at raw priority, matching
// packets that arrive from a peer's addresses and are addressed to the
// machine's own. Prerouting sees forwarded pod traffic and traffic for the
// node itself alike, and runs before conntrack, so established flows are cut
// too. Dropping on arrival rather than in the sender's output hook makes it
// a true black hole: a locally generated packet dropped in output fails the
// sender's send with EPERM, which no real partition does.
package nftpart

import (
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Install adds table (IPv4) to the network namespace fd, dropping every
// packet from any of from to any of self. remove takes the table out again.
func Install(fd int, table string, self, from []*net.IPNet) (remove func() error, err error) {
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return nil, err
	}
	t := conn.AddTable(&nftables.Table{Name: table, Family: nftables.TableFamilyIPv4})
	ch := conn.AddChain(&nftables.Chain{Name: "drop", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw})
	for _, src := range from {
		for _, dst := range self {
			ex := append(matchNet(12, src), matchNet(16, dst)...)
			conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(ex, &expr.Verdict{Kind: expr.VerdictDrop})})
		}
	}
	if err := conn.Flush(); err != nil {
		return nil, err
	}
	return func() error {
		conn.DelTable(t)
		return conn.Flush()
	}, nil
}

// Host is the /32 of an IPv4 address.
func Host(ip net.IP) *net.IPNet { return &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(32, 32)} }

// Nets parses a machine's addresses: IPs (a host each) and CIDRs.
func Nets(addrs ...string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil && ip.To4() != nil {
			out = append(out, Host(ip))
			continue
		}
		_, n, err := net.ParseCIDR(a)
		if err != nil || n.IP.To4() == nil {
			return nil, fmt.Errorf("%q is neither an IPv4 address nor an IPv4 CIDR", a)
		}
		out = append(out, n)
	}
	return out, nil
}

// matchNet matches the IPv4 address at offset off of the network header (12:
// source, 16: destination) against the network n.
func matchNet(off uint32, n *net.IPNet) []expr.Any {
	ex := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}}
	if ones, _ := n.Mask.Size(); ones < 32 {
		ex = append(ex, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: []byte(n.Mask), Xor: []byte{0, 0, 0, 0}})
	}
	return append(ex, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.IP.To4().Mask(n.Mask)})
}
