package kubetrial

import (
	"bytes"
	"context"
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

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/manifests"
)

// Istio is Istio's ambient mesh as installed on the cluster (istiod,
// istio-cni, ztunnel in one namespace): the istio-* modes run on it.
type Istio struct {
	// Namespace holds istiod, istio-cni and ztunnel (istio-system).
	Namespace string
	// StandIn says ztunnel is the tool's ztunnel-compatible proxy (its
	// HBONE counters are named differently from upstream ztunnel's).
	StandIn bool
	// NoEnvoy says why Istio's Envoy-based parts, the sidecars of the
	// istio-sidecar mode and ambient's waypoints, cannot run on this
	// cluster (their image is Envoy's, which the nodes cannot get); empty
	// when they can.
	NoEnvoy string
}

// Istio's pods, by the labels its charts give them.
const (
	istiodSelector  = "app=istiod"
	ztunnelSelector = "app=ztunnel"
	cniSelector     = "k8s-app=istio-cni-node"
	istiodName      = "istiod" // the Deployment, and the pod's plan name
	ztunnelName     = "ztunnel"
	// Istio's labels and annotation: a namespace enrolled in ambient
	// mode, and a pod istio-cni has redirected to its node's ztunnel.
	istioDataplaneLabel   = "istio.io/dataplane-mode"
	istioRedirection      = "ambient.istio.io/redirection"
	istioRedirectionValue = "enabled"
	// ztunnel's stats port (the chart's ztunnel-stats containerPort).
	ztunnelStatsPort = 15020
	// Sidecar mode: the namespace label istiod's injector selects, the
	// annotation it leaves on every pod it injected, and the container.
	istioInjectionLabel = "istio-injection"
	istioSidecarStatus  = "sidecar.istio.io/status"
	istioProxyContainer = "istio-proxy"
)

// Why Istio's Envoy-based parts do not run.
const (
	// EnvoyUnavailable is why Istio's sidecars and waypoints cannot run
	// where the nodes reach no registry: both are Envoy (proxyv2), which
	// cannot be built here either.
	EnvoyUnavailable = "Istio's sidecars and waypoints are Envoy (the proxyv2 image): no registry is reachable from these nodes and Envoy cannot be built here (--istio-proxy-image names one the nodes have)"
	// sidecarCertTTLReason: a sidecar's certificate lifetime is its own
	// pilot-agent's, set per pod, which the tool does not set: nothing
	// would run out within the trial.
	sidecarCertTTLReason = "the certificate lifetime of Istio's sidecars is pilot-agent's SECRET_TTL, set per pod (proxy.istio.io/config), which the tool does not set: no certificate would run out within the trial"
)

// IstioSkip says why a plan cannot run on Istio here ("" if it can, or
// it is not an Istio mode): a sidecar or a waypoint needs Envoy's image
// on the nodes (ist.NoEnvoy).
func IstioSkip(pl scenario.Plan, ist *Istio) string {
	if scenario.MeshOf(pl.Mode) != scenario.MeshIstio {
		return ""
	}
	envoy := pl.Mesh.Waypoint != nil || scenario.BaseMode(pl.Mode) == "sidecar"
	if envoy && ist != nil && ist.NoEnvoy != "" {
		return ist.NoEnvoy
	}
	if scenario.BaseMode(pl.Mode) == "sidecar" && pl.Mesh.CertTTL > 0 {
		return sidecarCertTTLReason
	}
	return ""
}

// istioTrialChecks are done before an Istio trial's load starts.
const (
	redirectTimeout = 90 * time.Second
	probeDuration   = 2 * time.Second
)

// istioCapabilities is what the Istio modes offer of the data plane's
// capabilities, each with its real mechanism.
func istioCapabilities(mode string, chaos bool) scenario.Capabilities {
	// istiod's faults, the same in both of Istio's modes.
	caps := scenario.Capabilities{
		scenario.CapCrashControlPlane: "Istio: delete of the istiod pod with grace period 0; its Deployment makes a new one",
		scenario.CapStopControlPlane:  "Istio: istiod scaled to 0 (its pod deleted with grace period 0), scaled back to 1 and waited for as Ready",
	}
	switch scenario.BaseMode(mode) {
	case "sidecar":
		caps[scenario.CapRestartAppPod] = "Istio: the pod deleted with its grace period (pilot-agent drains Envoy on SIGTERM); its Deployment's new pod, injected again by istiod, waited for as Ready"
		if chaos {
			caps[scenario.CapCrashSidecar] = "Istio: Chaos Mesh PodChaos container-kill of the pod's istio-proxy container (pilot-agent and Envoy); the kubelet restarts it"
		}
	case "ambient":
		caps[scenario.CapCrashNodeProxy] = "Istio: delete of the node's ztunnel pod with grace period 0 (SIGKILL); its DaemonSet makes a new one"
		caps[scenario.CapRestartNodeProxy] = "Istio: delete of the node's ztunnel pod with its grace period (SIGTERM, the old ztunnel drains); the DaemonSet's surge starts the new one at once, and istio-cni hands the node's pods to it"
		caps[scenario.CapRollNodeProxies] = "Istio: the ztunnel DaemonSet rolled (maxSurge 1, maxUnavailable 0): on each node the new ztunnel starts, istio-cni hands it the node's pods, and once it is Ready the old one gets SIGTERM and drains"
		caps[scenario.CapCrashNodeAgent] = "Istio: delete of the node's istio-cni pod with grace period 0; its DaemonSet makes a new one"
		caps[scenario.CapWaypoints] = "Istio: a waypoint (Envoy) istiod makes from a Gateway API Gateway of class istio-waypoint, in front of the service by its istio.io/use-waypoint label; a replica killed by deleting its pod with grace period 0 (its Deployment makes a new one); all stopped by scaling istiod's waypoint Deployment to 0 (each replica drains for its grace period), and back to the scenario's replicas"
	default:
		return scenario.Capabilities{}
	}
	return caps
}

// Unoffered implements scenario.Unoffered: in Istio's modes, whatever
// needs Envoy where the nodes cannot have it (waypoints, everything of
// sidecar mode), and a sidecar kill without Chaos Mesh (the API deletes
// whole pods only).
func (b *Backend) Unoffered(mode string) map[scenario.Capability]string {
	if scenario.MeshOf(mode) != scenario.MeshIstio {
		return nil
	}
	out := map[scenario.Capability]string{}
	noEnvoy := b.Istio != nil && b.Istio.NoEnvoy != ""
	if noEnvoy {
		out[scenario.CapWaypoints] = b.Istio.NoEnvoy
	}
	if scenario.BaseMode(mode) != "sidecar" {
		return out
	}
	if noEnvoy {
		for _, c := range []scenario.Capability{scenario.CapCrashControlPlane, scenario.CapStopControlPlane, scenario.CapCrashSidecar, scenario.CapRestartAppPod} {
			out[c] = b.Istio.NoEnvoy
		}
		return out
	}
	if b.Chaos == nil {
		out[scenario.CapCrashSidecar] = "killing one container of a pod needs Chaos Mesh (container-kill): the API deletes whole pods only, and pilot-agent, PID 1 of istio-proxy, cannot be SIGKILLed from inside"
	}
	return out
}

// istioDataPlane is Istio's mesh as faults see it.
type istioDataPlane struct {
	b       *Backend
	ns      string // Istio's namespace
	trialNS string // the trial's
	sidecar bool   // the istio-sidecar mode
	// waypoint is the trial's waypoint replicas (0: none).
	waypoint int
	real     map[string]string
	logf     func(string, ...any)
}

// istioChaosDataPlane adds what only Chaos Mesh can do: kill one
// container of a pod.
type istioChaosDataPlane struct {
	*istioDataPlane
	k     *kube.ChaosClient
	scope kube.ChaosScope
}

// CrashSidecar kills the istio-proxy container of a pod (a planned name);
// the kubelet restarts it.
func (c *istioChaosDataPlane) CrashSidecar(pod string) (time.Time, error) {
	ps, err := c.b.playing(c.trialNS, pod)
	if err != nil {
		return time.Time{}, err
	}
	return kill(c.k, kube.ContainerCrash(c.scope, ps[0].Name, istioProxyContainer))
}

func (d *istioDataPlane) Describe() string {
	if d.sidecar {
		return "Istio sidecars (istiod, istio-proxy) on Kubernetes"
	}
	return "Istio ambient (istiod, istio-cni, ztunnel) on Kubernetes"
}

// ControlPlanePod names istiod, placed on its node by the trial's infra.
func (d *istioDataPlane) ControlPlanePod() string { return istiodName }

// realNode maps a planned node name to the cluster's.
func (d *istioDataPlane) realNode(node string) (string, error) {
	n, ok := d.real[node]
	if !ok {
		return "", fmt.Errorf("no cluster node plays %s", node)
	}
	return n, nil
}

// podOn is the running (not deleting) pod of selector on a node ("" =
// any), the newest if several.
func (d *istioDataPlane) podOn(ctx context.Context, selector, node string) (corev1.Pod, error) {
	opts := metav1.ListOptions{LabelSelector: selector}
	if node != "" {
		opts.FieldSelector = "spec.nodeName=" + node
	}
	list, err := d.b.Client.CoreV1().Pods(d.ns).List(ctx, opts)
	if err != nil {
		return corev1.Pod{}, fmt.Errorf("list %s pods: %w", selector, err)
	}
	var best *corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || (node != "" && p.Spec.NodeName != node) {
			continue
		}
		if best == nil || p.CreationTimestamp.After(best.CreationTimestamp.Time) {
			best = p
		}
	}
	if best == nil {
		where := ""
		if node != "" {
			where = " on " + node
		}
		return corev1.Pod{}, fmt.Errorf("no running %s pod%s in %s", selector, where, d.ns)
	}
	return *best, nil
}

// kill deletes the pod of selector on the planned node with grace period
// 0.
func (d *istioDataPlane) kill(selector, node string) (time.Time, error) {
	real := ""
	if node != "" {
		var err error
		if real, err = d.realNode(node); err != nil {
			return time.Time{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := d.podOn(ctx, selector, real)
	if err != nil {
		return time.Time{}, err
	}
	zero := int64(0)
	at := time.Now()
	if err := d.b.Client.CoreV1().Pods(d.ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		return time.Time{}, fmt.Errorf("delete pod %s/%s: %w", d.ns, p.Name, err)
	}
	d.logf("istio: pod %s deleted (grace period 0)", p.Name)
	return at, nil
}

// CrashNodeProxy SIGKILLs the node's ztunnel.
func (d *istioDataPlane) CrashNodeProxy(node string) (time.Time, error) {
	return d.kill(ztunnelSelector, node)
}

// CrashNodeAgent SIGKILLs the node's istio-cni.
func (d *istioDataPlane) CrashNodeAgent(node string) (time.Time, error) {
	return d.kill(cniSelector, node)
}

// RestartNodeAgent waits for the DaemonSet's new istio-cni pod on the
// node to be Ready.
func (d *istioDataPlane) RestartNodeAgent(node string) (time.Time, error) {
	real, err := d.realNode(node)
	if err != nil {
		return time.Time{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := d.waitReady(ctx, cniSelector, real, "")
	if err != nil {
		return time.Time{}, err
	}
	d.logf("istio: istio-cni pod %s Ready on %s", p.Name, real)
	return time.Now(), nil
}

// waitReady waits for a Ready pod of selector on node other than the one
// with UID not.
func (d *istioDataPlane) waitReady(ctx context.Context, selector, node string, not types.UID) (corev1.Pod, error) {
	var found corev1.Pod
	var last string
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := d.b.Client.CoreV1().Pods(d.ns).List(ctx, metav1.ListOptions{LabelSelector: selector, FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, p := range list.Items {
			if p.UID != not && p.Spec.NodeName == node && p.DeletionTimestamp == nil && kube.PodReady(&p) {
				found = p
				return true, nil
			}
		}
		last = fmt.Sprintf("%d pods, none new and Ready", len(list.Items))
		return false, nil
	})
	if err != nil {
		return corev1.Pod{}, fmt.Errorf("no new Ready %s pod on %s (%s): %w", selector, node, last, err)
	}
	return found, nil
}

// RestartNodeProxy restarts the node's ztunnel as Kubernetes does on an
// upgrade: the pod is deleted with its own grace period, so the old
// ztunnel gets SIGTERM and drains; the DaemonSet (maxSurge 1) starts the
// new one at once, and istio-cni hands the node's pods to it. ready is
// when the new pod is Ready; done closes when the old pod is gone.
func (d *istioDataPlane) RestartNodeProxy(ctx context.Context, node string) (started, ready, stopped time.Time, done <-chan struct{}, err error) {
	real, err := d.realNode(node)
	if err != nil {
		return
	}
	old, err := d.podOn(ctx, ztunnelSelector, real)
	if err != nil {
		return
	}
	started = time.Now()
	if err = d.b.Client.CoreV1().Pods(d.ns).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		err = fmt.Errorf("delete pod %s/%s: %w", d.ns, old.Name, err)
		return
	}
	stopped = started // SIGTERM: the old ztunnel stops taking new pods and drains
	grace := int64(30)
	if old.Spec.TerminationGracePeriodSeconds != nil {
		grace = *old.Spec.TerminationGracePeriodSeconds
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		// The kubelet SIGKILLs at the grace period: the pod is gone soon
		// after; the margin covers the kubelet's and the API's latency.
		gctx, cancel := context.WithTimeout(context.Background(), time.Duration(grace)*time.Second+time.Minute)
		defer cancel()
		_ = wait.PollUntilContextCancel(gctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			p, err := d.b.Client.CoreV1().Pods(d.ns).Get(ctx, old.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err) || (err == nil && p.UID != old.UID), nil
		})
	}()
	done = ch
	np, werr := d.waitReady(ctx, ztunnelSelector, real, old.UID)
	if werr != nil {
		err = werr
		return
	}
	ready = time.Now()
	d.logf("istio: ztunnel %s SIGTERMed on %s; new ztunnel %s Ready after %s", old.Name, real, np.Name, ready.Sub(started).Round(time.Millisecond))
	return
}

// CrashControlPlane SIGKILLs istiod.
func (d *istioDataPlane) CrashControlPlane() (time.Time, error) { return d.kill(istiodSelector, "") }

func (d *istioDataPlane) scaleIstiod(ctx context.Context, n int32) error {
	return patchReplicas(ctx, d.b.Client, d.ns, istiodName, n)
}

// patchReplicas sets an Istio Deployment's replicas with a merge patch on
// the object (istiod's, and the waypoint's istiod made), as the tool's
// field manager.
func patchReplicas(ctx context.Context, cs kubernetes.Interface, ns, name string, n int32) error {
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	_, err := cs.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "blastradius"})
	if err != nil {
		return fmt.Errorf("scale deployment %s/%s to %d: %w", ns, name, n, err)
	}
	return nil
}

// StopControlPlane holds istiod down: scaled to 0, its pod deleted with
// grace period 0 (a scale-down alone would let it drain for its grace
// period).
func (d *istioDataPlane) StopControlPlane() (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.scaleIstiod(ctx, 0); err != nil {
		return time.Time{}, err
	}
	at := time.Now()
	zero := int64(0)
	list, err := d.b.Client.CoreV1().Pods(d.ns).List(ctx, metav1.ListOptions{LabelSelector: istiodSelector})
	if err != nil {
		return time.Time{}, fmt.Errorf("list istiod pods: %w", err)
	}
	var names []string
	for _, p := range list.Items {
		err := d.b.Client.CoreV1().Pods(d.ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			return time.Time{}, fmt.Errorf("delete pod %s/%s: %w", d.ns, p.Name, err)
		}
		names = append(names, p.Name)
	}
	d.logf("istio: istiod scaled to 0 (%s deleted with grace period 0)", strings.Join(names, ", "))
	return at, nil
}

// StartControlPlane scales istiod back to 1 and waits until it is Ready.
func (d *istioDataPlane) StartControlPlane(ctx context.Context) (time.Time, error) {
	if err := d.scaleIstiod(ctx, 1); err != nil {
		return time.Time{}, err
	}
	var last string
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := d.podOn(ctx, istiodSelector, "")
		if err == nil && kube.PodReady(&p) {
			return true, nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = "pod " + p.Name + " not Ready"
		}
		return false, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("istiod not Ready again (%s): %w", last, err)
	}
	d.logf("istio: istiod Ready again")
	return time.Now(), nil
}

// CertExpiries would need each ztunnel's certificates; ztunnel's
// config dump has them, but is not read yet here.
func (d *istioDataPlane) CertExpiries(ctx context.Context) (map[string]time.Time, error) {
	return nil, errors.New("certificate expiries are not read from ztunnel")
}

// istioNamespaceLabels enrol a trial's namespace in Istio's mode: ambient
// (istio-cni redirects its pods to ztunnel), or sidecar (istiod's webhook
// injects istio-proxy into its pods).
func istioNamespaceLabels(mode string) map[string]string {
	if scenario.BaseMode(mode) == "sidecar" {
		return map[string]string{istioInjectionLabel: "enabled"}
	}
	return map[string]string{istioDataplaneLabel: "ambient"}
}

// waitInjected waits until every pod of the trial's namespace runs the
// sidecar istiod injected (its status annotation, and an istio-proxy
// container that is ready), or says which do not.
func (b *Backend) waitInjected(ctx context.Context, ns string, timeout time.Duration) (int, error) {
	return b.waitEveryPod(ctx, ns, timeout, func(p corev1.Pod) bool {
		return p.Annotations[istioSidecarStatus] != "" && containerReady(p, istioProxyContainer)
	}, fmt.Sprintf("pods without a ready %s sidecar within %s (injected by istiod: the %s annotation)", istioProxyContainer, timeout, istioSidecarStatus))
}

// containerReady says whether the pod's container of that name is ready.
func containerReady(p corev1.Pod, name string) bool {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return cs.Ready
		}
	}
	return false
}

// RestartAppPod restarts a pod of the trial as a sidecar upgrade does
// (kubectl rollout restart): the pod is deleted with its grace period, so
// pilot-agent drains Envoy; stopped is when it is gone, ready when its
// Deployment's new pod, injected again, is Ready.
func (d *istioDataPlane) RestartAppPod(ctx context.Context, pod string) (stopped, ready time.Time, err error) {
	ps, err := d.b.playing(d.trialNS, pod)
	if err != nil {
		return stopped, ready, err
	}
	old := ps[0]
	if err := d.b.Client.CoreV1().Pods(d.trialNS).Delete(ctx, old.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &old.UID}}); err != nil {
		return stopped, ready, fmt.Errorf("delete pod %s: %w", old.Name, err)
	}
	d.logf("istio: pod %s deleted with its grace period", old.Name)
	var p corev1.Pod
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := d.b.Client.CoreV1().Pods(d.trialNS).List(ctx, metav1.ListOptions{LabelSelector: manifests.LabelPod + "=" + old.Labels[manifests.LabelPod]})
		if err != nil {
			return false, nil
		}
		gone := true
		for _, q := range list.Items {
			switch {
			case q.UID == old.UID:
				gone = false
			case stopped.IsZero():
			case q.DeletionTimestamp == nil && kube.PodReady(&q) && q.Annotations[istioSidecarStatus] != "":
				p = q
			}
		}
		if gone && stopped.IsZero() {
			stopped = time.Now()
		}
		return !stopped.IsZero() && p.Name != "", nil
	})
	if err != nil {
		if stopped.IsZero() {
			return stopped, ready, fmt.Errorf("pod %s not gone: %w", old.Name, err)
		}
		return stopped, ready, fmt.Errorf("no new Ready pod for %s with its sidecar: %w", pod, err)
	}
	d.logf("istio: pod %s Ready in place of %s", p.Name, old.Name)
	return stopped, time.Now(), nil
}

// waitRedirected waits until istio-cni has redirected every pod of the
// trial's namespace (its annotation on each), or says which are not.
func (b *Backend) waitRedirected(ctx context.Context, ns string, timeout time.Duration) (int, error) {
	return b.waitEveryPod(ctx, ns, timeout, func(p corev1.Pod) bool {
		return p.Annotations[istioRedirection] == istioRedirectionValue
	}, fmt.Sprintf("pods not redirected by istio-cni within %s (no %s: %s annotation)", timeout, istioRedirection, istioRedirectionValue))
}

// waitEveryPod waits until every running pod of the trial's namespace is
// ok by Istio (at least one), and returns how many; the error is what
// followed by the first few that are not.
func (b *Backend) waitEveryPod(ctx context.Context, ns string, timeout time.Duration, ok func(corev1.Pod) bool, what string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var pending []string
	n := 0
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		list, err := b.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: manifests.LabelPartOf + "=blastradius"})
		if err != nil {
			pending = []string{err.Error()}
			return false, nil
		}
		pending, n = nil, 0
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
				continue
			}
			if !ok(p) {
				pending = append(pending, p.Name)
				continue
			}
			n++
		}
		return len(pending) == 0 && n > 0, nil
	})
	if err != nil {
		if len(pending) > 4 {
			pending = append(pending[:4], fmt.Sprintf("and %d more", len(pending)-4))
		}
		return n, fmt.Errorf("%s: %s", what, strings.Join(pending, ", "))
	}
	return n, nil
}

// hboneMetrics are the counters of HBONE streams a node proxy opened, as
// the tool's stand-in and upstream ztunnel name them.
var hboneMetrics = []struct {
	name   string
	labels map[string]string
}{
	{"hbone_streams_total", map[string]string{"direction": "outbound"}},
	{"istio_tcp_connections_opened_total", map[string]string{"reporter": "source", "security_policy": "mutual_tls"}},
}

// hboneStreams reads one ztunnel's count of HBONE streams it opened, and
// the metric it came from.
func hboneStreams(text []byte) (float64, string, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return 0, "", fmt.Errorf("metrics: %v", oneline.Lines(err.Error()))
	}
	for _, m := range hboneMetrics {
		f, ok := fams[m.name]
		if !ok {
			continue
		}
		sum := 0.0
	metric:
		for _, s := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range s.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range m.labels {
				if have[k] != v {
					continue metric
				}
			}
			sum += s.GetCounter().GetValue()
		}
		return sum, m.name, nil
	}
	return 0, "", fmt.Errorf("no HBONE counter among the metrics (want %s or %s)", hboneMetrics[0].name, hboneMetrics[1].name)
}

// hboneByNode reads every ztunnel's HBONE counter, by planned node.
func (b *Backend) hboneByNode(ctx context.Context, istioNS string, planned map[string]string) (map[string]float64, string, error) {
	if b.Admin == nil {
		return nil, "", errors.New("no way to read ztunnel's metrics (pods/proxy)")
	}
	list, err := b.Client.CoreV1().Pods(istioNS).List(ctx, metav1.ListOptions{LabelSelector: ztunnelSelector})
	if err != nil {
		return nil, "", fmt.Errorf("list ztunnel pods: %w", err)
	}
	out := map[string]float64{}
	metric := ""
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	for _, p := range list.Items {
		node, ok := planned[p.Spec.NodeName]
		if !ok || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := b.Admin(ctx, istioNS, p.Name, ztunnelStatsPort, "/metrics")
			var v float64
			var name string
			if err == nil {
				v, name, err = hboneStreams(body)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s (%s): %v", p.Name, node, oneline.Fold(err.Error(), 200)))
				return
			}
			out[node] += v
			metric = name
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		sort.Strings(errs)
		return out, metric, errors.New(strings.Join(errs, "; "))
	}
	return out, metric, nil
}

// diffStreams is after - before, by node.
func diffStreams(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for _, n := range slices.Sorted(maps.Keys(after)) {
		out[n] = after[n] - before[n]
	}
	return out
}

// istioProbe runs every flow of the plan at a low rate for probeDuration
// from its client pod and reads the node proxies' HBONE counters before
// and after: a trial starts only once traffic has crossed HBONE from the
// node of every client. It returns the counters after the probe. The
// probe's events go to the client pods' /tmp, never where the trial's do.
func (b *Backend) istioProbe(ctx context.Context, t *scenario.TrialRun, ns string, topo results.Topology, pl *placed, mesh *results.MeshEvidence) (map[string]float64, error) {
	before, _, err := b.hboneByNode(ctx, b.Istio.Namespace, pl.planned)
	if err != nil {
		return nil, fmt.Errorf("istio: HBONE counters: %w", err)
	}
	byClient, err := t.ProbeFlows(topo, func(id string) string { return "/tmp/blastradius-probe-" + id + ".jsonl" })
	if err != nil {
		return nil, err
	}
	clientNodes := map[string]bool{}
	for _, p := range topo.Pods {
		if _, ok := byClient[p.Name]; ok {
			clientNodes[p.Node] = true
		}
	}
	pctx, cancel := context.WithTimeout(ctx, probeDuration+30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	flows := 0
	for c, fl := range byClient {
		p, ok := pl.pods[c]
		if !ok {
			return nil, fmt.Errorf("istio probe: no running pod plays %s", c)
		}
		flows += len(fl)
		cmd := append([]string{manifests.Binary}, scenario.ProbeArgs(probeDuration, fl)...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			err := b.Exec.Exec(pctx, ns, p.Name, containerOf(p), cmd, &out, &out)
			// The probe agent's own account is kept with the trial's logs.
			_ = os.WriteFile(filepath.Join(t.Dir, "logs", c+".probe.log"), out.Bytes(), 0o644)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s: %v %s", c, err, oneline.Fold(out.String(), 200)))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("istio probe: %s", strings.Join(errs, "; "))
	}
	after, metric, err := b.hboneByNode(ctx, b.Istio.Namespace, pl.planned)
	if err != nil {
		return nil, fmt.Errorf("istio: HBONE counters after the probe: %w", err)
	}
	probe := diffStreams(before, after)
	mesh.ProbeStreams, mesh.Metric = probe, metric
	var missing []string
	for _, n := range slices.Sorted(maps.Keys(clientNodes)) {
		if probe[n] <= 0 {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("istio: the pods are redirected, but no traffic crossed HBONE from %s during a %s probe of every flow (%s: %s)",
			strings.Join(missing, ", "), probeDuration, metric, streamsLine(probe))
	}
	t.Logf("istio: a %s probe of %d flows crossed HBONE (%s): %s", probeDuration, flows, metric, streamsLine(probe))
	return after, nil
}

// streamsLine prints HBONE stream counts by node.
func streamsLine(by map[string]float64) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", n, by[n]))
	}
	if len(parts) == 0 {
		return "no ztunnel read"
	}
	return strings.Join(parts, ", ")
}

// ztunnel's environment a trial may set for itself: its workload
// certificate lifetime (what it asks istiod for) and its drain deadline
// on SIGTERM.
const (
	envSecretTTL     = "SECRET_TTL"
	envDrainDeadline = "CONNECTION_TERMINATION_DEADLINE"
)

// ztunnelTrialEnv is what a trial sets in ztunnel's environment: the
// scenario's certificate lifetime (cert-expiry: certificates must run
// out within the trial; istiod issues what is asked up to its
// MAX_WORKLOAD_CERT_TTL) and its drain deadline (the reference proxies
// get the same scenario value as --drain-deadline, so a restart or roll
// drains alike on both meshes, and within the trial's window: the chart's
// grace period would make it 25 s). Unset: ztunnel's defaults (24 h, the
// grace period less 5 s).
func ztunnelTrialEnv(pl scenario.Plan) map[string]string {
	env := map[string]string{envSecretTTL: "", envDrainDeadline: ""}
	if pl.Mesh.CertTTL > 0 {
		env[envSecretTTL] = pl.Mesh.CertTTL.String()
	}
	if pl.Mesh.Drain > 0 {
		env[envDrainDeadline] = pl.Mesh.Drain.String()
	}
	return env
}

// ztunnelEnv sets environment variables of the ztunnel DaemonSet's
// containers ("" removes one) and, if that changed anything, waits for
// the DaemonSet's roll.
func (b *Backend) ztunnelEnv(ctx context.Context, ns string, want map[string]string, logf func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	ds, err := b.Client.AppsV1().DaemonSets(ns).Get(ctx, ztunnelName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("ztunnel DaemonSet: %w", err)
	}
	changed := false
	for i := range ds.Spec.Template.Spec.Containers {
		c := &ds.Spec.Template.Spec.Containers[i]
		var env []corev1.EnvVar
		have := map[string]string{}
		for _, e := range c.Env {
			if _, ok := want[e.Name]; ok {
				have[e.Name] = e.Value
				continue
			}
			env = append(env, e)
		}
		for _, name := range slices.Sorted(maps.Keys(want)) {
			if want[name] != "" {
				env = append(env, corev1.EnvVar{Name: name, Value: want[name]})
			}
			if have[name] != want[name] {
				changed = true
			}
		}
		c.Env = env
	}
	if !changed {
		return nil
	}
	var what []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		v := want[name]
		if v == "" {
			v = "ztunnel's default"
		}
		what = append(what, name+" "+v)
	}
	logf("istio: ztunnel %s; rolling the ztunnel DaemonSet", strings.Join(what, ", "))
	t0 := time.Now()
	if _, err := b.Client.AppsV1().DaemonSets(ns).Update(ctx, ds, metav1.UpdateOptions{FieldManager: "blastradius"}); err != nil {
		return fmt.Errorf("ztunnel DaemonSet: %w", err)
	}
	if err := b.waitDaemonSetRolled(ctx, ns, ztunnelName); err != nil {
		return err
	}
	logf("istio: ztunnel DaemonSet rolled in %s", time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// waitDaemonSetRolled waits until every pod of a DaemonSet runs its
// current template and is available, and no old pod is left.
func (b *Backend) waitDaemonSetRolled(ctx context.Context, ns, name string) error {
	var last string
	err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		ds, err := b.Client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		st := ds.Status
		last = fmt.Sprintf("%d/%d updated, %d available, %d scheduled", st.UpdatedNumberScheduled, st.DesiredNumberScheduled, st.NumberAvailable, st.CurrentNumberScheduled)
		return st.ObservedGeneration >= ds.Generation && st.DesiredNumberScheduled > 0 &&
			st.UpdatedNumberScheduled == st.DesiredNumberScheduled && st.NumberAvailable == st.DesiredNumberScheduled &&
			st.CurrentNumberScheduled == st.DesiredNumberScheduled, nil
	})
	if err != nil {
		why := kube.PodProblems(ctx, b.Client, ns)
		return fmt.Errorf("DaemonSet %s/%s not rolled out (%s) %s: %w", ns, name, last, why, err)
	}
	return nil
}

// istioHeal brings Istio back to what every trial starts from, and waits
// for it: istiod at one replica and available, istio-cni and ztunnel with
// a Ready pod on every node. Istio is installed once for the run, so what
// a trial's fault left (istiod held down past the window, a ztunnel still
// coming back) must not leak into the next trial.
func (b *Backend) istioHeal(ctx context.Context, logf func(string, ...any)) error {
	ns := b.Istio.Namespace
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	dep, err := b.Client.AppsV1().Deployments(ns).Get(ctx, istiodName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("istio: istiod Deployment: %w", err)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 1 {
		logf("istio: istiod scaled back to 1")
		d := &istioDataPlane{b: b, ns: ns, logf: logf}
		if err := d.scaleIstiod(ctx, 1); err != nil {
			return err
		}
	}
	var last string
	err = wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var pending []string
		d, err := b.Client.AppsV1().Deployments(ns).Get(ctx, istiodName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.AvailableReplicas < 1 || d.Status.UpdatedReplicas < 1 {
			pending = append(pending, fmt.Sprintf("istiod (%d available)", d.Status.AvailableReplicas))
		}
		for _, name := range []string{"istio-cni-node", ztunnelName} {
			ds, err := b.Client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false, nil
			}
			st := ds.Status
			if st.ObservedGeneration < ds.Generation || st.DesiredNumberScheduled == 0 || st.NumberReady < st.DesiredNumberScheduled ||
				st.UpdatedNumberScheduled < st.DesiredNumberScheduled {
				pending = append(pending, fmt.Sprintf("%s (%d/%d ready)", name, st.NumberReady, st.DesiredNumberScheduled))
			}
		}
		last = strings.Join(pending, ", ")
		return len(pending) == 0, nil
	})
	if err != nil {
		why := kube.PodProblems(ctx, b.Client, ns)
		return fmt.Errorf("istio not ready again after the trial (%s) %s: %w", last, why, err)
	}
	if d := time.Since(t0); d > time.Second {
		logf("istio: ready again in %s", d.Round(100*time.Millisecond))
	}
	return nil
}

// istioTrialSetup readies Istio for a trial and returns what gives it back
// after. Istio is shared by the run's trials: each starts from it whole
// and leaves it whole (istioHeal: istiod up again after a control-plane
// outage). In ambient mode the ztunnels get the trial's environment
// (ztunnelTrialEnv: certificate lifetime, drain deadline) before it, and
// their defaults back after (once istiod is up again, which the new
// ztunnels need to become ready).
func (b *Backend) istioTrialSetup(ctx context.Context, t *scenario.TrialRun) (func(), error) {
	if err := b.istioHeal(ctx, t.Logf); err != nil {
		return nil, err
	}
	// ztunnel's environment is the trial's in ambient mode only: sidecars
	// do not use ztunnel.
	ambient := scenario.BaseMode(t.Mode) == "ambient"
	if ambient {
		if err := b.ztunnelEnv(ctx, b.Istio.Namespace, ztunnelTrialEnv(t.Plan), t.Logf); err != nil {
			return nil, err
		}
	}
	return func() {
		ctx := context.WithoutCancel(ctx)
		if err := b.istioHeal(ctx, t.Logf); err != nil {
			t.Logf("clean-up: %v", err)
		}
		if ambient {
			if err := b.ztunnelEnv(ctx, b.Istio.Namespace, ztunnelTrialEnv(scenario.Plan{}), t.Logf); err != nil {
				t.Logf("clean-up: %v", err)
			}
		}
	}, nil
}
