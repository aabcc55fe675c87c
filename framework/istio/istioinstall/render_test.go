package istioinstall

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"golang.org/x/mod/modfile"
)

// localOptions are what local-k8s sets: its own CNI folders, images loaded
// into its nodes, and a short certificate lifetime.
var localOptions = Options{
	PilotImage:   "localhost/istio/pilot:test",
	CNIImage:     "localhost/istio/install-cni:test",
	ZtunnelImage: "localhost/blastradius-ztunnel:test",
	PullPolicy:   "IfNotPresent",
	CNIBinDir:    "/var/lib/blastradius/cni/bin",
	CNIConfDir:   "/var/lib/cni/net.d",
	CertTTL:      90 * time.Second,
}

func find(t *testing.T, parts []Part, part, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, p := range parts {
		if p.Name != part {
			continue
		}
		for _, o := range p.Objects {
			if o.GetKind() == kind && o.GetName() == name {
				return o
			}
		}
	}
	t.Fatalf("part %s renders no %s/%s", part, kind, name)
	return nil
}

func typed[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &v); err != nil {
		t.Fatalf("%s/%s: %v", u.GetKind(), u.GetName(), err)
	}
	return &v
}

func env(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func hostPaths(spec corev1.PodSpec) []string {
	var out []string
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			out = append(out, v.HostPath.Path)
		}
	}
	return out
}

func TestRenderSetsTheToolsValues(t *testing.T) {
	parts, err := Render(localOptions)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range parts {
		names = append(names, p.Name)
		for _, o := range p.Objects {
			if ns := o.GetNamespace(); ns != "" && ns != Namespace {
				t.Errorf("%s: %s/%s in namespace %s, want %s", p.Name, o.GetKind(), o.GetName(), ns, Namespace)
			}
		}
	}
	if want := []string{PartGatewayAPI, PartBase, PartIstiod, PartCNI, PartZtunnel}; !slices.Equal(names, want) {
		t.Fatalf("parts %v, want %v (the Gateway API's CRDs, then Istio's install order)", names, want)
	}
	if first := parts[1].Objects[0]; first.GetKind() != "Namespace" || first.GetName() != Namespace {
		t.Errorf("base's first object %s/%s, want the Namespace %s", first.GetKind(), first.GetName(), Namespace)
	}
	find(t, parts, PartBase, "CustomResourceDefinition", "authorizationpolicies.security.istio.io")

	istiod := typed[appsv1.Deployment](t, find(t, parts, PartIstiod, "Deployment", "istiod"))
	c := istiod.Spec.Template.Spec.Containers[0]
	e := env(c)
	if c.Image != localOptions.PilotImage || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("istiod image %s (%s), want %s (IfNotPresent)", c.Image, c.ImagePullPolicy, localOptions.PilotImage)
	}
	if e["PILOT_ENABLE_AMBIENT"] != "true" {
		t.Errorf("istiod PILOT_ENABLE_AMBIENT=%q: the ambient profile did not apply", e["PILOT_ENABLE_AMBIENT"])
	}
	for _, k := range []string{"DEFAULT_WORKLOAD_CERT_TTL", "MAX_WORKLOAD_CERT_TTL"} {
		if e[k] != "1m30s" {
			t.Errorf("istiod %s=%q, want 1m30s", k, e[k])
		}
	}
	if istiod.Spec.Replicas == nil || *istiod.Spec.Replicas != 1 {
		t.Errorf("istiod replicas %v, want 1", istiod.Spec.Replicas)
	}
	for _, p := range parts {
		for _, o := range p.Objects {
			if o.GetKind() == "HorizontalPodAutoscaler" {
				t.Errorf("%s renders HorizontalPodAutoscaler/%s: the trials own istiod's replica count", p.Name, o.GetName())
			}
		}
	}

	cm := typed[corev1.ConfigMap](t, find(t, parts, PartCNI, "ConfigMap", "istio-cni-config"))
	for k, want := range map[string]string{"AMBIENT_ENABLED": "true", "AMBIENT_DNS_CAPTURE": "false", "AMBIENT_IPV6": "false"} {
		if cm.Data[k] != want {
			t.Errorf("istio-cni-config %s=%q, want %q", k, cm.Data[k], want)
		}
	}
	cni := typed[appsv1.DaemonSet](t, find(t, parts, PartCNI, "DaemonSet", "istio-cni-node"))
	hp := hostPaths(cni.Spec.Template.Spec)
	for _, d := range []string{localOptions.CNIBinDir, localOptions.CNIConfDir} {
		if !slices.Contains(hp, d) {
			t.Errorf("istio-cni-node mounts host paths %v, want %s among them", hp, d)
		}
	}
	if img := cni.Spec.Template.Spec.Containers[0].Image; img != localOptions.CNIImage {
		t.Errorf("istio-cni image %s, want %s", img, localOptions.CNIImage)
	}

	zt := typed[appsv1.DaemonSet](t, find(t, parts, PartZtunnel, "DaemonSet", "ztunnel"))
	zc := zt.Spec.Template.Spec.Containers[0]
	if zc.Image != localOptions.ZtunnelImage || zc.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("ztunnel image %s (%s), want %s (IfNotPresent)", zc.Image, zc.ImagePullPolicy, localOptions.ZtunnelImage)
	}
	// The node proxy image is run with the chart's arguments: what the
	// stand-in must accept.
	if got := strings.Join(zc.Args, " "); got != "proxy ztunnel" {
		t.Errorf("ztunnel args %q, want \"proxy ztunnel\"", got)
	}
}

func TestRenderDefaultsToTheChartsImages(t *testing.T) {
	d, err := Defaults()
	if err != nil {
		t.Fatal(err)
	}
	if d.Hub == "" || d.Tag == "" {
		t.Fatalf("defaults %+v", d)
	}
	parts, err := Render(Options{})
	if err != nil {
		t.Fatal(err)
	}
	zt := typed[appsv1.DaemonSet](t, find(t, parts, PartZtunnel, "DaemonSet", "ztunnel"))
	if want := d.Hub + "/ztunnel:" + d.Tag; zt.Spec.Template.Spec.Containers[0].Image != want {
		t.Errorf("ztunnel image %s, want the chart's %s", zt.Spec.Template.Spec.Containers[0].Image, want)
	}
	cni := typed[appsv1.DaemonSet](t, find(t, parts, PartCNI, "DaemonSet", "istio-cni-node"))
	for _, d := range []string{"/opt/cni/bin", "/etc/cni/net.d"} {
		if !slices.Contains(hostPaths(cni.Spec.Template.Spec), d) {
			t.Errorf("istio-cni-node without the chart's default host path %s", d)
		}
	}
}

// A bare image name (the tool's own image, blastradius:<version>) is
// spelled out: the charts would put it under their hub otherwise.
func TestRenderSpellsOutABareImageName(t *testing.T) {
	parts, err := Render(Options{ZtunnelImage: "blastradius:v1"})
	if err != nil {
		t.Fatal(err)
	}
	zt := typed[appsv1.DaemonSet](t, find(t, parts, PartZtunnel, "DaemonSet", "ztunnel"))
	if got := zt.Spec.Template.Spec.Containers[0].Image; got != "docker.io/library/blastradius:v1" {
		t.Errorf("ztunnel image %s, want docker.io/library/blastradius:v1", got)
	}
}

func TestRenderRefusesABadKubernetesVersion(t *testing.T) {
	_, err := Render(Options{KubeVersion: "not-a-version"})
	if err == nil || !strings.Contains(err.Error(), "not-a-version") {
		t.Fatalf("err = %v, want one naming the version", err)
	}
}

// istiod's injector takes the sidecar image from its values ConfigMap,
// and a reference with a "/" as it is (its template's rule): the pods of
// the istio-sidecar mode run the image the run names.
func TestRenderGivesTheInjectorTheSidecarImage(t *testing.T) {
	for _, tc := range []struct{ opt, want string }{
		{"registry.example/istio/proxyv2:1.2.3", "registry.example/istio/proxyv2:1.2.3"},
		{"", ""}, // the chart's hub and tag
	} {
		parts, err := Render(Options{ProxyImage: tc.opt})
		if err != nil {
			t.Fatal(err)
		}
		want := tc.want
		if want == "" {
			d, err := Defaults()
			if err != nil {
				t.Fatal(err)
			}
			want = d.Hub + "/proxyv2:" + d.Tag
		}
		cm := typed[corev1.ConfigMap](t, find(t, parts, PartIstiod, "ConfigMap", "istio-sidecar-injector"))
		var vals struct {
			Global struct {
				Proxy struct{ Image string } `json:"proxy"`
			} `json:"global"`
		}
		if err := json.Unmarshal([]byte(cm.Data["values"]), &vals); err != nil {
			t.Fatalf("injector values: %v", err)
		}
		if vals.Global.Proxy.Image != want {
			t.Errorf("injector's sidecar image %q, want %q", vals.Global.Proxy.Image, want)
		}
		if !strings.Contains(cm.Data["config"], `contains "/" (annotation .ObjectMeta `+"`sidecar.istio.io/proxyImage`"+` .Values.global.proxy.image)`) {
			t.Errorf("the injection template no longer takes a full reference as it is")
		}
	}
}

// The Gateway API CRDs come first, are the tool's (its label), and are of
// the release the pinned Istio is built against: the one tools/istio's
// module graph holds.
func TestGatewayAPICRDsMatchTheVersionIstioIsBuiltWith(t *testing.T) {
	raw, err := os.ReadFile("../../../tools/istio/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.Parse("go.mod", raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := ""
	for _, r := range f.Require {
		if r.Mod.Path == "sigs.k8s.io/gateway-api" {
			want = r.Mod.Version
		}
	}
	if want == "" {
		t.Fatal("tools/istio/go.mod requires no sigs.k8s.io/gateway-api")
	}
	if GatewayAPIVersion != want {
		t.Errorf("GatewayAPIVersion %s, Istio is built with gateway-api %s", GatewayAPIVersion, want)
	}
	parts, err := Render(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if parts[0].Name != PartGatewayAPI {
		t.Fatalf("first part %s, want %s", parts[0].Name, PartGatewayAPI)
	}
	var kinds []string
	for _, o := range parts[0].Objects {
		if v := o.GetAnnotations()["gateway.networking.k8s.io/bundle-version"]; v != want {
			t.Errorf("%s: bundle-version %s, want %s", o.GetName(), v, want)
		}
		if ch := o.GetAnnotations()["gateway.networking.k8s.io/channel"]; ch != "standard" {
			t.Errorf("%s: channel %s, want standard", o.GetName(), ch)
		}
		if !ours(o) {
			t.Errorf("%s: no %s=%s label", o.GetName(), ManagedByLabel, ManagedByValue)
		}
		k, _, _ := unstructured.NestedString(o.Object, "spec", "names", "kind")
		kinds = append(kinds, k)
	}
	if !slices.Equal(kinds, []string{"GatewayClass", "Gateway"}) {
		t.Errorf("gateway API kinds %v, want GatewayClass then Gateway", kinds)
	}
}

// The waypoint is Istio's documented one (class istio-waypoint, an HBONE
// listener on 15008, for service traffic), shaped by a deployment overlay
// that pins it to the nodes asked for and sets no replica count.
func TestWaypointObjects(t *testing.T) {
	if _, err := Waypoint("t", nil); err == nil {
		t.Error("a waypoint without nodes was accepted")
	}
	objs, err := Waypoint("t", []string{"kind-worker", "kind-worker2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].GetKind() != "ConfigMap" || objs[1].GetKind() != "Gateway" {
		t.Fatalf("objects %v", objs)
	}
	gw := objs[1]
	class, _, _ := unstructured.NestedString(gw.Object, "spec", "gatewayClassName")
	ref, _, _ := unstructured.NestedString(gw.Object, "spec", "infrastructure", "parametersRef", "name")
	ls, _, _ := unstructured.NestedSlice(gw.Object, "spec", "listeners")
	if class != WaypointClass || ref != objs[0].GetName() || len(ls) != 1 || gw.GetLabels()[waypointForLabel] != "service" {
		t.Errorf("gateway %v", gw.Object)
	}
	l := ls[0].(map[string]any)
	if l["port"] != int64(15008) || l["protocol"] != "HBONE" {
		t.Errorf("listener %v, want HBONE on 15008", l)
	}
	ov, _, _ := unstructured.NestedString(objs[0].Object, "data", "deployment")
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(ov), &d); err != nil {
		t.Fatalf("deployment overlay is no Deployment: %v\n%s", err, ov)
	}
	if d.Spec.Replicas != nil {
		t.Errorf("the overlay sets replicas %d: istiod would undo every scale", *d.Spec.Replicas)
	}
	terms := d.Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	var nodes []string
	for _, term := range terms {
		if len(term.MatchFields) != 1 || term.MatchFields[0].Key != "metadata.name" || len(term.MatchFields[0].Values) != 1 {
			t.Fatalf("node selector term %+v: want one node by metadata.name (a field selector takes one value)", term)
		}
		nodes = append(nodes, term.MatchFields[0].Values[0])
	}
	if !slices.Equal(nodes, []string{"kind-worker", "kind-worker2"}) {
		t.Errorf("node affinity on %v", nodes)
	}
}
