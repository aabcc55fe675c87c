// Package istioinstall renders Istio's own Helm charts for an ambient mesh
// and installs them on a Kubernetes cluster: base (CRDs), istiod
// (istio-control/istio-discovery, profile=ambient), istio-cni
// (profile=ambient) and ztunnel, in the order Istio's Helm install
// documents. The charts are the ones embedded in the pinned istio.io/istio
// module (package istio.io/istio/manifests), the same version the istiod and
// istio-cni binaries are built from, so the render needs no network and can
// never drift from the binaries. Helm's own template engine renders them;
// nothing of Helm's release machinery (storage, hooks, repositories) is used:
// the tool applies the rendered objects with server-side apply and removes
// them itself.
package istioinstall

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	commonutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/loader/archive"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	loaderv2 "helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	istiomanifests "istio.io/istio/manifests"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"blastradius.dev/blastradius/internal/k8sversion"
)

// Namespace is where Istio's control plane, node agent and node proxy run.
const Namespace = "istio-system"

// The pod annotation istio-cni sets once it has redirected a pod's traffic
// to the node proxy, and the namespace label that enrolls a namespace's pods
// in the ambient mesh.
const (
	RedirectionAnnotation = "ambient.istio.io/redirection"
	RedirectionEnabled    = "enabled"
	DataplaneModeLabel    = "istio.io/dataplane-mode"
	DataplaneModeAmbient  = "ambient"
)

// Parts of the install, in the order they are applied.
const (
	PartBase    = "base"
	PartIstiod  = "istiod"
	PartCNI     = "istio-cni"
	PartZtunnel = "ztunnel"
)

// Sidecar names the image istiod's injector gives pods in sidecar mode
// (proxyv2: pilot-agent and Envoy) among Images. It is no chart of its
// own: istio-discovery's value global.proxy.image.
const Sidecar = "sidecar"

// Options are what the tool sets on Istio's charts. Everything else keeps
// the chart's default, so the install is the one Istio's documentation
// describes for `helm install ... --set profile=ambient`.
type Options struct {
	// Images, as full references. Empty: the chart's own default
	// (Istio's published build for the chart's hub and tag). ProxyImage is
	// the sidecar's (proxyv2), which istiod injects.
	PilotImage, CNIImage, ZtunnelImage, ProxyImage string
	// PullPolicy is every Istio container's imagePullPolicy: IfNotPresent
	// for images loaded into the nodes beforehand; empty keeps the chart's.
	PullPolicy string
	// The provider's CNI directories on its nodes, where istio-cni installs
	// its plugin and chains its configuration. Empty: the chart's
	// (/opt/cni/bin, /etc/cni/net.d: kind's and most clusters').
	CNIBinDir, CNIConfDir string
	// CertTTL, when set, is the workload certificate lifetime istiod issues
	// (its default and maximum), for scenarios that outlast it.
	CertTTL time.Duration
	// KubeVersion is the cluster's, for the charts' version checks
	// (default: the version the tool is built against).
	KubeVersion string
}

// Part is one chart's rendered objects.
type Part struct {
	Name  string // PartBase, ...
	Chart string // the chart's folder in Istio's manifests/charts
	// Values are what the tool set on the chart (the chart merges its
	// defaults and profile under them).
	Values  map[string]any
	Objects []*unstructured.Unstructured
}

// ChartDefaults is what the charts pull without any image option: the hub
// and tag they ship with.
type ChartDefaults struct{ Hub, Tag string }

// Defaults reads the hub and tag istio-discovery's chart ships with.
func Defaults() (ChartDefaults, error) {
	raw, err := fs.ReadFile(istiomanifests.FS, "charts/istio-control/istio-discovery/values.yaml")
	if err != nil {
		return ChartDefaults{}, fmt.Errorf("istio charts: %v", err)
	}
	var v struct {
		D struct {
			Global struct{ Hub, Tag string } `json:"global"`
		} `json:"_internal_defaults_do_not_set"`
	}
	if err := yaml.Unmarshal(raw, &v); err != nil {
		return ChartDefaults{}, fmt.Errorf("istio-discovery values.yaml: %v", err)
	}
	if v.D.Global.Hub == "" || v.D.Global.Tag == "" {
		return ChartDefaults{}, errors.New("istio-discovery values.yaml: no global.hub or global.tag")
	}
	return ChartDefaults{Hub: v.D.Global.Hub, Tag: fmt.Sprint(v.D.Global.Tag)}, nil
}

// Images returns the image references the install runs, by part: the
// options' or the charts' defaults.
func (o Options) Images() (map[string]string, error) {
	d, err := Defaults()
	if err != nil {
		return nil, err
	}
	or := func(s, image string) string {
		if s != "" {
			// The charts take an image option as a full reference only
			// when it has a "/" (else as a name under their hub): a bare
			// name is Docker Hub's library one, spelled out.
			if !strings.Contains(s, "/") {
				s = "docker.io/library/" + s
			}
			return s
		}
		return d.Hub + "/" + image + ":" + d.Tag
	}
	return map[string]string{
		PartIstiod:  or(o.PilotImage, "pilot"),
		PartCNI:     or(o.CNIImage, "install-cni"),
		PartZtunnel: or(o.ZtunnelImage, "ztunnel"),
		Sidecar:     or(o.ProxyImage, "proxyv2"),
	}, nil
}

// Values returns what the tool sets on each chart, by part.
func (o Options) Values() (map[string]map[string]any, error) {
	img, err := o.Images()
	if err != nil {
		return nil, err
	}
	pull := func(v map[string]any) map[string]any {
		if o.PullPolicy != "" {
			v["imagePullPolicy"] = o.PullPolicy
		}
		return v
	}
	istiod := map[string]any{
		"profile": "ambient",
		"image":   img[PartIstiod],
		// The trials own istiod's replica count (the control plane held
		// down is a scale to 0): no autoscaler may change it.
		"autoscaleEnabled": false,
		"replicaCount":     1,
	}
	// The sidecar istiod injects in sidecar mode: a full reference is
	// taken as it is (the injection template's rule), so the image is the
	// one the run names even where the hub and tag differ.
	global := map[string]any{"proxy": map[string]any{"image": img[Sidecar]}}
	if o.PullPolicy != "" {
		global["imagePullPolicy"] = o.PullPolicy
	}
	istiod["global"] = global
	if o.CertTTL > 0 {
		ttl := o.CertTTL.String()
		istiod["env"] = map[string]any{
			"DEFAULT_WORKLOAD_CERT_TTL": ttl,
			"MAX_WORKLOAD_CERT_TTL":     ttl,
		}
	}
	cni := map[string]any{
		"profile": "ambient",
		"image":   img[PartCNI],
		// DNS capture would send every pod's DNS to the node proxy; the
		// trials measure TCP only, and a proxy without a DNS server would
		// break name resolution rather than measure it.
		// IPv6: the clusters here are IPv4 only, and istio-cni refuses to
		// start its ip6tables/nft rules on a node without IPv6.
		"ambient": map[string]any{"dnsCapture": false, "ipv6": false},
	}
	if o.CNIBinDir != "" {
		cni["cniBinDir"] = o.CNIBinDir
	}
	if o.CNIConfDir != "" {
		cni["cniConfDir"] = o.CNIConfDir
	}
	pull(cni)
	if o.PullPolicy != "" {
		cni["global"] = map[string]any{"imagePullPolicy": o.PullPolicy}
	}
	ztunnel := pull(map[string]any{
		"profile": "ambient",
		"image":   img[PartZtunnel],
	})
	return map[string]map[string]any{
		PartBase:    {"profile": "ambient"},
		PartIstiod:  istiod,
		PartCNI:     cni,
		PartZtunnel: ztunnel,
	}, nil
}

// charts are the parts in install order, with their chart folders and
// release names (Istio's documented ones: they name some objects).
var charts = []struct{ part, dir, release string }{
	{PartBase, "base", "istio-base"},
	{PartIstiod, "istio-control/istio-discovery", "istiod"},
	{PartCNI, "istio-cni", "istio-cni"},
	{PartZtunnel, "ztunnel", "ztunnel"},
}

// Render renders every chart with the options' values, after the Gateway
// API CRDs (the part istiod's waypoints need). The base part starts with
// the istio-system Namespace, which Helm would create with
// --create-namespace.
func Render(o Options) ([]Part, error) {
	vals, err := o.Values()
	if err != nil {
		return nil, err
	}
	kv := o.KubeVersion
	if kv == "" {
		kv = k8sversion.Version
	}
	gw, err := gatewayAPICRDs()
	if err != nil {
		return nil, err
	}
	parts := make([]Part, 0, len(charts)+1)
	parts = append(parts, Part{Name: PartGatewayAPI, Chart: "gateway-api " + GatewayAPIVersion + " (standard channel)", Objects: gw})
	for _, c := range charts {
		objs, err := renderChart(c.dir, c.release, vals[c.part], kv)
		if err != nil {
			return nil, fmt.Errorf("render istio chart %s: %v", c.dir, err)
		}
		if c.part == PartBase {
			ns := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "Namespace",
				"metadata": map[string]any{"name": Namespace},
			}}
			objs = append([]*unstructured.Unstructured{ns}, objs...)
		}
		parts = append(parts, Part{Name: c.part, Chart: c.dir, Values: vals[c.part], Objects: objs})
	}
	return parts, nil
}

// renderChart renders one chart from the embedded manifests as `helm
// template` does, CRDs (the chart's crds/ folder) first.
func renderChart(dir, release string, vals map[string]any, kubeVersion string) ([]*unstructured.Unstructured, error) {
	chrt, err := loadChart(istiomanifests.FS, "charts/"+dir)
	if err != nil {
		return nil, err
	}
	caps := *common.DefaultCapabilities
	kv, err := common.ParseKubeVersion(kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("kubernetes version %q: %v", kubeVersion, err)
	}
	caps.KubeVersion = *kv
	rv, err := commonutil.ToRenderValues(chrt, maps.Clone(vals), common.ReleaseOptions{
		Name: release, Namespace: Namespace, IsInstall: true,
	}, &caps)
	if err != nil {
		return nil, fmt.Errorf("values: %v", err)
	}
	files, err := engine.Render(chrt, rv)
	if err != nil {
		return nil, err
	}
	var docs [][]byte
	for _, crd := range chrt.CRDObjects() {
		docs = append(docs, crd.File.Data)
	}
	names := slices.Sorted(maps.Keys(files))
	for _, name := range names {
		if strings.HasSuffix(name, ".txt") { // NOTES.txt
			continue
		}
		docs = append(docs, []byte(files[name]))
	}
	var objs []*unstructured.Unstructured
	for _, d := range docs {
		o, err := decode(d)
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	// Helm's install order by kind, so a ServiceAccount exists before the
	// workloads that run as it and CRDs before anything of theirs.
	sort.SliceStable(objs, func(i, j int) bool { return kindRank(objs[i]) < kindRank(objs[j]) })
	return objs, nil
}

// helmOrder is Helm's InstallOrder (pkg/release/v1/util/kind_sorter.go),
// the kinds Istio's charts render.
var helmOrder = []string{
	"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodSecurityPolicy", "PodDisruptionBudget",
	"ServiceAccount", "Secret", "SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
	"PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleList",
	"ClusterRoleBinding", "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
	"Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
	"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}

func kindRank(o *unstructured.Unstructured) int {
	if i := slices.Index(helmOrder, o.GetKind()); i >= 0 {
		return i
	}
	return len(helmOrder) // unknown kinds last, as Helm does
}

// decode splits a rendered file into objects; empty documents (templates
// whose condition is false) are dropped.
func decode(raw []byte) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("rendered yaml: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("rendered object without apiVersion/kind: %.80q", doc)
		}
		out = append(out, u)
	}
}

// loadChart loads a chart from a file system, as Helm's LoadDir does from
// a folder.
func loadChart(f fs.FS, root string) (*chartv2.Chart, error) {
	var files []*archive.BufferedFile
	err := fs.WalkDir(f, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(f, p)
		if err != nil {
			return err
		}
		files = append(files, &archive.BufferedFile{Name: strings.TrimPrefix(p, root+"/"), Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %v", root, err)
	}
	return loaderv2.LoadFiles(files)
}
