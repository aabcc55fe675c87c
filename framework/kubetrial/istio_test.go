package kubetrial

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"blastradius.dev/blastradius/framework/cluster/kube"
	"blastradius.dev/blastradius/framework/scenario"
	"blastradius.dev/blastradius/manifests"
	"blastradius.dev/blastradius/proxy/ca"
)

func TestHBONEStreamsReadsTheStandInsAndUpstreamsCounters(t *testing.T) {
	for _, tc := range []struct {
		name, text, metric string
		want               float64
		err                string
	}{
		{name: "the tool's stand-in: outbound streams only",
			text: "# TYPE hbone_streams_total counter\n" +
				`hbone_streams_total{node="node-1",mode="ztunnel",direction="outbound"} 5` + "\n" +
				`hbone_streams_total{node="node-1",mode="ztunnel",direction="inbound"} 7` + "\n",
			metric: "hbone_streams_total", want: 5},
		{name: "upstream ztunnel: mutual TLS connections it opened as the source",
			text: "# TYPE istio_tcp_connections_opened_total counter\n" +
				`istio_tcp_connections_opened_total{reporter="source",security_policy="mutual_tls",destination_workload="a"} 3` + "\n" +
				`istio_tcp_connections_opened_total{reporter="source",security_policy="mutual_tls",destination_workload="b"} 2` + "\n" +
				`istio_tcp_connections_opened_total{reporter="destination",security_policy="mutual_tls"} 4` + "\n" +
				`istio_tcp_connections_opened_total{reporter="source",security_policy="unknown"} 9` + "\n",
			metric: "istio_tcp_connections_opened_total", want: 5},
		{name: "no HBONE counter", text: "# TYPE go_goroutines gauge\ngo_goroutines 12\n", err: "no HBONE counter"},
		{name: "not metrics", text: "<html>not found</html>", err: "metrics:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, metric, err := hboneStreams([]byte(tc.text))
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one saying %q", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want || metric != tc.metric:
				t.Errorf("got %v from %s, want %v from %s", got, metric, tc.want, tc.metric)
			}
		})
	}
}

func TestIstioModesNeedIstioAndOfferItsFailures(t *testing.T) {
	b := &Backend{}
	if err := b.CheckMode("istio-ambient"); err == nil || !strings.Contains(err.Error(), "--mesh istio") {
		t.Errorf("istio-ambient without Istio: %v, want an error naming --mesh istio", err)
	}
	b.Istio = &Istio{Namespace: "istio-system"}
	if err := b.CheckMode("istio-ambient"); err != nil {
		t.Errorf("istio-ambient with Istio: %v", err)
	}
	caps := b.Capabilities("istio-ambient")
	for _, c := range []scenario.Capability{scenario.CapCrashNodeProxy, scenario.CapRestartNodeProxy, scenario.CapCrashNodeAgent,
		scenario.CapCrashControlPlane, scenario.CapStopControlPlane, scenario.CapDrainNode} {
		if caps[c] == "" {
			t.Errorf("istio-ambient lacks %s", c)
		}
	}
	if !strings.HasPrefix(caps[scenario.CapCrashNodeProxy], "Istio:") {
		t.Errorf("node proxy crash in istio-ambient is done by %q, want Istio's mechanism", caps[scenario.CapCrashNodeProxy])
	}
	if _, ok := caps[scenario.CapCrashSidecar]; ok {
		t.Errorf("istio-ambient offers %s: ambient has no sidecars", scenario.CapCrashSidecar)
	}
	if !strings.Contains(caps[scenario.CapWaypoints], "istio-waypoint") {
		t.Errorf("istio-ambient's waypoints are done by %q, want istiod's from a Gateway of class istio-waypoint", caps[scenario.CapWaypoints])
	}
	// Sidecar mode: istiod's faults and the pod restart through the API;
	// a sidecar kill only with Chaos Mesh (a container kill).
	side := b.Capabilities("istio-sidecar")
	for _, c := range []scenario.Capability{scenario.CapCrashControlPlane, scenario.CapStopControlPlane, scenario.CapRestartAppPod} {
		if !strings.HasPrefix(side[c], "Istio:") {
			t.Errorf("istio-sidecar: %s done by %q, want Istio's mechanism", c, side[c])
		}
	}
	if side[scenario.CapCrashSidecar] != "" || side[scenario.CapCrashNodeProxy] != "" {
		t.Errorf("istio-sidecar without Chaos Mesh offers %v", side)
	}
	if why := b.Unoffered("istio-sidecar")[scenario.CapCrashSidecar]; !strings.Contains(why, "Chaos Mesh") {
		t.Errorf("sidecar kill unoffered for %q, want the Chaos Mesh reason", why)
	}
	b.Chaos = &kube.ChaosClient{}
	if side := b.Capabilities("istio-sidecar"); !strings.Contains(side[scenario.CapCrashSidecar], "istio-proxy") {
		t.Errorf("istio-sidecar with Chaos Mesh: sidecar kill %q", side[scenario.CapCrashSidecar])
	}
	b.Chaos = nil
	// Where the nodes cannot have Envoy, nothing of sidecar mode is, and
	// no waypoint.
	b.Istio.NoEnvoy = EnvoyUnavailable
	for c, why := range b.Unoffered("istio-sidecar") {
		if why != EnvoyUnavailable {
			t.Errorf("istio-sidecar without its image: %s unoffered for %q", c, why)
		}
	}
	if why := b.Unoffered("istio-ambient")[scenario.CapWaypoints]; why != EnvoyUnavailable {
		t.Errorf("istio-ambient without Envoy: waypoints unoffered for %q", why)
	}
	if offered := scenario.FaultsOffered(b, "istio-ambient"); offered[scenario.FaultWaypointKill] != "" {
		t.Errorf("waypoint kill offered in istio-ambient without Envoy: %q", offered[scenario.FaultWaypointKill])
	}
	b.Istio.NoEnvoy = ""
	offered := scenario.FaultsOffered(b, "istio-ambient")
	for _, f := range []string{scenario.FaultNodeProxyCrash, scenario.FaultNodeProxyRestart, scenario.FaultNodeProxyRolling, scenario.FaultNodeAgentCrash, scenario.FaultControlPlaneDown} {
		if offered[f] == "" {
			t.Errorf("fault %s not offered in istio-ambient", f)
		}
	}
	for _, f := range []string{scenario.FaultWaypointKill, scenario.FaultWaypointAllKilled, scenario.FaultWaypointOutage} {
		if offered[f] == "" {
			t.Errorf("fault %s not offered in istio-ambient where the nodes have Envoy", f)
		}
	}
}

// istioPods is an Istio install on two nodes as the fakes hold it.
func istioPods() []runtime.Object {
	pod := func(name, node, uid string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system", UID: types.UID(uid), Labels: labels,
				CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		}
	}
	one := int32(1)
	return []runtime.Object{
		pod("ztunnel-a", "w1", "za", map[string]string{"app": "ztunnel"}),
		pod("ztunnel-b", "w2", "zb", map[string]string{"app": "ztunnel"}),
		pod("istio-cni-node-a", "w1", "ca", map[string]string{"k8s-app": "istio-cni-node"}),
		pod("istio-cni-node-b", "w2", "cb", map[string]string{"k8s-app": "istio-cni-node"}),
		pod("istiod-x", "w1", "ix", map[string]string{"app": "istiod"}),
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: "istio-system"}, Spec: appsv1.DeploymentSpec{Replicas: &one}},
	}
}

// deletes records the pod deletions a fake saw, with their grace periods.
func deletes(cs *fake.Clientset) map[string]*int64 {
	out := map[string]*int64{}
	for _, a := range cs.Actions() {
		if d, ok := a.(k8stesting.DeleteActionImpl); ok && d.GetResource().Resource == "pods" {
			out[d.GetName()] = d.DeleteOptions.GracePeriodSeconds
		}
	}
	return out
}

func TestIstioDataPlaneKillsTheNodesPods(t *testing.T) {
	cs := fake.NewSimpleClientset(istioPods()...)
	d := &istioDataPlane{b: &Backend{Client: cs}, ns: "istio-system", real: map[string]string{"node-1": "w1", "node-2": "w2"}, logf: t.Logf}
	if _, err := d.CrashNodeProxy("node-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CrashNodeAgent("node-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CrashControlPlane(); err != nil {
		t.Fatal(err)
	}
	got := deletes(cs)
	for _, name := range []string{"ztunnel-b", "istio-cni-node-a", "istiod-x"} {
		if g, ok := got[name]; !ok || g == nil || *g != 0 {
			t.Errorf("pod %s: deleted %v with grace %v, want deleted with grace 0", name, ok, g)
		}
	}
	for _, name := range []string{"ztunnel-a", "istio-cni-node-b"} {
		if _, ok := got[name]; ok {
			t.Errorf("pod %s of the other node deleted", name)
		}
	}
	if _, err := d.CrashNodeProxy("node-3"); err == nil {
		t.Error("a node no cluster node plays: no error")
	}
}

// The graceful restart deletes the old ztunnel with its own grace period
// and is ready once the DaemonSet's new pod on the node is.
func TestIstioNodeProxyRestartWaitsForTheNewZtunnel(t *testing.T) {
	cs := fake.NewSimpleClientset(istioPods()...)
	d := &istioDataPlane{b: &Backend{Client: cs}, ns: "istio-system", real: map[string]string{"node-1": "w1", "node-2": "w2"}, logf: t.Logf}
	// The DaemonSet controller: a new pod on w2, Ready a little later.
	go func() {
		time.Sleep(300 * time.Millisecond)
		p := istioPods()[1].(*corev1.Pod).DeepCopy()
		p.Name, p.UID = "ztunnel-c", "zc"
		_, _ = cs.CoreV1().Pods("istio-system").Create(context.Background(), p, metav1.CreateOptions{})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	started, ready, stopped, done, err := d.RestartNodeProxy(ctx, "node-2")
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := deletes(cs)["ztunnel-b"]; !ok || g != nil {
		t.Errorf("old ztunnel deleted %v with grace %v, want deleted with its own grace period (nil)", ok, g)
	}
	if ready.Sub(started) < 250*time.Millisecond || stopped != started {
		t.Errorf("started %v, ready %v, stopped %v: want ready once the new pod is, stopped at the SIGTERM", started, ready, stopped)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("done not closed though the old pod is gone")
	}
}

func TestIstioControlPlaneHeldDown(t *testing.T) {
	cs := fake.NewSimpleClientset(istioPods()...)
	d := &istioDataPlane{b: &Backend{Client: cs}, ns: "istio-system", logf: t.Logf}
	if _, err := d.StopControlPlane(); err != nil {
		t.Fatal(err)
	}
	dep, err := cs.AppsV1().Deployments("istio-system").Get(context.Background(), "istiod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 0 {
		t.Errorf("istiod replicas %d after the stop, want 0", *dep.Spec.Replicas)
	}
	if _, err := d.podOn(context.Background(), istiodSelector, ""); err == nil {
		t.Error("an istiod pod left after the stop")
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, _ = cs.CoreV1().Pods("istio-system").Create(context.Background(), istioPods()[4].(*corev1.Pod), metav1.CreateOptions{})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.StartControlPlane(ctx); err != nil {
		t.Fatal(err)
	}
	dep, _ = cs.AppsV1().Deployments("istio-system").Get(context.Background(), "istiod", metav1.GetOptions{})
	if *dep.Spec.Replicas != 1 {
		t.Errorf("istiod replicas %d after the start, want 1", *dep.Spec.Replicas)
	}
}

func TestWaitRedirectedNamesThePodsIstioCNIHasNotTaken(t *testing.T) {
	mk := func(name, redirected string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "t", Labels: map[string]string{manifests.LabelPartOf: "blastradius"}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if redirected != "" {
			p.Annotations = map[string]string{istioRedirection: redirected}
		}
		return p
	}
	cs := fake.NewSimpleClientset(mk("server-1", "enabled"), mk("client-1", ""))
	b := &Backend{Client: cs}
	_, err := b.waitRedirected(context.Background(), "t", 600*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "client-1") || strings.Contains(err.Error(), "server-1") {
		t.Fatalf("err = %v, want one naming client-1 only", err)
	}
	p := mk("client-1", "enabled")
	if _, err := cs.CoreV1().Pods("t").Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := b.waitRedirected(context.Background(), "t", 2*time.Second)
	if err != nil || n != 2 {
		t.Fatalf("n = %d, err = %v; want 2 redirected", n, err)
	}
}

func TestZtunnelTrialEnvRollsTheDaemonSet(t *testing.T) {
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel", Namespace: "istio-system"},
		Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy",
			Env: []corev1.EnvVar{{Name: "XDS_ADDRESS", Value: "istiod.istio-system.svc:15012"}}}}}}},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, UpdatedNumberScheduled: 3, NumberAvailable: 3, CurrentNumberScheduled: 3}}
	cs := fake.NewSimpleClientset(ds)
	b := &Backend{Client: cs}
	env := func() map[string]string {
		got, err := cs.AppsV1().DaemonSets("istio-system").Get(context.Background(), "ztunnel", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, e := range got.Spec.Template.Spec.Containers[0].Env {
			m[e.Name] = e.Value
		}
		return m
	}
	updates := func() int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "update" && a.GetResource().Resource == "daemonsets" {
				n++
			}
		}
		return n
	}
	pl := scenario.Plan{Mesh: scenario.Mesh{CertTTL: 10 * time.Second, Drain: 3 * time.Second}}
	if err := b.ztunnelEnv(context.Background(), "istio-system", ztunnelTrialEnv(pl), t.Logf); err != nil {
		t.Fatal(err)
	}
	if e := env(); e["SECRET_TTL"] != "10s" || e["CONNECTION_TERMINATION_DEADLINE"] != "3s" || e["XDS_ADDRESS"] == "" {
		t.Errorf("env %v, want SECRET_TTL=10s and CONNECTION_TERMINATION_DEADLINE=3s beside the chart's", e)
	}
	// The same again: nothing to roll.
	n := updates()
	if err := b.ztunnelEnv(context.Background(), "istio-system", ztunnelTrialEnv(pl), t.Logf); err != nil || updates() != n {
		t.Errorf("an unchanged environment rolled the DaemonSet again (%v)", err)
	}
	if err := b.ztunnelEnv(context.Background(), "istio-system", ztunnelTrialEnv(scenario.Plan{}), t.Logf); err != nil {
		t.Fatal(err)
	}
	if e := env(); e["SECRET_TTL"] != "" || e["CONNECTION_TERMINATION_DEADLINE"] != "" || e["XDS_ADDRESS"] == "" {
		t.Errorf("env %v, want both gone again", e)
	}
}

func TestIstioSkipsWhatNeedsEnvoyWithThatReason(t *testing.T) {
	b := &Backend{Istio: &Istio{Namespace: "istio-system"}}
	for _, name := range []string{"waypoint-replica-kill", "waypoint-all-killed"} {
		sc, err := scenario.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if why := scenario.FaultSkip(b, sc, "istio-ambient"); why != "" {
			t.Errorf("%s in istio-ambient where the nodes have Envoy: skipped for %q", name, why)
		}
		pl, err := scenario.PlanFor(sc, "istio-ambient", 450)
		if err != nil {
			t.Fatal(err)
		}
		if why := IstioSkip(pl, b.Istio); why != "" {
			t.Errorf("%s in istio-ambient where the nodes have Envoy: skipped for %q", name, why)
		}
		if why := IstioSkip(pl, &Istio{NoEnvoy: EnvoyUnavailable}); why != EnvoyUnavailable {
			t.Errorf("%s in istio-ambient without Envoy: %q, want the Envoy reason", name, why)
		}
		if why := scenario.FaultSkip(b, sc, "ambient"); strings.Contains(why, "Envoy") {
			t.Errorf("%s in the reference's ambient: skip %q names Envoy", name, why)
		}
	}
	sc, _ := scenario.Lookup("node-crash")
	pl, err := scenario.PlanFor(sc, "istio-sidecar", 450)
	if err != nil {
		t.Fatal(err)
	}
	if why := IstioSkip(pl, b.Istio); why != "" {
		t.Errorf("node-crash in istio-sidecar where the nodes pull Envoy: skipped for %q", why)
	}
	if why := IstioSkip(pl, &Istio{NoEnvoy: EnvoyUnavailable}); why != EnvoyUnavailable {
		t.Errorf("node-crash in istio-sidecar without Envoy: %q, want the sidecar reason", why)
	}
	ce, _ := scenario.Lookup("cert-expiry")
	if pl, err := scenario.PlanFor(ce, "istio-sidecar", 450); err != nil || IstioSkip(pl, b.Istio) != sidecarCertTTLReason {
		t.Errorf("cert-expiry in istio-sidecar: %q (%v), want skipped: the sidecars' lifetime is not set", IstioSkip(pl, b.Istio), err)
	}
	if pl, _ := scenario.PlanFor(sc, "istio-ambient", 450); IstioSkip(pl, &Istio{NoEnvoy: EnvoyUnavailable}) != "" {
		t.Errorf("node-crash in istio-ambient skipped: %q", IstioSkip(pl, b.Istio))
	}
}

// appPod is a trial pod as its Deployment leaves it, with or without
// istiod's sidecar.
func appPod(name, plan, uid string, injected, ready bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "trial", UID: types.UID(uid),
			Labels: map[string]string{manifests.LabelPartOf: "blastradius", manifests.LabelPod: plan}, CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))},
		Spec:   corev1.PodSpec{NodeName: "w1", Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.9"},
	}
	if ready {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	}
	if injected {
		p.Annotations = map[string]string{istioSidecarStatus: `{"containers":["istio-proxy"]}`}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: istioProxyContainer})
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: istioProxyContainer, Ready: ready}}
	}
	return p
}

// Load starts in sidecar mode only once every pod runs istiod's sidecar.
func TestIstioSidecarWaitsForEveryPodInjected(t *testing.T) {
	cs := fake.NewClientset(appPod("server-a", "server-n1", "s1", true, true), appPod("client-b", "client", "c1", false, true))
	b := &Backend{Client: cs}
	_, err := b.waitInjected(t.Context(), "trial", 600*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "client-b") || strings.Contains(err.Error(), "server-a") {
		t.Fatalf("one pod without its sidecar: %v, want an error naming it alone", err)
	}
	if _, err := cs.CoreV1().Pods("trial").Update(t.Context(), appPod("client-b", "client", "c1", true, true), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, err := b.waitInjected(t.Context(), "trial", 2*time.Second)
	if err != nil || n != 2 {
		t.Fatalf("every pod injected: %d, %v", n, err)
	}
}

// A sidecar upgrade restarts the pod: deleted with its own grace period
// (Envoy drains), stopped once gone, ready once the Deployment's new pod
// runs its sidecar and is Ready.
func TestIstioRestartAppPodWaitsForTheInjectedReplacement(t *testing.T) {
	cs := fake.NewClientset(appPod("server-a", "server-n1", "s1", true, true))
	d := &istioDataPlane{b: &Backend{Client: cs}, ns: "istio-system", trialNS: "trial", sidecar: true, logf: t.Logf}
	go func() {
		// The Deployment's new pod: first without a ready sidecar.
		time.Sleep(200 * time.Millisecond)
		cs.CoreV1().Pods("trial").Create(context.Background(), appPod("server-b", "server-n1", "s2", true, false), metav1.CreateOptions{})
		time.Sleep(300 * time.Millisecond)
		cs.CoreV1().Pods("trial").Update(context.Background(), appPod("server-b", "server-n1", "s2", true, true), metav1.UpdateOptions{})
	}()
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	stopped, ready, err := d.RestartAppPod(ctx, "server-n1")
	if err != nil {
		t.Fatal(err)
	}
	if g := deletes(cs)["server-a"]; g != nil {
		t.Errorf("deleted with grace period %d, want the pod's own", *g)
	}
	if stopped.Before(t0) || ready.Sub(t0) < 450*time.Millisecond || ready.Before(stopped) {
		t.Errorf("stopped %s, ready %s after the start: want ready once the new pod's sidecar is", stopped.Sub(t0), ready.Sub(t0))
	}
}

// What a trial's fault left of Istio is put back and waited for before the
// next trial: istiod held down is scaled up again, and a DaemonSet not
// ready again stops the run with what is not ready.
func TestIstioHealBringsIstiodBackAndWaits(t *testing.T) {
	zero := int32(0)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "istiod", Namespace: "istio-system"}, Spec: appsv1.DeploymentSpec{Replicas: &zero},
		Status: appsv1.DeploymentStatus{AvailableReplicas: 1, UpdatedReplicas: 1}}
	ds := func(name string, ready int32) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "istio-system"},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, NumberReady: ready, UpdatedNumberScheduled: 3}}
	}
	cs := fake.NewSimpleClientset(dep, ds("istio-cni-node", 3), ds("ztunnel", 3))
	b := &Backend{Client: cs, Istio: &Istio{Namespace: "istio-system"}}
	if err := b.istioHeal(context.Background(), t.Logf); err != nil {
		t.Fatal(err)
	}
	got, _ := cs.AppsV1().Deployments("istio-system").Get(context.Background(), "istiod", metav1.GetOptions{})
	if got.Spec.Replicas == nil || *got.Spec.Replicas != 1 {
		t.Errorf("istiod replicas %v after the heal, want 1", got.Spec.Replicas)
	}
	cs2 := fake.NewSimpleClientset(dep, ds("istio-cni-node", 3), ds("ztunnel", 2))
	b2 := &Backend{Client: cs2, Istio: &Istio{Namespace: "istio-system"}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := b2.istioHeal(ctx, t.Logf)
	if err == nil || !strings.Contains(err.Error(), "ztunnel (2/3 ready)") {
		t.Fatalf("err = %v, want one saying ztunnel is 2/3 ready", err)
	}
}

// The reference control plane's CA root comes from a Secret the trial
// makes: a pod that replaces it signs with the same root.
func TestControlPlaneCASecretHoldsARoot(t *testing.T) {
	sec, err := controlPlaneCA("blastradius-ambient", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sec.GetKind() != "Secret" || sec.GetName() != manifests.ControlPlaneCASecret || sec.GetNamespace() != "blastradius-ambient" {
		t.Fatalf("%s %s/%s", sec.GetKind(), sec.GetNamespace(), sec.GetName())
	}
	data, _, _ := unstructuredStrings(sec, "stringData")
	if _, err := ca.Load("cluster.local", time.Hour, []byte(data["root-cert.pem"]), []byte(data["root-key.pem"])); err != nil {
		t.Fatalf("the Secret's root does not load as a CA: %v", err)
	}
}

// Certificate expiries on Kubernetes come from the proxies' admin ports,
// the earliest per identity.
func TestReferenceCertExpiriesFromTheProxies(t *testing.T) {
	pod := func(name, plan string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{manifests.LabelPartOf: "blastradius", manifests.LabelPod: plan}},
			Spec: corev1.PodSpec{NodeName: "w1"}, Status: corev1.PodStatus{PodIP: "10.0.0.1", Phase: corev1.PodRunning}}
	}
	cs := fake.NewSimpleClientset(pod("zt-1", "ztunnel"), pod("cp-1", "controlplane"))
	t1 := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	var asked []string
	b := &Backend{Client: cs, Nodes: []string{"w1"}, Admin: func(ctx context.Context, ns, p string, port int, path string) ([]byte, error) {
		asked = append(asked, p+path)
		return []byte(`{"certificates":{"spiffe://cluster.local/ns/ns/sa/server-n1":"` + t1.Format(time.RFC3339) + `"}}`), nil
	}}
	d := &dataPlane{b: b, ns: "ns", mode: "ambient"}
	got, err := d.CertExpiries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !got["spiffe://cluster.local/ns/ns/sa/server-n1"].Equal(t1) || len(asked) != 1 || asked[0] != "zt-1/config_dump" {
		t.Errorf("expiries %v from %v, want server-n1's from the node proxy only", got, asked)
	}
}

func unstructuredStrings(u interface{ UnstructuredContent() map[string]any }, field string) (map[string]string, bool, error) {
	m, ok := u.UnstructuredContent()[field].(map[string]any)
	out := map[string]string{}
	for k, v := range m {
		out[k], _ = v.(string)
	}
	return out, ok, nil
}

// A roll through the DaemonSet's controller: every node's old ztunnel is
// reported stopped only after its new one is Ready, and gone once deleted.
func TestRollDaemonSetFollowsTheController(t *testing.T) {
	objs := istioPods()
	objs = append(objs, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ztunnel", Namespace: "istio-system"}})
	cs := fake.NewSimpleClientset(objs...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The controller, surging: per node a new pod, Ready, then the old
	// one deleted.
	go func() {
		for {
			ds, err := cs.AppsV1().DaemonSets("istio-system").Get(ctx, "ztunnel", metav1.GetOptions{})
			if err == nil && ds.Spec.Template.Annotations[rollAnnotation] != "" {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, n := range []struct{ node, old, uid string }{{"w1", "ztunnel-a", "na"}, {"w2", "ztunnel-b", "nb"}} {
			p := istioPods()[0].(*corev1.Pod).DeepCopy()
			p.Name, p.UID, p.Spec.NodeName = n.old+"-new", types.UID(n.uid), n.node
			_, _ = cs.CoreV1().Pods("istio-system").Create(ctx, p, metav1.CreateOptions{})
			time.Sleep(300 * time.Millisecond)
			_ = cs.CoreV1().Pods("istio-system").Delete(ctx, n.old, metav1.DeleteOptions{})
			time.Sleep(300 * time.Millisecond)
		}
	}()
	d := &istioDataPlane{b: &Backend{Client: cs}, ns: "istio-system", real: map[string]string{"node-1": "w1", "node-2": "w2"}, logf: t.Logf}
	type ev struct {
		node      string
		at, ready time.Time
	}
	var stops []ev
	gones := map[string]time.Time{}
	err := d.RollNodeProxies(ctx, []string{"node-1", "node-2"},
		func(node string, at, ready time.Time) { stops = append(stops, ev{node, at, ready}) },
		func(node string, at time.Time) { gones[node] = at })
	if err != nil {
		t.Fatal(err)
	}
	if len(stops) != 2 || stops[0].node != "node-1" || stops[1].node != "node-2" {
		t.Fatalf("stops %+v, want node-1 then node-2", stops)
	}
	for _, s := range stops {
		if s.ready.After(s.at) || !gones[s.node].After(s.ready) {
			t.Errorf("%s: new ready %v, old stopped %v, gone %v: want ready before stopped, gone after", s.node, s.ready, s.at, gones[s.node])
		}
	}
	if stops[1].at.Sub(stops[0].at) < 400*time.Millisecond {
		t.Errorf("node-2 stopped %v after node-1: the roll went faster than the controller", stops[1].at.Sub(stops[0].at))
	}
}
