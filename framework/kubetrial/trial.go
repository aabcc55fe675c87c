package kubetrial

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/manifests"
	"blastradius.dev/blastradius/proxy/ca"
)

// Trial implements scenario.Backend.
func (b *Backend) Trial(ctx context.Context, t *scenario.TrialRun) error {
	if t.Plan.Mesh.Waypoint != nil && t.Mode == "ambient" {
		return &scenario.SkipError{Reason: "waypoints are not wired on the Kubernetes provider yet (the registry does not place them)"}
	}
	istio := scenario.MeshOf(t.Mode) == scenario.MeshIstio
	if why := IstioSkip(t.Plan, b.Istio); why != "" {
		return &scenario.SkipError{Reason: why}
	}
	if istio && b.Istio == nil {
		return b.CheckMode(t.Mode)
	}
	if istio {
		undo, err := b.istioTrialSetup(ctx, t)
		if err != nil {
			return err
		}
		defer undo()
	}
	ns := manifests.Namespace(t.Mode)
	ready := b.ReadyTimeout
	if ready <= 0 {
		ready = 2 * time.Minute
	}
	objs, err := Render(t.Plan, b.Nodes, b.Image)
	if err != nil {
		return err
	}
	if t.Mode != "none" && !istio {
		sec, err := controlPlaneCA(ns, t.Plan.Mesh.CertTTL)
		if err != nil {
			return err
		}
		// After the namespace, before the control plane that reads it.
		objs = append(objs[:1], append([]*unstructured.Unstructured{sec}, objs[1:]...)...)
	}
	// A namespace left by an interrupted run would mix old pods in.
	if err := b.deleteNamespace(ctx, ns, 2*time.Minute); err != nil {
		return err
	}
	defer func() {
		if b.KeepNamespace {
			t.Logf("namespace %s kept (BLASTRADIUS_KEEP_NAMESPACE); the next trial in this mode deletes it first", ns)
			return
		}
		if err := b.deleteNamespace(context.Background(), ns, 2*time.Minute); err != nil {
			t.Logf("clean-up: %v", err)
		}
	}()
	t0 := time.Now()
	t.Logf("applying %d objects into %s", len(objs), ns)
	if err := kube.Apply(ctx, b.Dynamic, b.Mapper, objs); err != nil {
		return err
	}
	t.Logf("waiting at most %s for the workloads", ready)
	if err := kube.WaitWorkloadsReady(ctx, b.Dynamic, objs, kube.WaitOptions{Timeout: ready}); err != nil {
		if why := b.podProblems(ctx, ns); why != "" {
			return fmt.Errorf("%w; %s", err, why)
		}
		return err
	}
	var mesh *results.MeshEvidence
	sidecars := istio && scenario.BaseMode(t.Mode) == "sidecar"
	switch {
	case sidecars:
		n, err := b.waitInjected(ctx, ns, redirectTimeout)
		if err != nil {
			return err
		}
		t.Logf("istio: %d pods run the sidecar istiod injected (%s)", n, istioSidecarStatus)
		mesh = &results.MeshEvidence{Mesh: scenario.MeshIstio, Injected: n}
	case istio:
		n, err := b.waitRedirected(ctx, ns, redirectTimeout)
		if err != nil {
			return err
		}
		t.Logf("istio: %d pods redirected by istio-cni (%s: %s)", n, istioRedirection, istioRedirectionValue)
		mesh = &results.MeshEvidence{Mesh: scenario.MeshIstio, Redirected: n}
	}
	// An Istio waypoint: istiod makes its Deployment from the trial's
	// Gateway; the trial scales it to the scenario's replicas.
	var waypointNodes map[string]string
	if w := t.Plan.Mesh.Waypoint; w != nil && istio && !sidecars {
		if waypointNodes, err = b.waitWaypoint(ctx, ns, w.Replicas, ready); err != nil {
			return err
		}
		t.Logf("istio: waypoint in front of %s: %d replicas Ready (%v)", w.Service, w.Replicas, waypointNodes)
	}
	pl, err := b.place(ctx, ns)
	if err != nil {
		return err
	}
	topo, err := b.topology(ctx, t, pl)
	if err != nil {
		return err
	}
	var afterProbe map[string]float64
	if istio {
		mesh.Pods = len(topo.Pods)
		// The HBONE probe is ambient's: sidecars speak mTLS between
		// Envoys, their injection is the evidence here.
		if !sidecars {
			if afterProbe, err = b.istioProbe(ctx, t, ns, topo, pl, mesh); err != nil {
				return err
			}
		}
		t.SetMesh(*mesh)
	}
	kp := &keeper{b: b, ns: ns, meshed: t.Mode != "none" && !istio, logf: t.Logf, interval: time.Second}
	for s := range t.Plan.Services {
		kp.services = append(kp.services, s)
	}
	sort.Strings(kp.services)
	eps, _, err := kp.current(ctx)
	if err != nil {
		return err
	}
	kp.last = eps
	if t.Mode != "none" && !istio {
		cp, ok := pl.pods["controlplane"]
		if !ok {
			return errors.New("the control plane pod is not running")
		}
		kp.cpPod = cp.Name
		if err := b.publish(ctx, ns, registryWith(ns, topo, pl, eps), cp.Name); err != nil {
			return err
		}
		t.Logf("registry published: %d workloads, %d services", len(topo.Pods), len(topo.Services))
	}
	bringUp := time.Since(t0)
	t.Logf("trial objects ready in %.1fs", bringUp.Seconds())

	start, byClient, err := t.Begin(ctx, topo, bringUp, 2*time.Second, func(id string) string { return EventsDir + "/" + id + ".jsonl" })
	if err != nil {
		return err
	}
	clients := make([]string, 0, len(byClient))
	for c := range byClient {
		clients = append(clients, c)
	}
	sort.Strings(clients)
	win := t.Window()
	// Agents run in the foreground of their exec sessions and exit when
	// the window ends; a session cut by a fault (the client's node
	// crashed) is logged, and what its agent wrote is pulled back below.
	loadCtx, stopLoad := context.WithDeadline(ctx, win.End.Add(t.Timeout+30*time.Second))
	defer stopLoad()
	var wg sync.WaitGroup
	for _, c := range clients {
		p := pl.pods[c]
		cmd := append([]string{manifests.Binary}, t.AgentArgs(start, byClient[c])...)
		logPath := filepath.Join(t.Dir, "logs", c+".log")
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Create(logPath)
			if err != nil {
				t.Logf("agent %s: %v", c, err)
				return
			}
			defer f.Close()
			if err := b.Exec.Exec(loadCtx, ns, p.Name, containerOf(p), cmd, f, f); err != nil && loadCtx.Err() == nil {
				t.Logf("agent %s: %v", c, err)
			}
		}()
	}
	go kp.run(loadCtx, topo)

	dp := &dataPlane{b: b, ns: ns, mode: t.Mode, logf: t.Logf}
	podNodes := map[string]string{}
	for name, p := range pl.pods {
		podNodes[name] = pl.planned[p.Spec.NodeName]
	}
	infra := &nodes{b: b, ns: ns, kp: kp, podNodes: podNodes, planned: t.Plan.Nodes}
	defer infra.uncordon(t.Logf)
	var target scenario.FaultTarget
	if t.Mode != "none" {
		target = dp
	}
	if istio {
		idp := &istioDataPlane{b: b, ns: b.Istio.Namespace, trialNS: ns, sidecar: sidecars, waypoint: len(waypointNodes), real: map[string]string{}, logf: t.Logf}
		maps.Copy(podNodes, waypointNodes)
		for realName, planned := range pl.planned {
			idp.real[planned] = realName
		}
		// istiod's node, for the faults that reach it and the verdict.
		if p, err := idp.podOn(ctx, istiodSelector, ""); err == nil {
			if n, ok := pl.planned[p.Spec.NodeName]; ok {
				podNodes[istiodName] = n
			}
		}
		target = idp
		if sidecars && b.Chaos != nil {
			target = &istioChaosDataPlane{istioDataPlane: idp, k: b.Chaos, scope: chaosScope(t, ns)}
			defer b.chaosCleanUp(ns, t.Logf)
		}
	}
	var faultInfra scenario.Infra = infra
	if b.Chaos != nil && !istio {
		scope := chaosScope(t, ns)
		faultInfra = &chaosNodes{nodes: infra, k: b.Chaos, scope: scope}
		if t.Mode != "none" {
			target = &chaosDataPlane{dataPlane: dp, k: b.Chaos, scope: scope, nodes: infra}
		}
		defer b.chaosCleanUp(ns, t.Logf)
	}
	kind, fe, faultErr := t.RunFault(ctx, target, faultInfra)
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(win.End) + t.Timeout + 500*time.Millisecond):
	}
	wgDone := make(chan struct{})
	go func() { wg.Wait(); close(wgDone) }()
	select {
	case <-wgDone:
	case <-time.After(30 * time.Second):
		t.Logf("agents still running 30s after the window: stopping their sessions")
		stopLoad()
		<-wgDone
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := b.pull(ctx, t, ns, clients); err != nil {
		t.Logf("pull events: %v", err)
	}
	if istio && !sidecars {
		after, _, err := b.hboneByNode(ctx, b.Istio.Namespace, pl.planned)
		if err != nil {
			t.Logf("istio: HBONE counters after the trial: %v", err)
		}
		// A ztunnel restarted during the trial counts from zero: its
		// node's figure is then what the new one counted.
		trial := diffStreams(afterProbe, after)
		for n, v := range trial {
			if v < 0 {
				trial[n] = after[n]
			}
		}
		mesh.TrialStreams = trial
		t.SetMesh(*mesh)
		t.Logf("istio: HBONE streams opened by the node proxies during the trial: %s", streamsLine(trial))
	}
	if faultErr != nil {
		return faultErr
	}
	return t.Measure(kind, fe, kp.Changes())
}

// chaosCleanUp deletes whatever a fault left behind in ns (a run
// interrupted mid-fault) before the namespace goes: a chaos object's
// finalizer would hold the namespace's deletion.
func (b *Backend) chaosCleanUp(ns string, logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), chaosOp)
	defer cancel()
	if err := b.Chaos.CleanUp(ctx, ns); err != nil {
		logf("clean-up: %v", err)
	}
}

// containerOf is the container the load agent runs in: the first one that
// is not a sidecar proxy.
func containerOf(p corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name != "proxy" && c.Name != "istio-proxy" {
			return c.Name
		}
	}
	return p.Spec.Containers[0].Name
}

// pull copies every client's event files into the trial's flows folder.
// Clients are looked up again: a client restarted after its node came back
// is a new pod.
func (b *Backend) pull(ctx context.Context, t *scenario.TrialRun, ns string, clients []string) error {
	pl, err := b.place(ctx, ns)
	if err != nil {
		return err
	}
	var errs []string
	for _, c := range clients {
		p, ok := pl.pods[c]
		if !ok {
			errs = append(errs, c+": no running pod")
			continue
		}
		n, err := b.pullOne(ctx, ns, p, filepath.Join(t.Dir, "flows"))
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", c, err))
			continue
		}
		t.Logf("pulled %d event files from %s", n, c)
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// pullOne streams a client pod's events folder as tar (`blastradius
// events`, the image has no shell) and writes each file under dir. File
// names are flow ids; anything else is refused.
func (b *Backend) pullOne(ctx context.Context, ns string, p corev1.Pod, dir string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	if err := b.Exec.Exec(ctx, ns, p.Name, containerOf(p), []string{manifests.Binary, "events", EventsDir}, &out, &errb); err != nil {
		return 0, fmt.Errorf("%v %s", err, strings.TrimSpace(errb.String()))
	}
	return events.ReadArchive(&out, dir)
}

// dataPlane is the reference data plane on Kubernetes, as faults see it.
type dataPlane struct {
	b    *Backend
	ns   string
	mode string
	logf func(string, ...any)
}

func (d *dataPlane) Describe() string { return "reference " + d.mode + " data plane on Kubernetes" }

// ControlPlanePod names the control plane's pod in the plan.
func (d *dataPlane) ControlPlanePod() string { return "controlplane" }

// playing is the running pods that play plan names in namespace ns, as
// the faults find them at the moment they strike (one listing for all).
func (b *Backend) playing(ns string, names ...string) ([]corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pl, err := b.place(ctx, ns)
	if err != nil {
		return nil, err
	}
	out := make([]corev1.Pod, len(names))
	for i, name := range names {
		p, ok := pl.pods[name]
		if !ok {
			return nil, fmt.Errorf("no running pod plays %s", name)
		}
		out[i] = p
	}
	return out, nil
}

// deletePod deletes the pod playing a plan name at once (grace period 0):
// the nearest the API comes to a SIGKILL; its controller makes a new pod.
func (d *dataPlane) deletePod(name string) (time.Time, error) {
	ps, err := d.b.playing(d.ns, name)
	if err != nil {
		return time.Time{}, err
	}
	p := ps[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	zero := int64(0)
	at := time.Now()
	if err := d.b.Client.CoreV1().Pods(d.ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		return time.Time{}, fmt.Errorf("delete pod %s: %w", p.Name, err)
	}
	return at, nil
}

// CrashNodeProxy deletes the node's proxy pod (node is a planned name).
func (d *dataPlane) CrashNodeProxy(node string) (time.Time, error) {
	return d.deletePod("ztunnel-n" + strings.TrimPrefix(node, "node-"))
}

// CrashControlPlane deletes the control plane's pod.
func (d *dataPlane) CrashControlPlane() (time.Time, error) { return d.deletePod("controlplane") }

// nodes offers the provider's node crash and the API's drain to faults,
// in planned names.
type nodes struct {
	b  *Backend
	ns string
	kp *keeper
	// podNodes places every pod of the trial (the data plane's too) on a
	// planned node; planned is how many nodes the trial uses.
	podNodes map[string]string
	planned  int
	mu       sync.Mutex
	cordoned []string
}

// addressed is the running pods playing planned names, each with an
// address.
func (n *nodes) addressed(names ...string) ([]corev1.Pod, error) {
	ps, err := n.b.playing(n.ns, names...)
	if err != nil {
		return nil, err
	}
	for i, p := range ps {
		if p.Status.PodIP == "" {
			return nil, fmt.Errorf("pod %s, playing %s, has no address", p.Name, names[i])
		}
	}
	return ps, nil
}

// DropFlow implements scenario.FlowDropper: planned pod names become the
// running pods' addresses and the server's node.
func (n *nodes) DropFlow(server, client string, ports ...int) (time.Time, func() (time.Time, time.Duration, error), error) {
	if n.b.Dropper == nil {
		return time.Time{}, nil, errors.New("this provider cannot drop a flow")
	}
	ps, err := n.addressed(server, client)
	if err != nil {
		return time.Time{}, nil, err
	}
	return n.b.Dropper.DropFlow(ps[0].Spec.NodeName, ps[0].Status.PodIP, ps[1].Status.PodIP, ports...)
}

// DropPod implements scenario.PodDropper.
func (n *nodes) DropPod(pod string) (time.Time, func() (time.Time, time.Duration, error), error) {
	if n.b.Dropper == nil {
		return time.Time{}, nil, errors.New("this provider cannot drop a pod's packets")
	}
	ps, err := n.addressed(pod)
	if err != nil {
		return time.Time{}, nil, err
	}
	return n.b.Dropper.DropPod(ps[0].Spec.NodeName, ps[0].Status.PodIP)
}

// PodNode implements scenario.Infra.
func (n *nodes) PodNode(pod string) (string, bool) {
	node, ok := n.podNodes[pod]
	return node, ok
}

// Partition implements scenario.Partitioner.
func (n *nodes) Partition(a, b string) (time.Time, func() (time.Time, error), error) {
	if n.b.Partitioner == nil {
		return time.Time{}, nil, errors.New("this provider cannot partition nodes")
	}
	r, err := n.reals(a, b)
	if err != nil {
		return time.Time{}, nil, err
	}
	return n.b.Partitioner.PartitionNodes(r...)
}

// PartitionAll implements scenario.SegmentPartitioner: every node of the
// trial cut off from every other.
func (n *nodes) PartitionAll() (time.Time, func() (time.Time, error), error) {
	if n.b.Partitioner == nil {
		return time.Time{}, nil, errors.New("this provider cannot partition nodes")
	}
	var planned []string
	for i := 1; i <= n.planned; i++ {
		planned = append(planned, fmt.Sprintf("node-%d", i))
	}
	r, err := n.reals(planned...)
	if err != nil {
		return time.Time{}, nil, err
	}
	return n.b.Partitioner.PartitionNodes(r...)
}

// DrainNode drains a node as an operator would: the servers' replacements
// (Deployments the plan kept at zero replicas) are scaled up and waited for
// until Kubernetes lists them as ready endpoints, then the node is cordoned
// and its pods evicted through the Eviction API, as kubectl drain
// --ignore-daemonsets does: DaemonSet pods (client agent, node proxy) stay.
// The node stays cordoned until the trial ends.
func (n *nodes) DrainNode(ctx context.Context, node string, replacements []string, _ time.Duration) (time.Time, time.Time, string, error) {
	r, err := n.real(node)
	if err != nil {
		return time.Time{}, time.Time{}, "", err
	}
	for _, s := range replacements {
		if err := scale(ctx, n.b.Client, n.ns, s, 1); err != nil {
			return time.Time{}, time.Time{}, "", err
		}
	}
	for {
		cur, _, err := n.kp.current(ctx)
		missing := append([]string(nil), replacements...)
		if err == nil {
			for _, eps := range cur {
				for _, p := range eps {
					if i := slices.Index(missing, p); i >= 0 {
						missing = slices.Delete(missing, i, i+1)
					}
				}
			}
			if len(missing) == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, time.Time{}, "", fmt.Errorf("replacements %v never became ready endpoints: %w", missing, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
	replaced := time.Now()
	if err := kube.Cordon(ctx, n.b.Client, r); err != nil {
		return replaced, time.Time{}, "", err
	}
	n.mu.Lock()
	n.cordoned = append(n.cordoned, r)
	n.mu.Unlock()
	if err := kube.Drain(ctx, n.b.Client, r, kube.DrainOptions{Timeout: 2 * time.Minute}); err != nil {
		return replaced, time.Time{}, "", err
	}
	return replaced, time.Now(), fmt.Sprintf("%s cordoned until the trial ends; DaemonSet pods (client agent, node proxy) stay, as with kubectl drain --ignore-daemonsets", r), nil
}

// uncordon makes every node a drain cordoned schedulable again.
func (n *nodes) uncordon(logf func(string, ...any)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.cordoned {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := kube.Uncordon(ctx, n.b.Client, r); err != nil {
			logf("clean-up: %v", err)
		}
		cancel()
	}
	n.cordoned = nil
}

func (n *nodes) real(node string) (string, error) {
	var i int
	if _, err := fmt.Sscanf(node, "node-%d", &i); err != nil || i < 1 || i > len(n.b.Nodes) {
		return "", fmt.Errorf("node %s is not one of node-1..node-%d", node, len(n.b.Nodes))
	}
	return n.b.Nodes[i-1], nil
}

// reals maps planned node names to the cluster's.
func (n *nodes) reals(planned ...string) ([]string, error) {
	out := make([]string, len(planned))
	for i, p := range planned {
		r, err := n.real(p)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func (n *nodes) CrashNode(node string) (time.Time, error) {
	if n.b.Crasher == nil {
		return time.Time{}, fmt.Errorf("this provider cannot crash node %s", node)
	}
	r, err := n.real(node)
	if err != nil {
		return time.Time{}, err
	}
	return n.b.Crasher.CrashNode(r)
}

func (n *nodes) RecoverNode(node string) (time.Time, error) {
	if n.b.Crasher == nil {
		return time.Time{}, fmt.Errorf("this provider cannot restart node %s", node)
	}
	r, err := n.real(node)
	if err != nil {
		return time.Time{}, err
	}
	return n.b.Crasher.RecoverNode(r)
}

// scale sets a Deployment's replicas through its scale subresource,
// retried on a conflict: the Deployment controller writes the object at the
// same moment (it does, right after a pod deletion).
func scale(ctx context.Context, cs kubernetes.Interface, ns, name string, n int32) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := cs.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Spec.Replicas = n
		_, err = cs.AppsV1().Deployments(ns).UpdateScale(ctx, name, s, metav1.UpdateOptions{FieldManager: kube.FieldManager})
		return err
	})
	if err != nil {
		return fmt.Errorf("%s scale to %d: %w", name, n, err)
	}
	return nil
}

// scaleControlPlane sets the control plane Deployment's replicas.
func (d *dataPlane) scaleControlPlane(ctx context.Context, n int32) error {
	return scale(ctx, d.b.Client, d.ns, "controlplane", n)
}

// StopControlPlane holds the control plane down: scaled to zero, its pod
// deleted with grace period 0 (a scale-down alone would let it serve
// through its grace period).
func (d *dataPlane) StopControlPlane() (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.scaleControlPlane(ctx, 0); err != nil {
		return time.Time{}, err
	}
	at := time.Now()
	pods, err := d.b.Client.CoreV1().Pods(d.ns).List(ctx, metav1.ListOptions{LabelSelector: manifests.LabelPod + "=controlplane"})
	if err != nil {
		return time.Time{}, fmt.Errorf("list control plane pods: %w", err)
	}
	zero := int64(0)
	for _, p := range pods.Items {
		if err := d.b.Client.CoreV1().Pods(d.ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
			return time.Time{}, fmt.Errorf("delete pod %s: %w", p.Name, err)
		}
	}
	return at, nil
}

// StartControlPlane scales the control plane back to one replica if it was
// stopped and returns when a control plane pod is Ready (its readiness
// probe is the control plane's own /ready: it serves a snapshot).
func (d *dataPlane) StartControlPlane(ctx context.Context) (time.Time, error) {
	if err := d.scaleControlPlane(ctx, 1); err != nil {
		return time.Time{}, err
	}
	for {
		pods, err := d.b.Client.CoreV1().Pods(d.ns).List(ctx, metav1.ListOptions{LabelSelector: manifests.LabelPod + "=controlplane"})
		if err == nil {
			for _, p := range pods.Items {
				if p.DeletionTimestamp == nil && kube.PodReady(&p) {
					return time.Now(), nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("no control plane pod Ready: %w", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// CertExpiries reads every proxy's certificates (identity → NotAfter, the
// earliest for an identity several proxies hold) from its admin port's
// /config_dump, through the API server: the node proxies in ambient mode,
// every pod's sidecar in sidecar mode.
func (d *dataPlane) CertExpiries(ctx context.Context) (map[string]time.Time, error) {
	if d.b.Admin == nil {
		return nil, errors.New("no way to reach the proxies' admin ports")
	}
	pl, err := d.b.place(ctx, d.ns)
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	var errs []string
	for name, p := range pl.pods {
		proxy := strings.HasPrefix(name, "ztunnel-")
		if d.mode == "sidecar" {
			proxy = name != "controlplane"
		}
		if !proxy {
			continue
		}
		body, err := d.b.Admin(ctx, d.ns, p.Name, 15020, "/config_dump")
		var dump struct {
			Certificates map[string]time.Time `json:"certificates"`
		}
		if err == nil {
			err = json.Unmarshal(body, &dump)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		for id, t := range dump.Certificates {
			if cur, ok := out[id]; !ok || t.Before(cur) {
				out[id] = t
			}
		}
	}
	if len(out) == 0 && len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("no proxy's certificates read: %s", strings.Join(errs, "; "))
	}
	return out, nil
}

// controlPlaneCA is the Secret holding a fresh CA root for one trial's
// reference control plane.
func controlPlaneCA(ns string, ttl time.Duration) (*unstructured.Unstructured, error) {
	if ttl <= 0 {
		ttl = time.Hour
	}
	root, err := ca.New("cluster.local", ttl)
	if err != nil {
		return nil, fmt.Errorf("control plane CA: %w", err)
	}
	key, err := root.RootKeyPEM()
	if err != nil {
		return nil, fmt.Errorf("control plane CA: %w", err)
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{"name": manifests.ControlPlaneCASecret, "namespace": ns,
			"labels": map[string]any{manifests.LabelPartOf: "blastradius"}},
		"type":       "Opaque",
		"stringData": map[string]any{"root-cert.pem": string(root.RootPEM()), "root-key.pem": string(key)},
	}}, nil
}

// podProblems says why the namespace's pods are not ready (kube.PodProblems).
func (b *Backend) podProblems(ctx context.Context, ns string) string {
	return kube.PodProblems(ctx, b.Client, ns)
}
