package netns

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/internal/nftpart"
)

// Service is a virtual IP load-balanced over the ready endpoints of its pods,
// the way kube-proxy does it: DNAT in the client's own namespace, chosen at
// connection setup, so established connections keep their backend.
type Service struct {
	Name       string
	VIP        net.IP
	Port       int
	TargetPort int
	Pods       []string // candidate endpoints; ready ones are used

	mu        *sync.Mutex // the cluster's: the endpoint controller writes endpoints under it
	endpoints []string    // what the controller decided
	// programmed is what every live pod's rules carry. It trails endpoints
	// by one nftables batch per pod, and a caller that waits for endpoints
	// must wait for this: a dial to a VIP whose rules are not there yet is
	// routed to a node that has no route for it (network unreachable).
	programmed []string
}

// Endpoints returns the pods currently programmed behind the VIP.
func (s *Service) Endpoints() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.programmed)
}

// EndpointChange is one update of a service's endpoints, kept for the report.
type EndpointChange struct {
	At        time.Time `json:"at"`
	Service   string    `json:"service"`
	Endpoints []string  `json:"endpoints"`
}

// AddService allocates a VIP (10.96.0.10 upward) and returns the service. Its
// rules appear once its endpoints become ready.
func (c *Cluster) AddService(name string, port, targetPort int, pods []string) (*Service, error) {
	for _, p := range pods {
		if _, ok := c.pods[p]; !ok {
			return nil, fmt.Errorf("service %s: no pod %s", name, p)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.services {
		if s.Name == name {
			return nil, fmt.Errorf("service %s defined twice", name)
		}
	}
	s := &Service{Name: name, VIP: net.IPv4(10, 96, 0, byte(10+len(c.services))).To4(), Port: port, TargetPort: targetPort, Pods: pods, mu: &c.mu}
	c.services = append(c.services, s)
	return s, nil
}

// Services lists the services.
func (c *Cluster) Services() []*Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.services)
}

// EndpointLog returns every endpoint change so far.
func (c *Cluster) EndpointLog() []EndpointChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.epLog)
}

// endpointController recomputes endpoints every 100 ms: a pod is an endpoint
// when its node reported it ready and the node itself is Ready (heartbeat
// within NotReadyGrace). A crashed node's pods therefore stay in rotation for
// the grace period, as in Kubernetes.
func (c *Cluster) endpointController(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.syncEndpoints(); err != nil {
			c.cfg.Logf("endpoint controller: %v", err)
		}
	}
}

func (c *Cluster) syncEndpoints() error {
	c.mu.Lock()
	changed := false
	var news []EndpointChange
	for _, s := range c.services {
		var eps []string
		for _, name := range s.Pods {
			p := c.pods[name]
			if !p.Node.Ready(c.cfg.NotReadyGrace) {
				continue
			}
			ready := len(p.procs) > 0
			for _, pr := range p.procs {
				pr.mu.Lock()
				ready = ready && pr.reported
				pr.mu.Unlock()
			}
			if ready {
				eps = append(eps, name)
			}
		}
		if !slices.Equal(eps, s.endpoints) {
			s.endpoints = eps
			changed = true
			ch := EndpointChange{At: time.Now(), Service: s.Name, Endpoints: slices.Clone(eps)}
			c.epLog = append(c.epLog, ch)
			news = append(news, ch)
		}
	}
	// A batch that failed (or a node that came back with stale rules)
	// leaves the rules dirty, so the next tick tries again rather than
	// waiting for the next endpoint change.
	dirty := changed || c.servicesDirty
	c.servicesDirty = dirty
	c.mu.Unlock()
	if c.cfg.EndpointsChanged != nil {
		for _, ch := range news {
			c.cfg.EndpointsChanged(ch)
		}
	}
	if !dirty {
		return nil
	}
	return c.programServices()
}

// testHookProgramming, when set, runs after a batch of service rules is
// decided and before any pod's rules are written.
var testHookProgramming func()

// programServices rewrites the service rules of every live pod. A pod on a
// crashed node is skipped: its "kube-proxy" is dead too.
func (c *Cluster) programServices() error {
	c.mu.Lock()
	type rule struct {
		vip  net.IP
		port int
		eps  []net.IP
		tp   int
	}
	var rules []rule
	decided := make([][]string, len(c.services))
	for i, s := range c.services {
		r := rule{vip: s.VIP, port: s.Port, tp: s.TargetPort}
		for _, e := range s.endpoints {
			r.eps = append(r.eps, c.pods[e].IP)
		}
		rules = append(rules, r)
		decided[i] = slices.Clone(s.endpoints)
	}
	c.mu.Unlock()
	if testHookProgramming != nil {
		testHookProgramming()
	}
	var firstErr error
	for _, p := range c.Pods() {
		if p.Node.Crashed() {
			continue
		}
		if err := programPod(p.fd, func(nat, filter *nftables.Chain, conn *nftables.Conn) {
			for _, r := range rules {
				match := nftpart.MatchDst(r.vip, r.port)
				if len(r.eps) == 0 {
					// No endpoint: refuse at once, like kube-proxy's reject rule.
					conn.AddRule(&nftables.Rule{Table: filter.Table, Chain: filter, Exprs: append(match,
						&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})})
					continue
				}
				// Endpoint k of n is chosen with probability 1/(n-k) among
				// the rest, which makes the overall choice uniform.
				for k, ep := range r.eps {
					ex := slices.Clone(match)
					if left := len(r.eps) - k; left > 1 {
						ex = append(ex,
							&expr.Numgen{Register: 1, Modulus: uint32(left), Type: unix.NFT_NG_RANDOM},
							&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, 0)})
					}
					ex = append(ex,
						&expr.Immediate{Register: 1, Data: ep.To4()},
						&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, uint16(r.tp))},
						&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
					conn.AddRule(&nftables.Rule{Table: nat.Table, Chain: nat, Exprs: ex})
				}
			}
		}); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("program services in %s: %w", p.Name, err)
		}
	}
	if firstErr != nil {
		return firstErr
	}
	c.mu.Lock()
	for i, eps := range decided {
		c.services[i].programmed = eps
	}
	// Only what this batch carried is clean: a change decided meanwhile
	// keeps the flag for the next tick.
	c.servicesDirty = false
	for i, s := range c.services[:len(decided)] {
		if !slices.Equal(s.endpoints, decided[i]) {
			c.servicesDirty = true
		}
	}
	c.mu.Unlock()
	return nil
}

// bigBatches makes room for what the kernel sends back for a large batch (a
// pod's rules for 10 services × 20 endpoints): nftables asks for every rule
// to be echoed (NLM_F_ECHO, to learn its handle), and by default those echoes
// overflow the socket's receive buffer; the batch is applied but Flush fails
// with ENOBUFS. Acks are also capped (no copy of the request in each).
func bigBatches(c *netlink.Conn) error {
	if err := c.SetOption(netlink.CapAcknowledge, true); err != nil {
		return err
	}
	return c.SetReadBuffer(4 << 20)
}

// programPod replaces the pod's service table in one netlink transaction, so
// a connection never sees a half-written rule set.
func programPod(fd int, fill func(nat, filter *nftables.Chain, conn *nftables.Conn)) error {
	conn, err := nftables.New(nftables.WithNetNSFd(fd), nftables.WithSockOptions(bigBatches))
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: "blastradius-svc", Family: nftables.TableFamilyIPv4}
	conn.AddTable(t)
	conn.DelTable(t) // delete-and-recreate inside one batch: an atomic replace
	t = conn.AddTable(&nftables.Table{Name: "blastradius-svc", Family: nftables.TableFamilyIPv4})
	nat := conn.AddChain(&nftables.Chain{Name: "nat-output", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	filter := conn.AddChain(&nftables.Chain{Name: "filter-output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	// Empty NAT chains on the other hooks: the reply direction of a DNAT made
	// in output is undone on input, and older kernels only run NAT on hooks
	// that have a NAT chain.
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
		prio *nftables.ChainPriority
	}{
		{"nat-input", nftables.ChainHookInput, nftables.ChainPriorityNATSource},
		{"nat-postrouting", nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource},
	} {
		conn.AddChain(&nftables.Chain{Name: h.name, Table: t, Type: nftables.ChainTypeNAT, Hooknum: h.hook, Priority: h.prio})
	}
	fill(nat, filter, conn)
	return conn.Flush()
}
