package inpod

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"istio.io/istio/pkg/zdsapi"
)

// AmbientLabel enrols a namespace or a pod in ambient mode when it is
// "ambient"; on a pod, any other value (Istio uses "none") opts it out even
// in an ambient namespace.
const AmbientLabel = "istio.io/dataplane-mode"

// NodeAgent is the node agent of ambient mode on Kubernetes (what istio-cni's
// node agent is to ztunnel): it learns the ambient application pods of its
// node from the API server, finds each one's network namespace by the pod's
// IP, installs the in-pod redirect rules there and hands the namespace to the
// node proxy over the inpod protocol (Server), as the embedded provider's
// agent does. It tells the proxy when a pod goes away or leaves ambient mode.
//
// Like istio-cni after a restart, it rebuilds its pod set before it listens:
// a proxy that connects gets a complete snapshot, never an empty one that
// would make it drop every pod.
type NodeAgent struct {
	API      *KubeAPI
	Node     string
	Socket   string // the inpod socket, e.g. @blastradius-inpod
	NetNSDir string // HostNetNSDir
	Mark     uint32 // the node proxy's socket mark, which the rules let through
	Logf     func(format string, args ...any)
	// Label is the label that enrols a namespace or pod (value "ambient");
	// empty: Istio's own, AmbientLabel. The tool's Kubernetes manifests
	// give the reference data plane a label of its own, so Istio's node
	// agent, installed on the same cluster, never takes its pods.
	Label string

	// Resync is how often pods not yet handed over are looked for again and
	// namespace labels are re-read (default 2s).
	Resync time.Duration
	// NamespaceTTL is how long a namespace's labels are trusted (default
	// 10s): labelling a namespace ambient takes effect within it.
	NamespaceTTL time.Duration
	// InitialSyncTimeout bounds the first list (default 2m): an agent that
	// cannot reach the API server exits, and the kubelet restarts it.
	InitialSyncTimeout time.Duration
	// Back-off between failed lists and watches (default 200ms to 10s).
	MinBackoff, MaxBackoff time.Duration
	// OnSynced, when set, is called once the agent listens with its
	// initial pod set.
	OnSynced func()
}

// Defaults of NodeAgent.
const (
	DefaultResync             = 2 * time.Second
	DefaultNamespaceTTL       = 10 * time.Second
	DefaultInitialSyncTimeout = 2 * time.Minute
	DefaultAgentMinBackoff    = 200 * time.Millisecond
	DefaultAgentMaxBackoff    = 10 * time.Second
)

// handed is a pod the agent has given to the proxy.
type handed struct {
	ip   netip.Addr
	fd   int // the agent's own descriptor of the pod's namespace
	path string
	// zdsUID names the pod on ZDS: its Kubernetes UID, as istio-cni sends
	// it (the agent's own key, namespace/name, when the API gave none).
	// Kept here because a deleted pod's object is gone by the time its
	// del is sent.
	zdsUID string
}

type nsLabels struct {
	labels map[string]string
	found  bool
	at     time.Time
}

// agentState is owned by Run's goroutine.
type agentState struct {
	server  *Server // nil until the initial sync is done
	pods    map[string]*KubePod
	added   map[string]*handed
	pending map[string]netip.Addr
	ns      map[string]nsLabels
	said    map[string]string // last message logged per subject, so a persisting problem is logged once
}

func (a *NodeAgent) defaults() {
	if a.Logf == nil {
		a.Logf = func(string, ...any) {}
	}
	if a.NetNSDir == "" {
		a.NetNSDir = HostNetNSDir
	}
	if a.Resync <= 0 {
		a.Resync = DefaultResync
	}
	if a.NamespaceTTL <= 0 {
		a.NamespaceTTL = DefaultNamespaceTTL
	}
	if a.InitialSyncTimeout <= 0 {
		a.InitialSyncTimeout = DefaultInitialSyncTimeout
	}
	if a.MinBackoff <= 0 {
		a.MinBackoff = DefaultAgentMinBackoff
	}
	if a.MaxBackoff < a.MinBackoff {
		a.MaxBackoff = max(DefaultAgentMaxBackoff, a.MinBackoff)
	}
}

// Run serves until ctx ends (it then returns nil) or the initial sync fails.
// On return the socket is closed; the redirect rules stay, so the pods stay
// captured and the proxy keeps serving them until an agent is back.
func (a *NodeAgent) Run(ctx context.Context) error {
	a.defaults()
	if a.API == nil || a.Node == "" || a.Socket == "" {
		return errors.New("inpod: node agent: API, Node and Socket are required")
	}
	st := &agentState{pods: map[string]*KubePod{}, added: map[string]*handed{},
		pending: map[string]netip.Addr{}, ns: map[string]nsLabels{}, said: map[string]string{}}
	defer func() {
		for _, h := range st.added {
			unix.Close(h.fd)
		}
	}()
	rv, err := a.initialSync(ctx, st)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	pods := make([]Pod, 0, len(st.added))
	for uid, h := range st.added {
		pods = append(pods, Pod{UID: h.zdsUID, NetNSFD: h.fd, Workload: workloadInfo(st.pods[uid], uid)})
	}
	srv, err := NewServer(a.Socket, WithPods(pods...), WithLogf(a.Logf))
	if err != nil {
		return err
	}
	defer srv.Close()
	st.server = srv
	a.Logf("listening on %s with %d ambient pods (%d waiting for their network namespace)", a.Socket, len(st.added), len(st.pending))
	if a.OnSynced != nil {
		a.OnSynced()
	}
	a.loop(ctx, st, rv)
	return nil
}

// initialSync lists the node's pods, retrying with back-off for at most
// InitialSyncTimeout, and hands over (redirects) every ambient pod it can.
func (a *NodeAgent) initialSync(ctx context.Context, st *agentState) (string, error) {
	ictx, cancel := context.WithTimeout(ctx, a.InitialSyncTimeout)
	defer cancel()
	backoff := a.MinBackoff
	var last error // the last failure before the deadline: what to report
	for {
		rv, err := a.relist(ictx, st)
		if err == nil {
			return rv, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if ictx.Err() != nil {
			if last == nil {
				last = err
			}
			return "", fmt.Errorf("inpod: node agent: no pod list from the API server within %v: %v", a.InitialSyncTimeout, last)
		}
		last = err
		a.Logf("list pods: %v (retrying in %v)", err, backoff)
		if !sleep(ictx, backoff) {
			continue // the next list fails at once and reports the deadline
		}
		backoff = min(2*backoff, a.MaxBackoff)
	}
}

// relist replaces the known pods with a fresh list and reconciles.
func (a *NodeAgent) relist(ctx context.Context, st *agentState) (string, error) {
	list, err := a.API.ListPods(ctx, a.Node)
	if err != nil {
		return "", err
	}
	st.pods = map[string]*KubePod{}
	for i := range list.Items {
		p := &list.Items[i]
		st.pods[p.Key()] = p
	}
	a.reconcileAll(ctx, st)
	return list.ResourceVersion, nil
}

type watchMsg struct {
	ev  *PodEvent
	end bool
	err error
}

// loop watches the node's pods from rv, re-watching when the server ends a
// watch and listing again (with back-off) when a watch fails.
func (a *NodeAgent) loop(ctx context.Context, st *agentState, rv string) {
	backoff := a.MinBackoff
	tick := time.NewTicker(a.Resync)
	defer tick.Stop()
	var (
		events      chan watchMsg
		cancelWatch = func() {}
		started     time.Time
		retry       <-chan time.Time
		needList    bool
	)
	defer func() { cancelWatch() }()
	startWatch := func() {
		wctx, cancel := context.WithCancel(ctx)
		ch := make(chan watchMsg)
		cancelWatch, events, started = cancel, ch, time.Now()
		go func(from string) {
			err := a.API.WatchPods(wctx, a.Node, from, func(ev PodEvent) error {
				select {
				case ch <- watchMsg{ev: &ev}:
					return nil
				case <-wctx.Done():
					return wctx.Err()
				}
			})
			select {
			case ch <- watchMsg{end: true, err: err}:
			case <-wctx.Done():
			}
		}(rv)
	}
	retryIn := func(why error) {
		a.Logf("%v; listing again in %v", why, backoff)
		t := time.NewTimer(backoff)
		retry = t.C
		backoff = min(2*backoff, a.MaxBackoff)
	}
	startWatch()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-events:
			if !m.end {
				backoff = a.MinBackoff // the watch works
				if m.ev.ResourceVersion != "" {
					rv = m.ev.ResourceVersion
				}
				a.apply(ctx, st, m.ev)
				continue
			}
			cancelWatch()
			events = nil
			switch {
			case ctx.Err() != nil:
				return
			case m.err == nil && time.Since(started) >= time.Second:
				startWatch() // the server's timeout: carry on from rv
			case m.err == nil:
				needList = true
				retryIn(errors.New("watch pods: the API server ended the watch at once"))
			case errors.Is(m.err, ErrGone):
				// Expected after a long disconnection: list now.
				needList = true
				a.Logf("watch pods: %v", m.err)
				retry = time.After(0)
			default:
				needList = true
				retryIn(m.err)
			}
		case <-retry:
			retry = nil
			if needList {
				newRV, err := a.relist(ctx, st)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					retryIn(fmt.Errorf("list pods: %w", err))
					continue
				}
				rv, needList = newRV, false
			}
			startWatch()
		case <-tick.C:
			a.reconcileAll(ctx, st)
		}
	}
}

// apply takes one watch event into account.
func (a *NodeAgent) apply(ctx context.Context, st *agentState, ev *PodEvent) {
	switch ev.Type {
	case EventAdded, EventModified:
		p := ev.Pod
		st.pods[p.Key()] = &p
		a.decide(ctx, st, p.Key())
	case EventDeleted:
		delete(st.pods, ev.Pod.Key())
		a.decide(ctx, st, ev.Pod.Key())
	default:
		return
	}
	a.resolvePending(st)
}

// reconcileAll decides every known pod again (namespace labels may have
// changed) and looks for the namespaces still missing.
func (a *NodeAgent) reconcileAll(ctx context.Context, st *agentState) {
	uids := map[string]bool{}
	for uid := range st.pods {
		uids[uid] = true
	}
	for uid := range st.added {
		uids[uid] = true
	}
	for uid := range st.pending {
		uids[uid] = true
	}
	for _, uid := range sortedKeys(uids) {
		a.decide(ctx, st, uid)
	}
	a.resolvePending(st)
}

// decide compares what pod uid should be (handed over with its IP, or not)
// with what it is, releases it or marks it pending.
func (a *NodeAgent) decide(ctx context.Context, st *agentState, uid string) {
	p, exists := st.pods[uid]
	want, ip := false, netip.Addr{}
	if exists {
		var err error
		want, ip, err = a.wants(ctx, st, p)
		if err != nil {
			// Unknown (the namespace could not be read): leave the pod as
			// it is until the next resync.
			a.say(st, uid, "%s: %v", uid, err)
			return
		}
	}
	cur := st.added[uid]
	if !want {
		delete(st.pending, uid)
		if cur != nil {
			a.release(st, uid, cur, exists)
		}
		return
	}
	if cur != nil && cur.ip == ip {
		delete(st.pending, uid)
		return
	}
	st.pending[uid] = ip
}

// wants says whether p is an ambient application pod of this node that can
// be captured, and its IP.
func (a *NodeAgent) wants(ctx context.Context, st *agentState, p *KubePod) (bool, netip.Addr, error) {
	switch {
	case p.Spec.NodeName != a.Node:
		return false, netip.Addr{}, nil
	case p.Spec.HostNetwork:
		// Its namespace is the node's: redirecting it would capture the
		// node's own traffic.
		return false, netip.Addr{}, nil
	case p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed":
		return false, netip.Addr{}, nil
	case p.Status.PodIP == "":
		return false, netip.Addr{}, nil // not started yet; a later event has the IP
	}
	label := a.Label
	if label == "" {
		label = AmbientLabel
	}
	if v, ok := p.Metadata.Labels[label]; ok {
		if v != "ambient" {
			return false, netip.Addr{}, nil
		}
	} else {
		labels, err := a.namespaceLabels(ctx, st, p.Metadata.Namespace)
		if err != nil {
			return false, netip.Addr{}, err
		}
		if labels[label] != "ambient" {
			return false, netip.Addr{}, nil
		}
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil || !ip.Unmap().Is4() {
		a.say(st, p.Key(), "%s: pod IP %q is not IPv4; the reference data plane is IPv4 only, the pod is not captured", p.Key(), p.Status.PodIP)
		return false, netip.Addr{}, nil
	}
	return true, ip.Unmap(), nil
}

// namespaceLabels returns a namespace's labels, cached for NamespaceTTL. A
// namespace that does not exist has none.
func (a *NodeAgent) namespaceLabels(ctx context.Context, st *agentState, ns string) (map[string]string, error) {
	if c, ok := st.ns[ns]; ok && time.Since(c.at) < a.NamespaceTTL {
		return c.labels, nil
	}
	labels, found, err := a.API.NamespaceLabels(ctx, ns)
	if err != nil {
		return nil, fmt.Errorf("namespace labels: %w", err)
	}
	st.ns[ns] = nsLabels{labels: labels, found: found, at: time.Now()}
	return labels, nil
}

// resolvePending finds the namespaces of the pending pods in one scan, and
// redirects and hands over each one found.
func (a *NodeAgent) resolvePending(st *agentState) {
	if len(st.pending) == 0 {
		return
	}
	var ips []netip.Addr
	for _, ip := range st.pending {
		ips = append(ips, ip)
	}
	scan, err := FindNetNS(a.NetNSDir, ips)
	if err != nil {
		a.say(st, "scan", "%v", err)
		return
	}
	delete(st.said, "scan")
	defer scan.Close()
	for _, uid := range sortedKeys(st.pending) {
		ip := st.pending[uid]
		ns, ok := scan.Found[ip]
		if !ok {
			why := fmt.Sprintf("no network namespace in %s has %v yet (%d looked into)", a.NetNSDir, ip, scan.Scanned)
			if holders := scan.Ambiguous[ip]; len(holders) > 0 {
				why = fmt.Sprintf("several network namespaces have %v: %v; waiting for the stale one to go", ip, holders)
			} else if len(scan.Skipped) > 0 {
				why += fmt.Sprintf("; skipped %v", scan.Skipped)
			}
			a.say(st, uid, "%s: %s", uid, why)
			continue
		}
		delete(scan.Found, ip) // ours now
		if err := ApplyRedirect(ns.FD, ip, a.Mark); err != nil {
			unix.Close(ns.FD)
			a.say(st, uid, "%s: %v (retrying)", uid, err)
			continue
		}
		zuid := uid
		if p := st.pods[uid]; p != nil && p.Metadata.UID != "" {
			zuid = p.Metadata.UID
		}
		if old := st.added[uid]; old != nil {
			unix.Close(old.fd)
			// A pod recreated under the same name is another pod to the
			// proxy: the old one goes.
			if old.zdsUID != zuid && st.server != nil {
				if err := st.server.Del(old.zdsUID); err != nil {
					a.Logf("%s: replaced pod %s: node proxy: %v", uid, old.zdsUID, err)
				}
			}
		}
		st.added[uid] = &handed{ip: ip, fd: ns.FD, path: ns.Path, zdsUID: zuid}
		delete(st.pending, uid)
		delete(st.said, uid)
		if st.server == nil {
			a.Logf("%s: redirected (%v, netns %s)", uid, ip, ns.Path)
			continue
		}
		if err := st.server.Add(zuid, ns.FD, workloadInfo(st.pods[uid], uid)); err != nil {
			// The server remembers the pod anyway and sends it again to
			// every proxy that connects, as the embedded agent does.
			a.Logf("%s: redirected (%v, netns %s); node proxy: %v", uid, ip, ns.Path, err)
			continue
		}
		a.Logf("%s: redirected and handed to the node proxy (%v, netns %s)", uid, ip, ns.Path)
	}
}

// release takes a pod back from the proxy. If the pod still runs (it left
// ambient mode), its redirect rules are removed first, as istio-cni does:
// its new connections then go direct at once, instead of being redirected
// to a proxy that no longer serves the pod. A deleted pod's namespace goes
// away with its rules.
func (a *NodeAgent) release(st *agentState, uid string, h *handed, stillRuns bool) {
	delete(st.added, uid)
	defer unix.Close(h.fd)
	msg := fmt.Sprintf("%s: removed", uid)
	if stillRuns {
		if err := RemoveRedirect(h.fd); err != nil {
			msg += fmt.Sprintf(" (%v)", err)
		} else {
			msg += " (left ambient mode: redirect rules removed)"
		}
	}
	if st.server != nil {
		if err := st.server.Del(h.zdsUID); err != nil {
			msg += fmt.Sprintf("; node proxy: %v", err)
		}
	}
	delete(st.said, uid)
	a.Logf("%s", msg)
}

// say logs a problem about subject once, until it changes or is cleared.
func (a *NodeAgent) say(st *agentState, subject, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if st.said[subject] == msg {
		return
	}
	st.said[subject] = msg
	a.Logf("%s", msg)
}

// workloadInfo is what the agent tells the node proxy about a pod, as
// istio-cni does: its name, namespace and service account (no address: the
// proxy reads that from the pod's namespace). p is nil for a pod the agent
// handed over and no longer lists; its uid still names it.
func workloadInfo(p *KubePod, uid string) *zdsapi.WorkloadInfo {
	if p == nil {
		ns, name, _ := strings.Cut(uid, "/")
		return &zdsapi.WorkloadInfo{Namespace: ns, Name: name}
	}
	return &zdsapi.WorkloadInfo{Name: p.Metadata.Name, Namespace: p.Metadata.Namespace, ServiceAccount: p.Spec.ServiceAccountName}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
