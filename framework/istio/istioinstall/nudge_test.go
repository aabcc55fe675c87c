package istioinstall

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

// A CRD stuck on the API server's finalizer is touched once it has been
// terminating for nudgeAfter, and not again before nudgeAfter more; a CRD
// just deleted, or without the finalizer, is left alone.
func TestTerminatingCRDIsQueuedForTheFinalizerAgain(t *testing.T) {
	crd := func(name string, deletedAgo time.Duration, finalizers ...string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("apiextensions.k8s.io/v1")
		u.SetKind("CustomResourceDefinition")
		u.SetName(name)
		del := metav1.NewTime(time.Now().Add(-deletedAgo))
		u.SetDeletionTimestamp(&del)
		u.SetFinalizers(finalizers)
		_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{
			"type": "Terminating", "status": "True", "reason": "InstanceDeletionFailed",
			"message": "could not list instances: storage is (re)initializing",
		}}, "status", "conditions")
		return u
	}
	stuck := crd("stuck.example.io", 10*time.Second, crdCleanupFinalizer)
	fresh := crd("fresh.example.io", time.Second, crdCleanupFinalizer)
	other := crd("other.example.io", time.Minute, "someone.else/finalizer")
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{crdGVR: "CustomResourceDefinitionList"}, stuck, fresh, other)
	var logs []string
	c := Cluster{Dynamic: dyn, Logf: func(f string, a ...any) { logs = append(logs, f) }}
	ctx := context.Background()

	nudged := map[string]time.Time{}
	for _, u := range []*unstructured.Unstructured{stuck, fresh, other, stuck} {
		nudgeCRDFinalizer(ctx, c, u, nudged)
	}
	patches := 0
	for _, a := range dyn.Actions() {
		if a.GetVerb() == "patch" {
			patches++
		}
	}
	if patches != 1 {
		t.Fatalf("%d patches, want 1 (the stuck CRD, once): %v", patches, dyn.Actions())
	}
	got, err := dyn.Resource(crdGVR).Get(ctx, "stuck.example.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetAnnotations()[annotationFinalizeRetry] == "" {
		t.Errorf("no %s annotation on the stuck CRD: %v", annotationFinalizeRetry, got.GetAnnotations())
	}
	if len(logs) != 1 {
		t.Errorf("%d log lines, want 1 naming the stuck CRD: %q", len(logs), logs)
	}

	// nudgeAfter later it is touched again, without another log line.
	nudged["stuck.example.io"] = time.Now().Add(-nudgeAfter)
	nudgeCRDFinalizer(ctx, c, stuck, nudged)
	patches = 0
	for _, a := range dyn.Actions() {
		if a.GetVerb() == "patch" {
			patches++
		}
	}
	if patches != 2 || len(logs) != 1 {
		t.Errorf("after nudgeAfter: %d patches (want 2), %d log lines (want 1)", patches, len(logs))
	}
}
