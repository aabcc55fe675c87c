package istioinstall

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
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
	if want := []string{PartBase, PartIstiod, PartCNI, PartZtunnel}; !slices.Equal(names, want) {
		t.Fatalf("parts %v, want %v (Istio's install order)", names, want)
	}
	if first := parts[0].Objects[0]; first.GetKind() != "Namespace" || first.GetName() != Namespace {
		t.Errorf("first object %s/%s, want the Namespace %s", first.GetKind(), first.GetName(), Namespace)
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
