// Package kubetrial runs blastradius trials on Kubernetes (kind, a local
// cluster, any kubeconfig) with the reference data plane: the same plan,
// flows, faults and measurement as the embedded cluster, only the provider
// differs. Per trial it applies the plan's objects into a fresh namespace,
// waits for them, publishes the registry the control plane serves, starts
// each client agent's flows through pods/exec, injects the fault through
// the API (pod deletion, scaling) or the provider (node crash), pulls the
// agents' event files back into the trial's folder and measures.
package kubetrial

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/manifests"
	"blastradius.dev/blastradius/proxy/xds"
)

// EventsDir is where client agents write flow events inside their pods
// (an emptyDir in manifests/client.yaml).
const EventsDir = "/var/lib/blastradius/events"

// Execer runs a command in a container, as pods/exec does; the runner
// starts the flows and pulls the events back with it.
type Execer interface {
	Exec(ctx context.Context, namespace, pod, container string, cmd []string, stdout, stderr io.Writer) error
}

// NodeCrasher crashes a node (by its Kubernetes name) and brings it back:
// a kind node's container, or a local cluster's node processes.
type NodeCrasher interface {
	CrashNode(node string) (time.Time, error)
	RecoverNode(node string) (time.Time, error)
}

// NodePartitioner cuts the network between nodes (by their Kubernetes
// names): every two of them are cut off from each other, both ways, while
// each keeps the API server and every node outside the set.
type NodePartitioner interface {
	PartitionNodes(names ...string) (at time.Time, heal func() (time.Time, error), err error)
}

// PodDropper black-holes traffic inside pods, by their node's Kubernetes
// name and the pods' addresses: one flow as it enters its server pod, or
// every packet in and out of a pod but loopback.
type PodDropper interface {
	DropFlow(node, server, client string, ports ...int) (at time.Time, undo func() (time.Time, time.Duration, error), err error)
	DropPod(node, pod string) (at time.Time, undo func() (time.Time, time.Duration, error), err error)
}

// Backend is the scenario.Backend for Kubernetes.
type Backend struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Mapper  meta.RESTMapper
	Exec    Execer
	// Nodes are the cluster's worker names; Nodes[i] plays node-(i+1).
	Nodes []string
	Image string
	// Crasher is nil when the provider cannot crash a node.
	Crasher NodeCrasher
	// Partitioner is nil when the provider cannot cut nodes apart.
	Partitioner NodePartitioner
	// Dropper is nil when the provider cannot reach into pods' networks.
	Dropper PodDropper
	// Chaos, when set, injects the faults Chaos Mesh can through its
	// objects (chaos.go); nil: pod deletions and scaling through the API.
	Chaos *kube.ChaosClient
	// Istio, when set, is Istio's ambient mesh installed on the cluster:
	// the istio-* modes run on it (nil: they are refused).
	Istio *Istio
	// Admin reaches a pod's admin port (the API server's pods/proxy); nil
	// skips the checks that read the data plane's own state.
	Admin func(ctx context.Context, namespace, pod string, port int, path string) ([]byte, error)
	// KeepNamespace leaves a trial's namespace for inspection (debugging).
	KeepNamespace bool
	// ReadyTimeout bounds the wait for a trial's workloads (default 2 min).
	ReadyTimeout time.Duration
	Logf         func(string, ...any)
}

// CheckMode implements scenario.Backend: the reference data plane's modes,
// none, and Istio's when Istio is installed.
func (b *Backend) CheckMode(mode string) error {
	switch mode {
	case "none", "sidecar", "ambient":
		return nil
	case "istio-ambient", "istio-sidecar":
		if b.Istio == nil {
			return fmt.Errorf("mode %s needs Istio installed on the cluster (run with --mesh istio)", mode)
		}
		return nil
	}
	return fmt.Errorf("mode %s is not one the Kubernetes provider deploys (none, sidecar, ambient, istio-ambient, istio-sidecar)", mode)
}

// Capabilities implements scenario.Backend: what can be done through the
// API (pod deletion, scaling, cordon and eviction) or the provider (a node
// crash, a partition); with Istio, its own mechanisms. The rest (black
// holes, the reference's waypoints and sidecar kills) is not offered here.
func (b *Backend) Capabilities(mode string) scenario.Capabilities {
	caps := scenario.Capabilities{
		scenario.CapDrainNode: "the servers' replacements scaled up and waited for as ready endpoints, then cordon and evictions (kubectl drain --ignore-daemonsets); uncordoned after the trial",
	}
	istio := scenario.MeshOf(mode) == scenario.MeshIstio
	switch {
	case istio:
		caps = caps.Merge(istioCapabilities(mode, b.Chaos != nil))
		// What needs Envoy where the nodes cannot have it.
		for c := range b.Unoffered(mode) {
			delete(caps, c)
		}
	case mode != "none":
		caps[scenario.CapCrashControlPlane] = "delete of the control plane pod with grace period 0; its Deployment makes a new one"
		caps[scenario.CapStopControlPlane] = "control plane scaled to 0 (its pod deleted with grace period 0), then back to 1 and waited for as Ready; its CA root is kept in a Secret, so the new pod signs with the same root"
	}
	if mode == "ambient" {
		caps[scenario.CapCrashNodeProxy] = "delete of the node's proxy pod with grace period 0; its DaemonSet makes a new one"
		caps[scenario.CapRollNodeProxies] = "the node-proxy DaemonSet rolled (maxSurge 1, maxUnavailable 0): on each node the new proxy pod (proxy and node agent) starts, and once it is Ready the old one gets SIGTERM and drains"
	}
	if b.Crasher != nil {
		how := "every process of the node killed; with recoverAfter started again"
		if d, ok := b.Crasher.(interface{ How() string }); ok {
			how = d.How()
		}
		caps[scenario.CapCrashNode] = how
	}
	if b.Partitioner != nil {
		how := "nftables in each node drops every packet from the other nodes' addresses (node IP, pod CIDR)"
		if d, ok := b.Partitioner.(interface{ PartitionHow() string }); ok {
			how = d.PartitionHow()
		}
		caps[scenario.CapPartitionNodes] = how + ": the two nodes"
		caps[scenario.CapPartitionSegment] = how + ": every node of the trial"
	}
	if b.Dropper != nil {
		caps[scenario.CapDropFlow] = "nftables in the server pod's network namespace drops the flow's packets as they enter it"
		caps[scenario.CapDropPod] = "nftables in the pod's network namespace drops every packet in and out of it but loopback"
	}
	if b.Chaos != nil && !istio {
		caps = caps.Merge(chaosCapabilities(mode))
	}
	return caps
}

func (b *Backend) logf(format string, a ...any) {
	if b.Logf != nil {
		b.Logf(format, a...)
	}
}

// Render renders a trial plan's objects on the cluster's nodes.
func Render(pl scenario.Plan, nodes []string, image string) ([]*unstructured.Unstructured, error) {
	if pl.Nodes > len(nodes) {
		return nil, fmt.Errorf("needs %d nodes, the cluster has %d", pl.Nodes, len(nodes))
	}
	params := manifests.Params{Mode: pl.Mode, Image: image, Nodes: nodes[:pl.Nodes], Services: pl.Services,
		CertTTL: pl.Mesh.CertTTL, Drain: pl.Mesh.Drain}
	if scenario.MeshOf(pl.Mode) == scenario.MeshIstio {
		// Istio's trials run the workloads of mode none in a namespace
		// Istio's label enrols: Istio itself is installed once per run.
		params.Mode, params.Namespace, params.NamespaceLabels = "none", manifests.Namespace(pl.Mode), istioNamespaceLabels(pl.Mode)
	}
	for _, pp := range pl.Pods {
		params.Pods = append(params.Pods, manifests.Pod{Name: pp.Name, Role: pp.Role, Node: pp.Node})
	}
	if w := pl.Mesh.Waypoint; w != nil && pl.Mode == "ambient" {
		params.Waypoint = &manifests.Waypoint{Service: w.Service, Replicas: w.Replicas}
	}
	objs, err := manifests.Render(params)
	if err != nil {
		return nil, err
	}
	if w := pl.Mesh.Waypoint; w != nil && scenario.MeshOf(pl.Mode) == scenario.MeshIstio && scenario.BaseMode(pl.Mode) == "ambient" {
		return withIstioWaypoint(objs, params.Namespace, w, nodes[:pl.Nodes])
	}
	return objs, nil
}

// placed is a trial's pods as Kubernetes placed them, by plan name.
type placed struct {
	ns string
	// pods: plan name (server-n1, client-n2, controlplane, ztunnel-n1) →
	// the pod playing it.
	pods map[string]corev1.Pod
	// planned: real node name → node-i.
	planned map[string]string
}

func (b *Backend) plannedNames() map[string]string {
	m := map[string]string{}
	for i, n := range b.Nodes {
		m[n] = fmt.Sprintf("node-%d", i+1)
	}
	return m
}

// place lists the namespace's pods and names them as the plan does: pods
// of a Deployment carry their plan name in a label, pods of a DaemonSet
// are named by the node they run on.
func (b *Backend) place(ctx context.Context, ns string) (*placed, error) {
	list, err := b.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: manifests.LabelPartOf + "=blastradius"})
	if err != nil {
		return nil, fmt.Errorf("list pods in %s: %w", ns, err)
	}
	pl := &placed{ns: ns, pods: map[string]corev1.Pod{}, planned: b.plannedNames()}
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
			continue
		}
		name := p.Labels[manifests.LabelPod]
		switch name {
		case "client", "ztunnel":
			node, ok := pl.planned[p.Spec.NodeName]
			if !ok {
				continue
			}
			name = fmt.Sprintf("%s-n%s", name, strings.TrimPrefix(node, "node-"))
		case "":
			continue
		}
		if old, ok := pl.pods[name]; ok && old.CreationTimestamp.After(p.CreationTimestamp.Time) {
			continue
		}
		pl.pods[name] = p
	}
	return pl, nil
}

// topology is the trial's results.Topology in planned node names.
func (b *Backend) topology(ctx context.Context, t *scenario.TrialRun, pl *placed) (results.Topology, error) {
	topo := results.Topology{}
	for i := 1; i <= t.Plan.Nodes; i++ {
		topo.Nodes = append(topo.Nodes, fmt.Sprintf("node-%d", i))
	}
	for _, pp := range t.Plan.Pods {
		if pp.Role == "spare" {
			continue
		}
		p, ok := pl.pods[pp.Name]
		if !ok {
			return topo, fmt.Errorf("pod %s of the plan is not running in %s", pp.Name, pl.ns)
		}
		topo.Pods = append(topo.Pods, results.PodInfo{Name: pp.Name, Node: pl.planned[p.Spec.NodeName], IP: p.Status.PodIP, Role: pp.Role})
	}
	var names []string
	for s := range t.Plan.Services {
		names = append(names, s)
	}
	sort.Strings(names)
	for _, s := range names {
		svc, err := b.Client.CoreV1().Services(pl.ns).Get(ctx, s, metav1.GetOptions{})
		if err != nil {
			return topo, fmt.Errorf("service %s: %w", s, err)
		}
		topo.Services = append(topo.Services, results.SvcInfo{Name: s, VIP: svc.Spec.ClusterIP, Port: scenario.ServiceTCP, Pods: t.Plan.Services[s]})
	}
	return topo, nil
}

// publish publishes the registry and waits until the control plane
// serves it (read through its admin port where the backend can).
func (b *Backend) publish(ctx context.Context, ns string, snap xds.Snapshot, cpPod string) error {
	if err := publishRegistry(ctx, b.Client, ns, snap, cpPod); err != nil {
		return err
	}
	if b.Admin == nil {
		return nil
	}
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for {
		body, err := b.Admin(ctx, ns, cpPod, 15014, "/debug/snapshot")
		if err == nil {
			var got xds.Snapshot
			if json.Unmarshal(body, &got) == nil && len(got.Workloads) == len(snap.Workloads) && len(got.Services) == len(snap.Services) {
				return nil
			}
			last = fmt.Sprintf("serves %d workloads, want %d", len(got.Workloads), len(snap.Workloads))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the control plane did not serve the trial's registry within 90s (last: %s)", last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// deleteNamespace removes ns and waits until it is gone.
func (b *Backend) deleteNamespace(ctx context.Context, ns string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	err := b.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	b.logf("deleting namespace %s", ns)
	for {
		_, err := b.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s still there after %s (finalizers or a node that does not confirm its pods' deletion)", ns, limit)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
