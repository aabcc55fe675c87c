package istioinstall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/internal/oneline"
)

// Cluster is what an install talks to.
type Cluster struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Mapper  meta.RESTMapper
	Logf    func(string, ...any)
}

func (c Cluster) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// InstallOptions bound an install.
type InstallOptions struct {
	// ReadyTimeout bounds each part's wait (default 3 min: images are
	// loaded beforehand, istiod starts in seconds).
	ReadyTimeout time.Duration
	// NoWait applies without waiting for workloads (a cluster with no
	// kubelets, as the tests' API server).
	NoWait bool
	// NoClusterDNS: the cluster runs no DNS service (local-k8s). ztunnel
	// reaches istiod by name (the chart's XDS_ADDRESS and CA_ADDRESS,
	// istiod.istio-system.svc, also the name it verifies istiod's
	// certificate for), so the ztunnel pods get istiod's Service address
	// under its names in their /etc/hosts (hostAliases).
	NoClusterDNS bool
}

// istiodNames are the names ztunnel's pods may resolve istiod by.
var istiodNames = []string{"istiod." + Namespace + ".svc", "istiod." + Namespace + ".svc.cluster.local", "istiod." + Namespace}

// aliasIstiod adds istiod's Service address under its names to the pod
// template of every DaemonSet among objs.
func aliasIstiod(ctx context.Context, c Cluster, objs []*unstructured.Unstructured) error {
	svc, err := c.Client.CoreV1().Services(Namespace).Get(ctx, "istiod", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("istiod's Service: %v", oneline.Lines(err.Error()))
	}
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == "None" {
		return fmt.Errorf("istiod's Service has no cluster IP (%q)", ip)
	}
	for _, o := range objs {
		if o.GetKind() != "DaemonSet" {
			continue
		}
		names := make([]any, len(istiodNames))
		for i, n := range istiodNames {
			names[i] = n
		}
		alias := []any{map[string]any{"ip": ip, "hostnames": names}}
		if err := unstructured.SetNestedSlice(o.Object, alias, "spec", "template", "spec", "hostAliases"); err != nil {
			return fmt.Errorf("%s: %v", kube.Ref(o), err)
		}
	}
	return nil
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Install applies the parts in order (server-side apply, strict field
// validation) and, after each, waits until what it runs is ready: the CRDs
// established, istiod's Deployment available (it has then also written the
// root certificate the node proxies trust), the istio-cni and ztunnel
// DaemonSets rolled out on every node. An error names the part, the object
// or workload not ready, and why (its pods' states).
func Install(ctx context.Context, c Cluster, parts []Part, o InstallOptions) error {
	timeout := o.ReadyTimeout
	if timeout <= 0 {
		timeout = 3 * time.Minute
	}
	for i, p := range parts {
		t0 := time.Now()
		c.logf("istio: [%d/%d] %s (chart %s, %d objects)", i+1, len(parts), p.Name, p.Chart, len(p.Objects))
		if o.NoClusterDNS && p.Name == PartZtunnel {
			if err := aliasIstiod(ctx, c, p.Objects); err != nil {
				return fmt.Errorf("istio %s: %v", p.Name, err)
			}
		}
		objs := p.Objects
		if p.Name == PartGatewayAPI {
			var kept []string
			var err error
			if objs, kept, err = keepForeign(ctx, c, objs); err != nil {
				return fmt.Errorf("istio %s: %v", p.Name, err)
			}
			if len(kept) > 0 {
				c.logf("istio: the cluster's own Gateway API CRDs kept, neither changed nor removed later: %s", strings.Join(kept, ", "))
			}
		}
		if err := kube.ApplyWith(ctx, c.Dynamic, c.Mapper, objs, kube.ApplyOptions{}); err != nil {
			return fmt.Errorf("istio %s: %v", p.Name, err)
		}
		if err := waitCRDs(ctx, c, objs, timeout); err != nil {
			return fmt.Errorf("istio %s: %v", p.Name, err)
		}
		if !o.NoWait {
			err := kube.WaitWorkloadsReady(ctx, c.Dynamic, p.Objects, kube.WaitOptions{Timeout: timeout})
			if err != nil {
				if why := kube.PodProblems(ctx, c.Client, Namespace); why != "" {
					err = fmt.Errorf("%v; %s", err, why)
				}
				return fmt.Errorf("istio %s: %v", p.Name, err)
			}
		}
		what := "ready"
		if o.NoWait {
			what = "applied"
		}
		c.logf("istio: [%d/%d] %s %s (%s)", i+1, len(parts), p.Name, what, time.Since(t0).Round(100*time.Millisecond))
	}
	return nil
}

// waitCRDs waits until every CRD among objs is Established: a custom
// resource applied before that is refused.
func waitCRDs(ctx context.Context, c Cluster, objs []*unstructured.Unstructured, timeout time.Duration) error {
	var names []string
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			names = append(names, o.GetName())
		}
	}
	if len(names) == 0 {
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var pending []string
		for _, n := range names {
			u, err := c.Dynamic.Resource(crdGVR).Get(dctx, n, metav1.GetOptions{})
			if err != nil || !established(u) {
				pending = append(pending, n)
			}
		}
		if len(pending) == 0 {
			if r, ok := c.Mapper.(meta.ResettableRESTMapper); ok {
				r.Reset() // the new kinds must be found by what follows
			}
			return nil
		}
		select {
		case <-dctx.Done():
			return fmt.Errorf("CRDs not established after %s: %s", timeout, strings.Join(pending, ", "))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// Uninstall deletes every object of the parts, in reverse order (the node
// proxy and node agent before istiod, the CRDs and webhooks last), and
// waits until each is gone: the namespace's pods are terminated and a
// later install starts from nothing. Objects already absent are fine.
// Gateway API CRDs the tool did not install stay (only the GatewayClasses
// istiod wrote on them go). The
// node-side remains (istio-cni's plugin and its CNI configuration chained
// on the nodes, ztunnel's socket folder) are the provider's to remove; on
// its normal exit istio-cni removes its configuration itself.
func Uninstall(ctx context.Context, c Cluster, parts []Part, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 3 * time.Minute
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var objs []*unstructured.Unstructured
	foreign := false
	for _, p := range parts {
		if p.Name != PartGatewayAPI {
			objs = append(objs, p.Objects...)
			continue
		}
		// Only the Gateway API CRDs the tool installed go.
		for _, o := range p.Objects {
			live, err := c.Dynamic.Resource(crdGVR).Get(dctx, o.GetName(), metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return fmt.Errorf("istio uninstall: get CRD %s: %v", o.GetName(), err)
			case ours(live):
				objs = append(objs, o)
			default:
				foreign = true
			}
		}
	}
	slices.Reverse(objs)
	bg := metav1.DeletePropagationBackground
	var errs []error
	for _, o := range objs {
		ri, err := resource(c, o)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", kube.Ref(o), err))
			continue
		}
		err = ri.Delete(dctx, o.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %v", kube.Ref(o), oneline.Lines(err.Error())))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("istio uninstall: %w", errors.Join(errs...))
	}
	c.logf("istio: uninstall: %d objects deleted, waiting until gone", len(objs))
	nudged := map[string]time.Time{}
	for {
		var left []string
		for _, o := range objs {
			ri, err := resource(c, o)
			if err != nil {
				continue
			}
			if live, err := ri.Get(dctx, o.GetName(), metav1.GetOptions{}); err == nil {
				left = append(left, kube.Ref(o))
				if o.GetKind() == "CustomResourceDefinition" {
					nudgeCRDFinalizer(dctx, c, live, nudged)
				}
			} else if !apierrors.IsNotFound(err) && dctx.Err() == nil {
				left = append(left, kube.Ref(o)+" ("+oneline.Lines(err.Error())+")")
			}
		}
		if len(left) == 0 {
			if !foreign {
				return nil
			}
			// The classes istiod wrote would outlive it on the cluster's
			// own CRDs (with the tool's they go with them); istiod is
			// gone now and writes them no more.
			if err := deleteIstioGatewayClasses(dctx, c); err != nil {
				return fmt.Errorf("istio uninstall: %v", err)
			}
			return nil
		}
		select {
		case <-dctx.Done():
			if len(left) > 5 {
				left = append(left[:5], fmt.Sprintf("and %d more", len(left)-5))
			}
			return fmt.Errorf("istio uninstall: still there after %s: %s", timeout, strings.Join(left, ", "))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// crdCleanupFinalizer is the API server's own finalizer on every CRD: it
// deletes the CRD's objects, then removes itself.
const crdCleanupFinalizer = "customresourcecleanup.apiextensions.k8s.io"

// nudgeAfter is how long a deleted CRD may wait on the API server's
// finalizer before the uninstall touches it.
const nudgeAfter = 5 * time.Second

// nudgeCRDFinalizer touches a CRD that has been terminating for longer
// than nudgeAfter (an annotation, at most once per nudgeAfter), which
// queues it for the API server's CRD finalizer again. That finalizer can
// stall for up to its informer's resync (5 minutes): when listing the
// CRD's objects fails because their storage is being re-created (it is, on
// the status update that marks the CRD terminating), it records the
// failure in the CRD's status and retries at once from its informer's
// cache, which may not have that update yet; the retry's status update
// then conflicts, and a conflict is dropped in the expectation of an
// update event, which never comes, since the controller ignores updates
// of the terminating condition alone. Measured here: a 3-minute uninstall
// deadline missed with one CRD waiting on that resync, after a single
// failed list. An annotation changes neither spec nor names, so the CRD's
// storage is not re-created by it.
func nudgeCRDFinalizer(ctx context.Context, c Cluster, crd *unstructured.Unstructured, nudged map[string]time.Time) {
	del := crd.GetDeletionTimestamp()
	if del == nil || !slices.Contains(crd.GetFinalizers(), crdCleanupFinalizer) ||
		time.Since(del.Time) < nudgeAfter || time.Since(nudged[crd.GetName()]) < nudgeAfter {
		return
	}
	if _, ok := nudged[crd.GetName()]; !ok {
		c.logf("istio: uninstall: CRD %s terminating for %s (%s); queueing it for the API server's CRD finalizer again",
			crd.GetName(), time.Since(del.Time).Round(time.Second), terminating(crd))
	}
	nudged[crd.GetName()] = time.Now()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, annotationFinalizeRetry, time.Now().UTC().Format(time.RFC3339Nano))
	_, err := c.Dynamic.Resource(crdGVR).Patch(ctx, crd.GetName(), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		c.logf("istio: uninstall: touch CRD %s: %s", crd.GetName(), oneline.Lines(err.Error()))
	}
}

// annotationFinalizeRetry is the annotation nudgeCRDFinalizer writes.
const annotationFinalizeRetry = "blastradius.dev/finalize-retry"

// terminating is a CRD's Terminating condition, as its reason and message.
func terminating(crd *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Terminating" {
			return fmt.Sprintf("%v: %v", m["reason"], m["message"])
		}
	}
	return "no Terminating condition yet"
}

func resource(c Cluster, o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := c.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.Dynamic.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return c.Dynamic.Resource(m.Resource), nil
}
