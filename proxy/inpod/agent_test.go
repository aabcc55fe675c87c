package inpod

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// agentRig is a node agent for node w1 against a fake API server, with real
// pod namespaces pinned in a netns directory and a proxy (recHandler)
// connected to it once it is synced.
type agentRig struct {
	api   *fakeAPI
	dir   string
	sock  string
	proxy *recHandler
	logs  *logBuf
	done  chan error
	label string // the agent's enrolment label ("" = AmbientLabel)
	stop  context.CancelFunc
}

type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) logf(t *testing.T) func(string, ...any) {
	return func(f string, a ...any) {
		s := fmt.Sprintf(f, a...)
		l.mu.Lock()
		l.lines = append(l.lines, s)
		l.mu.Unlock()
		t.Log(s)
	}
}

func (l *logBuf) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func newAgentRig(t *testing.T, setup func(r *agentRig)) *agentRig {
	t.Helper()
	r := &agentRig{api: newFakeAPI(t), dir: t.TempDir(), sock: sockPath(t), proxy: newRec(t), logs: &logBuf{}, done: make(chan error, 1)}
	if setup != nil {
		setup(r)
	}
	k, _ := r.api.client(t)
	synced := make(chan struct{})
	a := &NodeAgent{API: k, Node: "w1", Socket: r.sock, NetNSDir: r.dir, Mark: testMark, Logf: r.logs.logf(t),
		Resync: 100 * time.Millisecond, NamespaceTTL: 100 * time.Millisecond, InitialSyncTimeout: 5 * time.Second,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		OnSynced: func() { close(synced) }, Label: r.label}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Error("agent did not stop within 5s")
		}
	})
	select {
	case <-synced:
	case err := <-r.done:
		t.Fatalf("agent stopped: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("agent not synced within 5s")
	}
	runClient(t, r.sock, r.proxy)
	return r
}

// pod makes an application pod's namespace with ip, pinned in the netns
// directory as name, and returns its descriptor and inode.
func (r *agentRig) pod(t *testing.T, name, ip string) (int, uint64) {
	fd, ino := addrNS(t, ip+"/16")
	bindNS(t, r.dir, "cni-"+name, fd)
	return fd, ino
}

// zuid is the uid the agent sends on ZDS for the pod namespace/name: its
// Kubernetes UID, as the fake API server gives it (mkPod).
func zuid(key string) string {
	ns, name, _ := strings.Cut(key, "/")
	return "uid-" + ns + "-" + name
}

// wl is the workload info the agent sends for the pod uid (namespace/name):
// its namespace, name and service account (mkPod's "sa-" + name), as
// infoString prints it.
func wl(uid string) string {
	_, name, _ := strings.Cut(uid, "/")
	return uid + " sa=sa-" + name
}

// eventually fails the test unless cond holds within 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With an enrolment label of its own, the agent takes the pods that label
// enrols and leaves those Istio's label enrols to Istio's node agent.
func TestNodeAgentEnrolmentLabel(t *testing.T) {
	const own = "blastradius.dev/dataplane-mode"
	var inos = map[string]uint64{}
	r := newAgentRig(t, func(r *agentRig) {
		r.label = own
		r.api.setNamespace("istio", map[string]string{AmbientLabel: "ambient"})
		r.api.setNamespace("ref", map[string]string{own: "ambient"})
		for _, p := range []struct{ ns, name, ip string }{{"istio", "a", "10.20.0.2"}, {"ref", "b", "10.20.0.3"}} {
			_, inos[p.name] = r.pod(t, p.name, p.ip)
			r.api.setPod(mkPod(p.ns, p.name, "w1", p.ip, nil))
		}
	})
	r.proxy.expect(t,
		event{kind: "add", uid: zuid("ref/b"), ino: inos["b"], workload: wl("ref/b")},
		event{kind: "snapshot"})
	r.proxy.quiet(t)
}

// The agent hands exactly the ambient pods of its node to the proxy, with
// the redirect rules in their namespaces, and follows the API: new pods, an
// IP assigned later, deletions, a pod leaving ambient mode, a namespace
// joining it.
func TestNodeAgentFollowsTheAPI(t *testing.T) {
	var fds = map[string]int{}
	var inos = map[string]uint64{}
	r := newAgentRig(t, func(r *agentRig) {
		r.api.setNamespace("amb", map[string]string{AmbientLabel: "ambient"})
		r.api.setNamespace("plain", map[string]string{"team": "x"})
		for _, p := range []struct {
			ns, name, node, ip string
			labels             map[string]string
		}{
			{"amb", "a", "w1", "10.20.0.2", nil},                                          // ambient by namespace
			{"plain", "b", "w1", "10.20.0.3", nil},                                        // not ambient
			{"plain", "c", "w1", "10.20.0.4", map[string]string{AmbientLabel: "ambient"}}, // ambient by its own label
			{"amb", "d", "w1", "10.20.0.5", map[string]string{AmbientLabel: "none"}},      // opted out
			{"amb", "e", "w2", "10.20.0.6", nil},                                          // another node's
			{"amb", "g", "w1", "", nil},                                                   // no IP yet
		} {
			if p.ip != "" {
				fds[p.name], inos[p.name] = r.pod(t, p.name, p.ip)
			}
			r.api.setPod(mkPod(p.ns, p.name, p.node, p.ip, p.labels))
		}
		host := mkPod("amb", "hostnet", "w1", "10.20.0.7", nil)
		host.Spec.HostNetwork = true
		fds["hostnet"], _ = r.pod(t, "hostnet", "10.20.0.7")
		r.api.setPod(host)
	})
	p := r.proxy
	p.expect(t,
		event{kind: "add", uid: zuid("amb/a"), ino: inos["a"], workload: wl("amb/a")},
		event{kind: "add", uid: zuid("plain/c"), ino: inos["c"], workload: wl("plain/c")},
		event{kind: "snapshot"})
	p.quiet(t)
	for name, want := range map[string]bool{"a": true, "c": true, "b": false, "d": false, "e": false, "hostnet": false} {
		if got := hasRedirect(t, fds[name]); got != want {
			t.Errorf("pod %s: redirect rules %v, want %v", name, got, want)
		}
	}
	if rules := redirectRules(t, fds["a"]); rules["outbound"] != 1 || rules["inbound"] != 1 {
		t.Errorf("pod a's rules: %v", rules)
	}

	// g gets its IP (its sandbox is up): added.
	_, inoG := r.pod(t, "g", "10.20.0.8")
	r.api.setPod(mkPod("amb", "g", "w1", "10.20.0.8", nil))
	p.expect(t, event{kind: "add", uid: zuid("amb/g"), ino: inoG, workload: wl("amb/g")})

	// A pod whose namespace shows up only after its IP is in the API (the
	// agent looks again every resync).
	r.api.setPod(mkPod("amb", "late", "w1", "10.20.0.9", nil))
	time.Sleep(250 * time.Millisecond)
	p.quiet(t)
	_, inoLate := r.pod(t, "late", "10.20.0.9")
	p.expect(t, event{kind: "add", uid: zuid("amb/late"), ino: inoLate, workload: wl("amb/late")})

	// a is deleted: the proxy is told.
	r.api.deletePod("amb/a")
	p.expect(t, event{kind: "del", uid: zuid("amb/a")})

	// c opts out: taken back, and its rules removed from the running pod.
	r.api.setPod(mkPod("plain", "c", "w1", "10.20.0.4", map[string]string{AmbientLabel: "none"}))
	p.expect(t, event{kind: "del", uid: zuid("plain/c")})
	if hasRedirect(t, fds["c"]) {
		t.Error("pod c left ambient mode but keeps its redirect rules")
	}

	// The namespace of b joins ambient mode: b is added within a resync.
	r.api.setNamespace("plain", map[string]string{AmbientLabel: "ambient"})
	p.expect(t, event{kind: "add", uid: zuid("plain/b"), ino: inos["b"], workload: wl("plain/b")})
	if !hasRedirect(t, fds["b"]) {
		t.Error("pod b added without redirect rules")
	}

	// A pod that finished is taken back.
	done := mkPod("amb", "g", "w1", "10.20.0.8", nil)
	done.Status.Phase = "Succeeded"
	r.api.setPod(done)
	p.expect(t, event{kind: "del", uid: zuid("amb/g")})
	p.quiet(t)
}

// Watch failures are survived: a compacted history (410), a malformed event,
// an API server that fails for a while. The agent lists again with back-off
// and misses nothing that happened meanwhile.
func TestNodeAgentResyncsAfterWatchErrors(t *testing.T) {
	r := newAgentRig(t, func(r *agentRig) {
		r.api.setNamespace("amb", map[string]string{AmbientLabel: "ambient"})
	})
	p := r.proxy
	p.expect(t, event{kind: "snapshot"})

	// 410: the history is gone; a pod created meanwhile is found by the list.
	_, ino1 := r.pod(t, "p1", "10.21.0.2")
	r.api.compact()
	r.api.setPod(mkPod("amb", "p1", "w1", "10.21.0.2", nil))
	p.expect(t, event{kind: "add", uid: zuid("amb/p1"), ino: ino1, workload: wl("amb/p1")})

	// A malformed event: logged, then a list.
	r.api.mu.Lock()
	r.api.watchHook = func(w http.ResponseWriter, _ *http.Request) bool {
		fmt.Fprint(w, `{"type":"ADDED","object":{"metadata":"garbage"}}`)
		return true
	}
	r.api.mu.Unlock()
	r.api.endWatches() // the next watch is malformed
	r.api.setPod(mkPod("amb", "p2", "w1", "10.21.0.3", nil))
	eventually(t, "the malformed event is logged", func() bool { return r.logs.has("malformed ADDED event") })

	// The API server fails lists for a while; a pod is deleted meanwhile.
	r.api.mu.Lock()
	r.api.watchHook = nil
	r.api.listHook = func(w http.ResponseWriter) bool {
		writeStatus(w, 503, "ServiceUnavailable", "etcd is down")
		return true
	}
	r.api.mu.Unlock()
	r.api.deletePod("amb/p1")
	eventually(t, "the failed list is logged", func() bool { return r.logs.has("etcd is down") })
	_, ino2 := r.pod(t, "p2", "10.21.0.3")
	r.api.mu.Lock()
	r.api.listHook = nil
	r.api.mu.Unlock()
	got := map[string]event{}
	for range 2 {
		e := p.next(t)
		got[e.uid] = e
	}
	if e := got[zuid("amb/p1")]; e.kind != "del" {
		t.Errorf("p1: %+v, want del", e)
	}
	if e := got[zuid("amb/p2")]; e.kind != "add" || e.ino != ino2 {
		t.Errorf("p2: %+v, want add of inode %d", e, ino2)
	}
	p.quiet(t)
	// The failing lists were spaced out (back-off), not hammered.
	lists := 0
	for _, q := range r.api.requestLog() {
		if strings.HasPrefix(q, "/api/v1/pods?") && !strings.Contains(q, "watch=1") {
			lists++
		}
	}
	if lists > 40 {
		t.Errorf("%d lists: no back-off", lists)
	}
}

// An agent that cannot list its node's pods does not listen (a proxy would
// take its empty snapshot for "every pod is gone") and gives up at its
// deadline with one line.
func TestNodeAgentInitialSyncDeadline(t *testing.T) {
	api := newFakeAPI(t)
	api.listHook = func(w http.ResponseWriter) bool {
		writeStatus(w, 403, "Forbidden", `pods is forbidden: User "system:serviceaccount:blastradius-ambient:default" cannot list resource "pods"`)
		return true
	}
	k, _ := api.client(t)
	sock := sockPath(t)
	logs := &logBuf{}
	a := &NodeAgent{API: k, Node: "w1", Socket: sock, NetNSDir: t.TempDir(), Mark: testMark, Logf: logs.logf(t),
		InitialSyncTimeout: 300 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	start := time.Now()
	err := a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "within 300ms") || !strings.Contains(err.Error(), "forbidden") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	if err := Connect(context.Background(), sock, newRec(t)); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("a proxy could connect to an agent that never synced: %v", err)
	}
}

// After a restart the agent knows every pod before it listens: the proxy's
// first snapshot has them all.
func TestNodeAgentRestartSnapshot(t *testing.T) {
	var ino uint64
	r := newAgentRig(t, func(r *agentRig) {
		r.api.setNamespace("amb", map[string]string{AmbientLabel: "ambient"})
		_, ino = r.pod(t, "p", "10.22.0.2")
		r.api.setPod(mkPod("amb", "p", "w1", "10.22.0.2", nil))
	})
	r.proxy.expect(t, event{kind: "add", uid: zuid("amb/p"), ino: ino, workload: wl("amb/p")}, event{kind: "snapshot"})
	r.stop()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	r.done <- nil // for the rig's cleanup

	k, _ := r.api.client(t)
	synced := make(chan struct{})
	a := &NodeAgent{API: k, Node: "w1", Socket: r.sock, NetNSDir: r.dir, Mark: testMark, Logf: t.Logf,
		OnSynced: func() { close(synced) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-synced:
	case <-time.After(5 * time.Second):
		t.Fatal("restarted agent not synced")
	}
	h := newRec(t)
	runClient(t, r.sock, h)
	h.expect(t, event{kind: "add", uid: zuid("amb/p"), ino: ino, workload: wl("amb/p")}, event{kind: "snapshot"})
}
