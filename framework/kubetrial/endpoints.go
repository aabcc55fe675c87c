package kubetrial

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/proxy/xds"
)

// keeper follows the services' endpoints as Kubernetes' endpoint
// controller publishes them (EndpointSlices) and keeps the control plane's
// registry in step, as istiod follows endpoints: a pod on a crashed node
// leaves a service when Kubernetes says so, a drain's replacement joins it
// when it is ready. Every change is recorded for run.json.
type keeper struct {
	b        *Backend
	ns       string
	services []string
	meshed   bool
	cpPod    string
	logf     func(string, ...any)
	interval time.Duration

	mu      sync.Mutex
	last    map[string][]string // service -> ready pod names
	changes []results.EndpointChange
}

// current reads the ready endpoints of every service, by plan pod name.
func (k *keeper) current(ctx context.Context) (map[string][]string, *placed, error) {
	pl, err := k.b.place(ctx, k.ns)
	if err != nil {
		return nil, nil, err
	}
	byIP := map[string]string{}
	for name, p := range pl.pods {
		byIP[p.Status.PodIP] = name
	}
	slices, err := k.b.Client.DiscoveryV1().EndpointSlices(k.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("endpoint slices: %w", err)
	}
	out := map[string][]string{}
	for _, s := range k.services {
		out[s] = []string{}
	}
	for _, es := range slices.Items {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if _, ok := out[svc]; !ok {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if name, ok := byIP[a]; ok {
					out[svc] = append(out[svc], name)
				}
			}
		}
	}
	for s := range out {
		sort.Strings(out[s])
	}
	return out, pl, nil
}

// step reads the endpoints once; on a change it records it and, in a
// meshed mode, republishes the registry.
func (k *keeper) step(ctx context.Context, topo results.Topology) error {
	cur, pl, err := k.current(ctx)
	if err != nil {
		return err
	}
	k.mu.Lock()
	changed := false
	now := time.Now()
	for _, s := range k.services {
		if k.last != nil && !slices.Equal(k.last[s], cur[s]) {
			k.changes = append(k.changes, results.EndpointChange{At: now, Service: s, Endpoints: cur[s]})
			changed = true
		}
	}
	first := k.last == nil
	k.last = cur
	k.mu.Unlock()
	if changed {
		k.logf("endpoints changed: %v", cur)
	}
	if !k.meshed || (!changed && !first) {
		return nil
	}
	return k.publish(ctx, registryWith(k.ns, topo, pl, cur), k.cpPod)
}

func (k *keeper) publish(ctx context.Context, snap xds.Snapshot, cpPod string) error {
	return publishRegistry(ctx, k.b.Client, k.ns, snap, cpPod)
}

// publishRegistry writes the registry into its ConfigMap and nudges the
// control plane's pod (an annotation) so its kubelet refreshes the mounted
// file now rather than at its next periodic sync, up to a minute later.
func publishRegistry(ctx context.Context, cs kubernetes.Interface, ns string, snap xds.Snapshot, cpPod string) error {
	raw, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return err
	}
	patch, _ := json.Marshal(map[string]any{"data": map[string]string{"registry.json": string(raw)}})
	if _, err := cs.CoreV1().ConfigMaps(ns).Patch(ctx, "registry", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: kube.FieldManager}); err != nil {
		return fmt.Errorf("registry ConfigMap: %w", err)
	}
	nudge, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		"blastradius.dev/registry": fmt.Sprint(time.Now().UnixNano())}}})
	if _, err := cs.CoreV1().Pods(ns).Patch(ctx, cpPod, types.MergePatchType, nudge, metav1.PatchOptions{FieldManager: kube.FieldManager}); err != nil {
		return fmt.Errorf("control plane pod %s: %w", cpPod, err)
	}
	return nil
}

// run steps every interval until ctx ends.
func (k *keeper) run(ctx context.Context, topo results.Topology) {
	t := time.NewTicker(k.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := k.step(sctx, topo); err != nil && ctx.Err() == nil {
			k.logf("endpoints: %v", err)
		}
		cancel()
	}
}

// Changes returns the endpoint changes seen so far.
func (k *keeper) Changes() []results.EndpointChange {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]results.EndpointChange(nil), k.changes...)
}

// registryWith is the registry with every running plan pod (a drain's
// replacements included) and the services' endpoints as Kubernetes has them.
func registryWith(ns string, topo results.Topology, pl *placed, eps map[string][]string) xds.Snapshot {
	snap := xds.Snapshot{TrustDomain: "cluster.local"}
	// A workload's UID is what the node agent calls the pod when it hands
	// it to the node proxy: namespace/<pod name as Kubernetes named it>.
	// Name and identity are the plan's (server-n3), stable across
	// replacement pods.
	uid := func(name string) string { return ns + "/" + pl.pods[name].Name }
	app := map[string]bool{}
	for _, p := range topo.Pods {
		app[p.Name] = true
	}
	for _, s := range topo.Services {
		for _, p := range s.Pods {
			app[p] = true
		}
	}
	var names []string
	for name := range pl.pods {
		if app[name] || app[strings.TrimSuffix(name, spareSuffix)] {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		p := pl.pods[name]
		snap.Workloads = append(snap.Workloads, xds.Workload{UID: uid(name), Name: name, Namespace: ns, ServiceAccount: name,
			Node: p.Spec.NodeName, IP: p.Status.PodIP, Protocol: xds.ProtocolHBONE})
	}
	for _, s := range topo.Services {
		sv := xds.Service{Name: s.Name, Namespace: ns, VIP: s.VIP, Ports: []xds.Port{{Port: scenario.ServiceTCP, TargetPort: scenario.HTTPPort}}}
		for _, p := range eps[s.Name] {
			if _, ok := pl.pods[p]; ok {
				sv.Endpoints = append(sv.Endpoints, uid(p))
			}
		}
		snap.Services = append(snap.Services, sv)
	}
	return snap
}

// spareSuffix names a drain's replacement of a server (the plan's "-moved").
const spareSuffix = "-moved"
