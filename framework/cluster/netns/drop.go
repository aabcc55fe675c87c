package netns

import (
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
