package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"blastradius.dev/blastradius/internal/oneline"
)

// FieldManager owns every field blastradius applies.
const FieldManager = "blastradius"

// DefaultPerObject bounds one object's apply: an API server that stops
// answering must fail the run, not hang it.
const DefaultPerObject = 30 * time.Second

// ApplyEvent reports one object's apply, for progress lines.
type ApplyEvent struct {
	Index, Total int // 1-based
	Object       *unstructured.Unstructured
	Took         time.Duration
	Err          error
}

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// PerObject is each object's deadline (0: DefaultPerObject).
	PerObject time.Duration
	// Progress, if set, is called after each object.
	Progress func(ApplyEvent)
}

// Apply server-side applies objs in order (see ApplyWith).
func Apply(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, objs []*unstructured.Unstructured) error {
	return ApplyWith(ctx, dyn, mapper, objs, ApplyOptions{})
}

// ApplyWith server-side applies objs in order, field manager "blastradius",
// forcing ownership (the run owns its objects: a field another manager
// took, such as a replica count scaled by hand, comes back), with strict
// field validation so a field the server does not know is an error, not
// silently dropped. Order matters: a namespace before what it holds, a
// service before the pods that read its environment variables. It stops
// at the first failure, whose error names the object on one line.
func ApplyWith(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, objs []*unstructured.Unstructured, opt ApplyOptions) error {
	per := opt.PerObject
	if per <= 0 {
		per = DefaultPerObject
	}
	force := true
	for i, obj := range objs {
		t0 := time.Now()
		err := applyOne(ctx, dyn, mapper, obj, per, &force)
		if opt.Progress != nil {
			opt.Progress(ApplyEvent{Index: i + 1, Total: len(objs), Object: obj, Took: time.Since(t0), Err: err})
		}
		if err != nil {
			return fmt.Errorf("apply %s: %v", Ref(obj), oneline.Lines(err.Error()))
		}
	}
	return nil
}

func applyOne(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, obj *unstructured.Unstructured, per time.Duration, force *bool) error {
	gvk := obj.GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return errors.New("no apiVersion/kind")
	}
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	data, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			return errors.New("namespaced kind without a namespace")
		}
		ri = dyn.Resource(m.Resource).Namespace(obj.GetNamespace())
	}
	actx, cancel := context.WithTimeout(ctx, per)
	defer cancel()
	_, err = ri.Patch(actx, obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{
		FieldManager: FieldManager, Force: force, FieldValidation: "Strict",
	})
	if err != nil && actx.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("no answer within %s: %w", per, err)
	}
	return err
}

// Ref names an object as Kind/namespace/name (Kind/name when cluster-scoped).
func Ref(obj *unstructured.Unstructured) string {
	if ns := obj.GetNamespace(); ns != "" {
		return obj.GetKind() + "/" + ns + "/" + obj.GetName()
	}
	return obj.GetKind() + "/" + obj.GetName()
}
