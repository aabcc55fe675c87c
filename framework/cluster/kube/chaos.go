package kube

// Faults on Kubernetes as Chaos Mesh objects (PodChaos, NetworkChaos),
// created with a controller-runtime client over a scheme that knows the
// chaos-mesh api types. The instants a fault was injected and recovered are
// read from the objects' status records, which Chaos Mesh's controller writes
// the moment it acts, not from this process's clock: the API round trips
// around the create would otherwise be counted as part of the fault.
// docs/chaos-mesh.md maps every fault to its object.

import (
	"context"
	"fmt"
	"hash/fnv"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/chaos-mesh/chaos-mesh/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/internal/oneline"
)

// Chaos Mesh as users install it for these objects (docs/chaos-mesh.md):
// the Helm repository and the chart version pinned against the chaos-mesh
// api module in go.mod, so the CRDs the cluster serves have every field the
// constructors below set.
const (
	ChaosMeshHelmRepo     = "https://charts.chaos-mesh.org"
	ChaosMeshChartVersion = "2.8.2"
)

// Labels and annotations every chaos object blastradius creates carries.
// CleanUp finds its objects by LabelChaosManagedBy, so a run killed half-way
// leaves nothing the next run cannot remove.
const (
	LabelChaosManagedBy = "app.kubernetes.io/managed-by"
	ChaosManagedBy      = "blastradius"
	// LabelChaosTrial is the trial the object belongs to (its folder name,
	// made a valid label value).
	LabelChaosTrial = "blastradius.dev/trial"
	// LabelChaosFault is the fault catalogue's kind name; FaultRecord reads
	// it back so the record names the fault the way the embedded provider
	// does.
	LabelChaosFault = "blastradius.dev/fault"
	// AnnotationChaosTarget is the record's target ("node-3",
	// "node-2<->node-3", a pod name): free text, so an annotation.
	AnnotationChaosTarget = "blastradius.dev/target"
)

// The fault kinds each object plays, named as the catalogue names them
// (framework/scenario); pod-failure of one pod has no catalogue fault.
const (
	faultNodeProxyCrash    = scenario.FaultNodeProxyCrash
	faultNodeAgentCrash    = scenario.FaultNodeAgentCrash
	faultControlPlaneCrash = scenario.FaultControlPlaneCrash
	faultControlPlaneDown  = scenario.FaultControlPlaneDown
	faultWaypointKill      = scenario.FaultWaypointKill
	faultSidecarCrash      = scenario.FaultSidecarCrash
	faultPartition         = scenario.FaultPartition
	faultPodFailure        = "pod-failure"
)

// Pod labels and container names of the reference data plane as manifests/
// deploys it. The chaos selectors use them; a test checks they still match
// the embedded manifests.
var (
	NodeProxyPodLabels    = map[string]string{"app.kubernetes.io/part-of": "blastradius", "app.kubernetes.io/component": "node-proxy"}
	ControlPlanePodLabels = map[string]string{"app.kubernetes.io/part-of": "blastradius", "app.kubernetes.io/component": "controlplane"}
	WaypointPodLabels     = map[string]string{"app.kubernetes.io/part-of": "blastradius", "app.kubernetes.io/component": "waypoint"}
)

const (
	// SidecarContainer is the proxy container sidecar mode adds to a pod.
	SidecarContainer = "proxy"
	// NodeAgentContainer is the node agent beside the node proxy.
	NodeAgentContainer = "node-agent"
)

// ChaosScope says which trial a chaos object belongs to and where the pods
// it aims at live.
type ChaosScope struct {
	// Trial is the trial's name (its results folder,
	// "03-node-proxy-crash-ambient"); object names and labels derive from it.
	Trial string
	// Namespace is the trial's namespace: the chaos object is created there
	// and application pods are selected there.
	Namespace string
	// DataPlaneNamespace holds the node proxies, waypoints and control
	// plane; empty means Namespace (the reference data plane lives with the
	// trial, Istio's in its own namespace).
	DataPlaneNamespace string
}

func (s ChaosScope) dataPlane() string {
	if s.DataPlaneNamespace != "" {
		return s.DataPlaneNamespace
	}
	return s.Namespace
}

// namespaces lists the trial's and the data plane's namespaces once each.
func (s ChaosScope) namespaces() []string {
	if dp := s.dataPlane(); dp != s.Namespace {
		return []string{s.Namespace, dp}
	}
	return []string{s.Namespace}
}

// meta builds the object metadata: a name derived from the trial and the
// object's purpose, and the labels CleanUp and FaultRecord rely on.
func (s ChaosScope) meta(fault, target, what string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      ChaosName(s.Trial, what),
		Namespace: s.Namespace,
		Labels: map[string]string{
			LabelChaosManagedBy: ChaosManagedBy,
			LabelChaosTrial:     dnsLabel(s.Trial, 63),
			LabelChaosFault:     fault,
		},
		Annotations: map[string]string{AnnotationChaosTarget: target},
	}
}

// ChaosName is "br-<trial>-<what>" as a DNS-1123 label: at most 63
// characters, so the name is also usable as a label value. A name cut to fit
// ends in a hash of the whole so two long names stay distinct.
func ChaosName(trial, what string) string {
	return dnsLabel("br-"+trial+"-"+what, 63)
}

// dnsLabel lowercases s, turns every run of characters a DNS-1123 label may
// not hold into one '-', and cuts it to max with a hash suffix.
func dnsLabel(s string, max int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > max {
		h := fnv.New32a()
		h.Write([]byte(s))
		out = strings.TrimRight(out[:max-9], "-") + fmt.Sprintf("-%08x", h.Sum32())
	}
	if out == "" {
		out = "x"
	}
	return out
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// podKill is a PodChaos pod-kill of one pod the selector picks. Grace period
// 0: the pod is deleted at once, the nearest Kubernetes has to a crash (no
// SIGTERM drain the embedded provider's SIGKILL would not allow either).
func podKill(meta metav1.ObjectMeta, sel v1alpha1.PodSelectorSpec) *v1alpha1.PodChaos {
	return &v1alpha1.PodChaos{
		ObjectMeta: meta,
		Spec: v1alpha1.PodChaosSpec{
			Action:            v1alpha1.PodKillAction,
			ContainerSelector: v1alpha1.ContainerSelector{PodSelector: v1alpha1.PodSelector{Selector: sel, Mode: v1alpha1.OneMode}},
		},
	}
}

// NodeProxyCrash kills the node proxy pod on node (pod-kill); its DaemonSet
// brings a new one up.
func NodeProxyCrash(s ChaosScope, node string) *v1alpha1.PodChaos {
	return podKill(s.meta(faultNodeProxyCrash, node, "node-proxy-kill-"+node), v1alpha1.PodSelectorSpec{
		GenericSelectorSpec: v1alpha1.GenericSelectorSpec{Namespaces: []string{s.dataPlane()}, LabelSelectors: copyLabels(NodeProxyPodLabels)},
		Nodes:               []string{node},
	})
}

// NodeAgentCrash kills the node agent container in the node proxy pod on
// node (container-kill); the kubelet restarts it in the same pod.
func NodeAgentCrash(s ChaosScope, node string) *v1alpha1.PodChaos {
	o := podKill(s.meta(faultNodeAgentCrash, node, "node-agent-kill-"+node), v1alpha1.PodSelectorSpec{
		GenericSelectorSpec: v1alpha1.GenericSelectorSpec{Namespaces: []string{s.dataPlane()}, LabelSelectors: copyLabels(NodeProxyPodLabels)},
		Nodes:               []string{node},
	})
	o.Spec.Action = v1alpha1.ContainerKillAction
	o.Spec.ContainerNames = []string{NodeAgentContainer}
	return o
}

// ControlPlaneCrash kills the control plane pod (pod-kill); its Deployment
// replaces it.
func ControlPlaneCrash(s ChaosScope) *v1alpha1.PodChaos {
	return podKill(s.meta(faultControlPlaneCrash, "controlplane", "controlplane-kill"), v1alpha1.PodSelectorSpec{
		GenericSelectorSpec: v1alpha1.GenericSelectorSpec{Namespaces: []string{s.dataPlane()}, LabelSelectors: copyLabels(ControlPlanePodLabels)},
	})
}

// WaypointReplicaKill kills one waypoint replica (pod-kill): the named pod,
// or with pod empty whichever replica Chaos Mesh picks.
func WaypointReplicaKill(s ChaosScope, pod string) *v1alpha1.PodChaos {
	sel := v1alpha1.PodSelectorSpec{GenericSelectorSpec: v1alpha1.GenericSelectorSpec{Namespaces: []string{s.dataPlane()}, LabelSelectors: copyLabels(WaypointPodLabels)}}
	target, what := "waypoint", "waypoint-kill"
	if pod != "" {
		// Pods alone selects the replica; the labels still guard against a
		// name that is not a waypoint.
		sel.Pods = map[string][]string{s.dataPlane(): {pod}}
		target, what = pod, "waypoint-kill-"+pod
	}
	return podKill(s.meta(faultWaypointKill, target, what), sel)
}

// SidecarCrash kills the sidecar proxy container of one pod
// (container-kill); the kubelet restarts it in place, as the embedded
// provider's supervisor does.
func SidecarCrash(s ChaosScope, pod string) *v1alpha1.PodChaos {
	return ContainerCrash(s, pod, SidecarContainer)
}

// ContainerCrash kills one container of a pod (container-kill), as a
// sidecar crash: the kubelet restarts it.
func ContainerCrash(s ChaosScope, pod, container string) *v1alpha1.PodChaos {
	o := podKill(s.meta(faultSidecarCrash, pod, "sidecar-kill-"+pod), v1alpha1.PodSelectorSpec{
		GenericSelectorSpec: v1alpha1.GenericSelectorSpec{Namespaces: []string{s.Namespace}},
		Pods:                map[string][]string{s.Namespace: {pod}},
	})
	o.Spec.Action = v1alpha1.ContainerKillAction
	o.Spec.ContainerNames = []string{container}
	return o
}

// PodFailure makes one pod fail for d (pod-failure: Chaos Mesh swaps its
// containers' images for a pause image, so the pod stays scheduled but
// serves nothing, then restores them). fault is the catalogue kind it plays;
// empty means "pod-failure".
func PodFailure(s ChaosScope, fault, pod string, d time.Duration) *v1alpha1.PodChaos {
	if fault == "" {
		fault = faultPodFailure
	}
	return &v1alpha1.PodChaos{
		ObjectMeta: s.meta(fault, pod, "pod-failure-"+pod),
		Spec: v1alpha1.PodChaosSpec{
			Action: v1alpha1.PodFailureAction,
			ContainerSelector: v1alpha1.ContainerSelector{PodSelector: v1alpha1.PodSelector{
				Selector: v1alpha1.PodSelectorSpec{
					GenericSelectorSpec: v1alpha1.GenericSelectorSpec{Namespaces: []string{s.Namespace}},
					Pods:                map[string][]string{s.Namespace: {pod}},
				},
				Mode: v1alpha1.OneMode,
			}},
			Duration: duration(d),
		},
	}
}

// ControlPlaneDown makes every control plane pod fail for d (pod-failure,
// mode all): the control plane is down, not restarted, as in the
// controlplane-down fault.
func ControlPlaneDown(s ChaosScope, d time.Duration) *v1alpha1.PodChaos {
	return &v1alpha1.PodChaos{
		ObjectMeta: s.meta(faultControlPlaneDown, "controlplane", "controlplane-down"),
		Spec: v1alpha1.PodChaosSpec{
			Action: v1alpha1.PodFailureAction,
			ContainerSelector: v1alpha1.ContainerSelector{PodSelector: v1alpha1.PodSelector{
				Selector: v1alpha1.PodSelectorSpec{GenericSelectorSpec: v1alpha1.GenericSelectorSpec{
					Namespaces: []string{s.dataPlane()}, LabelSelectors: copyLabels(ControlPlanePodLabels)}},
				Mode: v1alpha1.AllMode,
			}},
			Duration: duration(d),
		},
	}
}

// NodePartition cuts every pod of the trial (and data plane) on node a off
// from every such pod on node b, both ways (NetworkChaos partition, direction
// both), for d; d <= 0 holds it until Recover. Chaos Mesh installs the drops
// in each selected pod's network namespace, so node-to-node traffic outside
// pods (kubelet, API server) is untouched, unlike the embedded provider's
// node-level drops; pods with hostNetwork cannot be selected.
func NodePartition(s ChaosScope, a, b string, d time.Duration) *v1alpha1.NetworkChaos {
	side := func(node string) v1alpha1.PodSelector {
		return v1alpha1.PodSelector{
			Selector: v1alpha1.PodSelectorSpec{GenericSelectorSpec: v1alpha1.GenericSelectorSpec{Namespaces: s.namespaces()}, Nodes: []string{node}},
			Mode:     v1alpha1.AllMode,
		}
	}
	target := side(b)
	return &v1alpha1.NetworkChaos{
		ObjectMeta: s.meta(faultPartition, a+"<->"+b, "partition-"+a+"-"+b),
		Spec: v1alpha1.NetworkChaosSpec{
			PodSelector: side(a),
			Action:      v1alpha1.PartitionAction,
			Direction:   v1alpha1.Both,
			Target:      &target,
			Duration:    duration(d),
			// PartitionBehavior stays unset: drop (a black hole, as the
			// embedded partition) is Chaos Mesh's default, and released
			// charts whose CRD predates the field would reject it.
		},
	}
}

// duration is Chaos Mesh's duration string, nil for "until recovered".
func duration(d time.Duration) *string {
	if d <= 0 {
		return nil
	}
	s := d.String()
	return &s
}

// Chaos is a Chaos Mesh experiment object: PodChaos or NetworkChaos here.
type Chaos interface {
	client.Object
	GetStatus() *v1alpha1.ChaosStatus
	IsOneShot() bool
	Validate() ([]string, error)
}

// ChaosRef names an object for messages: "PodChaos ns/name".
func ChaosRef(obj Chaos) string {
	return chaosKind(obj) + " " + obj.GetNamespace() + "/" + obj.GetName()
}

func chaosKind(obj Chaos) string {
	if k := obj.GetObjectKind().GroupVersionKind().Kind; k != "" {
		return k
	}
	return reflect.TypeOf(obj).Elem().Name()
}

// ValidateChaos runs the chaos-mesh api's own validation (what its admission
// webhook would say) and the checks it leaves out but a fault needs, so a
// bad object fails before anything is created.
func ValidateChaos(obj Chaos) error {
	var problems []string
	if _, err := obj.Validate(); err != nil {
		problems = append(problems, oneline.Fold(err.Error(), 0))
	}
	if obj.GetName() == "" || len(obj.GetName()) > 63 {
		problems = append(problems, "name must be 1 to 63 characters")
	}
	if obj.GetNamespace() == "" {
		problems = append(problems, "no namespace")
	}
	switch o := obj.(type) {
	case *v1alpha1.PodChaos:
		sel := o.Spec.Selector
		if len(sel.Namespaces) == 0 || sel.Namespaces[0] == "" {
			// Chaos Mesh would default to the object's namespace; a fault
			// always says where its pods are.
			problems = append(problems, "selector names no namespace")
		}
		for ns, pods := range sel.Pods {
			for _, p := range pods {
				if ns == "" || p == "" {
					problems = append(problems, "selector has an empty pod name")
				}
			}
		}
		for _, n := range sel.Nodes {
			if n == "" {
				problems = append(problems, "selector has an empty node name")
			}
		}
		if o.Spec.Action == v1alpha1.PodFailureAction && o.Spec.Duration == nil {
			// The api marks it required for pod-failure; without it the pod
			// stays failed until someone deletes the object.
			problems = append(problems, "pod-failure needs a duration")
		}
	case *v1alpha1.NetworkChaos:
		if o.Spec.Target == nil {
			problems = append(problems, "partition has no target side")
		} else {
			a, b := o.Spec.Selector.Nodes, o.Spec.Target.Selector.Nodes
			if len(a) != 1 || len(b) != 1 || a[0] == "" || b[0] == "" || a[0] == b[0] {
				problems = append(problems, fmt.Sprintf("partition needs two different nodes, got %v and %v", a, b))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: invalid: %s", ChaosRef(obj), strings.Join(problems, "; "))
	}
	return nil
}

// ChaosScheme holds the core types and the chaos-mesh v1alpha1 types.
func ChaosScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Default waits of a ChaosClient.
const (
	// DefaultChaosTimeout bounds each wait for Chaos Mesh (injection,
	// recovery, deletion). Chaos Mesh acts within a second or two; a
	// partition's ipset/iptables set-up on many pods takes longer.
	DefaultChaosTimeout = 60 * time.Second
	defaultChaosPoll    = 100 * time.Millisecond
)

// ChaosClient creates Chaos Mesh objects and reads their status records.
type ChaosClient struct {
	c       client.Client
	timeout time.Duration
	poll    time.Duration
}

// NewChaosClient connects to the cluster of cfg.
func NewChaosClient(cfg *rest.Config) (*ChaosClient, error) {
	s, err := ChaosScheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("chaos client: %s", oneline.Fold(err.Error(), 0))
	}
	return NewChaosClientFor(c), nil
}

// NewChaosClientFor wraps a client built elsewhere (tests pass a fake one);
// its scheme must come from ChaosScheme.
func NewChaosClientFor(c client.Client) *ChaosClient {
	return &ChaosClient{c: c, timeout: DefaultChaosTimeout, poll: defaultChaosPoll}
}

// WithTimeout sets how long each wait may take (on top of the context's own
// deadline, whichever comes first).
func (k *ChaosClient) WithTimeout(d time.Duration) *ChaosClient {
	k.timeout = d
	return k
}

// Inject validates and creates obj, then waits until Chaos Mesh's status
// records say every selected target is injected. It returns the earliest
// successful Apply event's timestamp: the moment the fault began to bite.
// Chaos Mesh stamps events in whole seconds (metav1.Time), so the instant is
// at most a second early, never late. obj is left holding the last status
// read.
func (k *ChaosClient) Inject(ctx context.Context, obj Chaos) (time.Time, error) {
	if err := ValidateChaos(obj); err != nil {
		return time.Time{}, fmt.Errorf("inject %w", err)
	}
	if err := k.c.Create(ctx, obj); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return time.Time{}, fmt.Errorf("inject %s: already exists (left by an earlier run? CleanUp removes it)", ChaosRef(obj))
		}
		return time.Time{}, fmt.Errorf("inject %s: create: %s", ChaosRef(obj), oneline.Fold(err.Error(), 0))
	}
	var at time.Time
	err := k.waitStatus(ctx, obj, k.timeout, func(st *v1alpha1.ChaosStatus) bool {
		var ok bool
		at, ok = injectedAt(st)
		return ok
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("inject %s: no injection recorded %s", ChaosRef(obj), err)
	}
	return at, nil
}

// Recover ends the fault now and removes the object. For a fault that
// lasts (pod-failure, partition) it pauses the object, which makes Chaos
// Mesh recover every target and record it, and returns the latest
// successful Recover event's timestamp; if Chaos Mesh already recovered it
// (its duration ran out) that record is returned as is. It pauses rather
// than deletes because on deletion Chaos Mesh records the recovery and drops
// its finalizer in one go, so the record vanishes with the object. A kill
// (pod-kill, container-kill) has nothing to recover, since the pod or
// container comes back by itself: the object is deleted and the time is
// zero.
func (k *ChaosClient) Recover(ctx context.Context, obj Chaos) (time.Time, error) {
	if obj.IsOneShot() {
		return time.Time{}, k.remove(ctx, obj)
	}
	cur, err := k.get(ctx, obj)
	if err != nil {
		return time.Time{}, fmt.Errorf("recover %s: %s", ChaosRef(obj), oneline.Fold(err.Error(), 0))
	}
	if _, done := recoveredAt(cur.GetStatus()); !done {
		patch := client.MergeFrom(cur.DeepCopyObject().(Chaos))
		ann := cur.GetAnnotations()
		if ann == nil {
			ann = map[string]string{}
		}
		ann[v1alpha1.PauseAnnotationKey] = "true"
		cur.SetAnnotations(ann)
		if err := k.c.Patch(ctx, cur, patch); err != nil {
			return time.Time{}, fmt.Errorf("recover %s: pause: %s", ChaosRef(obj), oneline.Fold(err.Error(), 0))
		}
	}
	return k.finish(ctx, obj, "recover", k.timeout)
}

// AwaitRecovery waits for Chaos Mesh to end a fault with a duration by
// itself, returns its recovery record's time (as Recover does) and removes
// the object. The wait allows the rest of the duration, counted from the
// object's creation as Chaos Mesh counts it, plus the client's timeout.
func (k *ChaosClient) AwaitRecovery(ctx context.Context, obj Chaos) (time.Time, error) {
	cur, err := k.get(ctx, obj)
	if err != nil {
		return time.Time{}, fmt.Errorf("await recovery of %s: %s", ChaosRef(obj), oneline.Fold(err.Error(), 0))
	}
	var d *string
	switch o := cur.(type) {
	case *v1alpha1.PodChaos:
		d = o.Spec.Duration
	case *v1alpha1.NetworkChaos:
		d = o.Spec.Duration
	}
	if cur.IsOneShot() || d == nil {
		return time.Time{}, fmt.Errorf("await recovery of %s: it has no duration, so Chaos Mesh never ends it by itself (use Recover)", ChaosRef(obj))
	}
	dur, err := time.ParseDuration(*d)
	if err != nil {
		return time.Time{}, fmt.Errorf("await recovery of %s: duration %q: %s", ChaosRef(obj), *d, err)
	}
	left := time.Until(cur.GetCreationTimestamp().Add(dur))
	if left < 0 {
		left = 0
	}
	return k.finish(ctx, obj, "await recovery of", left+k.timeout)
}

// finish waits up to limit for the recovery record, then removes obj.
func (k *ChaosClient) finish(ctx context.Context, obj Chaos, verb string, limit time.Duration) (time.Time, error) {
	var at time.Time
	err := k.waitStatus(ctx, obj, limit, func(st *v1alpha1.ChaosStatus) bool {
		var ok bool
		at, ok = recoveredAt(st)
		return ok
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %s: no recovery recorded %s", verb, ChaosRef(obj), err)
	}
	if err := k.remove(ctx, obj); err != nil {
		return at, err
	}
	return at, nil
}

// remove deletes obj and waits until it is gone: Chaos Mesh holds its
// finalizer until the targets are recovered, so "gone" means "no longer
// injected".
func (k *ChaosClient) remove(ctx context.Context, obj Chaos) error {
	if err := k.c.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s: %s", ChaosRef(obj), oneline.Fold(err.Error(), 0))
	}
	wctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	err := wait.PollUntilContextCancel(wctx, k.poll, true, func(ctx context.Context) (bool, error) {
		_, err := k.get(ctx, obj)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("delete %s: still present after %s (Chaos Mesh keeps its finalizer until it has recovered the targets: is its controller running?)", ChaosRef(obj), k.timeout)
	}
	return nil
}

// get reads obj's current state into a fresh object of its type, so no
// field of the caller's copy can linger in what is read.
func (k *ChaosClient) get(ctx context.Context, obj Chaos) (Chaos, error) {
	cur := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(Chaos)
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
		return nil, err
	}
	return cur, nil
}

// waitStatus polls obj until done(status) or limit (or ctx) runs out. On
// failure the error says how long it waited and what the status showed.
func (k *ChaosClient) waitStatus(ctx context.Context, obj Chaos, limit time.Duration, done func(*v1alpha1.ChaosStatus) bool) error {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last Chaos
	var lastErr error
	err := wait.PollUntilContextCancel(wctx, k.poll, true, func(ctx context.Context) (bool, error) {
		cur, err := k.get(ctx, obj)
		if err != nil {
			if apierrors.IsNotFound(err) {
				// Gone while we wait: someone deleted it; waiting more
				// cannot help.
				return false, fmt.Errorf("object deleted while waiting")
			}
			lastErr = err // transient API errors are retried until the deadline
			return false, nil
		}
		last = cur
		return done(cur.GetStatus()), nil
	})
	if last != nil {
		reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(last).Elem())
	}
	if err == nil {
		return nil
	}
	why := "no status read"
	if last != nil {
		why = describeStatus(last.GetStatus())
	} else if lastErr != nil {
		why = oneline.Fold(lastErr.Error(), 0)
	}
	if !wait.Interrupted(err) {
		return fmt.Errorf("(%s; %s)", oneline.Fold(err.Error(), 0), why)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("before the context ended after %s (%s)", time.Since(start).Round(time.Millisecond), why)
	}
	return fmt.Errorf("within %s (%s)", limit, why)
}

// injectedAt is the earliest successful Apply event, once every record
// (one per selected pod or container) has one.
func injectedAt(st *v1alpha1.ChaosStatus) (time.Time, bool) {
	if len(st.Experiment.Records) == 0 {
		return time.Time{}, false
	}
	var first time.Time
	for _, r := range st.Experiment.Records {
		t, ok := firstEvent(r, v1alpha1.Apply)
		if !ok {
			return time.Time{}, false
		}
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	return first, true
}

// recoveredAt is the latest successful Recover event, once every record's
// last successful event is a Recover: the fault is over when its last
// target is back.
func recoveredAt(st *v1alpha1.ChaosStatus) (time.Time, bool) {
	if len(st.Experiment.Records) == 0 {
		return time.Time{}, false
	}
	var last time.Time
	for _, r := range st.Experiment.Records {
		ev, ok := lastSucceeded(r)
		if !ok || ev.Operation != v1alpha1.Recover {
			return time.Time{}, false
		}
		if t := ev.Timestamp.Time; t.After(last) {
			last = t
		}
	}
	return last, true
}

func firstEvent(r *v1alpha1.Record, op v1alpha1.RecordEventOperation) (time.Time, bool) {
	if r == nil {
		return time.Time{}, false
	}
	for _, ev := range r.Events {
		if ev.Type == v1alpha1.TypeSucceeded && ev.Operation == op && ev.Timestamp != nil {
			return ev.Timestamp.Time, true
		}
	}
	return time.Time{}, false
}

func lastSucceeded(r *v1alpha1.Record) (v1alpha1.RecordEvent, bool) {
	if r == nil {
		return v1alpha1.RecordEvent{}, false
	}
	for i := len(r.Events) - 1; i >= 0; i-- {
		if ev := r.Events[i]; ev.Type == v1alpha1.TypeSucceeded && ev.Timestamp != nil {
			return ev, true
		}
	}
	return v1alpha1.RecordEvent{}, false
}

// describeStatus says, in one line, why a wait is not over.
func describeStatus(st *v1alpha1.ChaosStatus) string {
	recs := st.Experiment.Records
	if st.Experiment.DesiredPhase == "" && len(recs) == 0 && len(st.Conditions) == 0 {
		return "no status from Chaos Mesh: is it installed and its controller running?"
	}
	if len(recs) == 0 {
		return "Chaos Mesh selected no target"
	}
	applied, recovered, phased := 0, 0, 0
	var failure string
	for _, r := range recs {
		if r == nil {
			continue
		}
		if _, ok := firstEvent(r, v1alpha1.Apply); ok {
			applied++
		}
		if ev, ok := lastSucceeded(r); ok && ev.Operation == v1alpha1.Recover {
			recovered++
		}
		if r.Phase == v1alpha1.Injected {
			phased++
		}
		for _, ev := range r.Events {
			if ev.Type == v1alpha1.TypeFailed {
				failure = string(ev.Operation) + " failed on " + r.Id + ": " + ev.Message
			}
		}
	}
	out := fmt.Sprintf("desired phase %q, %d records: %d applied, %d recovered", st.Experiment.DesiredPhase, len(recs), applied, recovered)
	if applied == 0 && phased > 0 {
		// Chaos Mesh before 2.5 tracked phases but wrote no events.
		out += "; records say Injected but carry no timestamped events (Chaos Mesh too old?)"
	}
	if failure != "" {
		out += "; last failure: " + oneline.Fold(failure, 0)
	}
	return out
}

// CleanUp deletes every blastradius chaos object (PodChaos, NetworkChaos)
// in namespace ("" for every namespace) and waits until they are gone, so
// no fault outlives its run. Objects without the managed-by label are not
// touched.
func (k *ChaosClient) CleanUp(ctx context.Context, namespace string) error {
	opts := []client.ListOption{client.MatchingLabels{LabelChaosManagedBy: ChaosManagedBy}}
	if namespace != "" {
		opts = append(opts, client.InNamespace(namespace))
	}
	list := func(ctx context.Context) ([]Chaos, error) {
		var out []Chaos
		var pods v1alpha1.PodChaosList
		if err := k.c.List(ctx, &pods, opts...); err != nil {
			return nil, err
		}
		for i := range pods.Items {
			out = append(out, &pods.Items[i])
		}
		var nets v1alpha1.NetworkChaosList
		if err := k.c.List(ctx, &nets, opts...); err != nil {
			return nil, err
		}
		for i := range nets.Items {
			out = append(out, &nets.Items[i])
		}
		return out, nil
	}
	where := "namespace " + namespace
	if namespace == "" {
		where = "every namespace"
	}
	objs, err := list(ctx)
	if err != nil {
		return fmt.Errorf("chaos clean-up in %s: list: %s", where, oneline.Fold(err.Error(), 0))
	}
	var errs []string
	for _, o := range objs {
		if err := k.c.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Sprintf("%s: %s", ChaosRef(o), oneline.Fold(err.Error(), 0)))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("chaos clean-up in %s: delete %s", where, strings.Join(errs, "; "))
	}
	var left []Chaos
	wctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	err = wait.PollUntilContextCancel(wctx, k.poll, true, func(ctx context.Context) (bool, error) {
		l, err := list(ctx)
		if err != nil {
			return false, nil // retried until the deadline
		}
		left = l
		return len(l) == 0, nil
	})
	if err != nil {
		names := make([]string, 0, len(left))
		for _, o := range left {
			names = append(names, ChaosRef(o))
		}
		sort.Strings(names)
		return fmt.Errorf("chaos clean-up in %s: still present after %s: %s (Chaos Mesh keeps its finalizer until it has recovered the targets: is its controller running?)",
			where, k.timeout, strings.Join(names, ", "))
	}
	return nil
}

// FaultRecord maps an injected chaos object to the results model: Kind is
// the catalogue's fault name (from the object's label), Target what it was
// aimed at, and Detail names the Chaos Mesh kind, action and selection. A
// zero recovered leaves Recover unset, as for the embedded provider's kills.
func FaultRecord(obj Chaos, injected, recovered time.Time) results.FaultRecord {
	rec := results.FaultRecord{
		Kind:   obj.GetLabels()[LabelChaosFault],
		Target: obj.GetAnnotations()[AnnotationChaosTarget],
		Inject: injected,
		Detail: chaosDetail(obj),
	}
	if !recovered.IsZero() {
		r := recovered
		rec.Recover = &r
	}
	return rec
}

func chaosDetail(obj Chaos) string {
	var parts []string
	switch o := obj.(type) {
	case *v1alpha1.PodChaos:
		parts = append(parts, "Chaos Mesh PodChaos "+string(o.Spec.Action), "mode "+string(o.Spec.Mode))
		if len(o.Spec.ContainerNames) > 0 {
			parts = append(parts, "container "+strings.Join(o.Spec.ContainerNames, ","))
		}
		if o.Spec.Duration != nil {
			parts = append(parts, "duration "+*o.Spec.Duration)
		}
	case *v1alpha1.NetworkChaos:
		parts = append(parts, "Chaos Mesh NetworkChaos "+string(o.Spec.Action), "direction "+string(o.Spec.Direction))
		if o.Spec.Duration != nil {
			parts = append(parts, "duration "+*o.Spec.Duration)
		}
	default:
		parts = append(parts, "Chaos Mesh "+chaosKind(obj))
	}
	parts = append(parts, obj.GetName(), "times from its status records (1 s resolution)")
	return strings.Join(parts, ", ")
}
