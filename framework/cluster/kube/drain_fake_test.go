package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"blastradius.dev/blastradius/framework/cluster/kube"
)

// A request that never reaches the server (client-go's rate limiter
// refusing to wait past the drain's deadline, a dropped connection) is not
// the server's answer: the drain retries it until its deadline and reports
// the pod with the last reason the server gave, not the client's error.
func TestDrainRetriesRequestsWithoutAnAnswer(t *testing.T) {
	cs := fake.NewClientset(podOn("ns", "guarded", "n1"), podOn("ns", "quiet", "n1"))
	calls := map[string]int{}
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		name := a.(k8stesting.CreateAction).GetObject().(interface{ GetName() string }).GetName()
		calls[name]++
		if name == "guarded" && calls[name] == 1 {
			return true, nil, apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
		}
		return true, nil, errors.New("client rate limiter Wait returned an error: rate: Wait(n=1) would exceed context deadline")
	})
	err := kube.Drain(context.Background(), cs, "n1", kube.DrainOptions{Timeout: 300 * time.Millisecond, Interval: 20 * time.Millisecond})
	if err == nil {
		t.Fatal("drain succeeded though no eviction was answered")
	}
	msg := err.Error()
	for _, want := range []string{
		"drain node n1: 2 pods not gone after 300ms: ",
		"ns/guarded (eviction refused: Cannot evict pod as it would violate the pod's disruption budget.)",
		"ns/quiet (eviction not answered: client rate limiter Wait returned an error",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if calls["guarded"] < 2 || calls["quiet"] < 2 {
		t.Errorf("evictions without an answer were not retried: %v", calls)
	}

	// The server's refusal of another kind ends the drain at once.
	cs = fake.NewClientset(podOn("ns", "p", "n1"))
	cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New("no"))
	})
	t0 := time.Now()
	err = kube.Drain(context.Background(), cs, "n1", kube.DrainOptions{Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "drain node n1: evict ns/p: ") || time.Since(t0) > time.Second {
		t.Errorf("a forbidden eviction: %v after %s", err, time.Since(t0))
	}
}
