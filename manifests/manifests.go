package manifests

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

//go:embed *.yaml
var files embed.FS

// Labels every rendered object carries, so a run's objects can be listed
// and removed by selector whatever their kind.
const (
	LabelPartOf    = "app.kubernetes.io/part-of"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelMode      = "blastradius.dev/mode"
	// LabelPod names the planned pod (server-n1, client, ...) a pod plays.
	LabelPod = "blastradius.dev/pod"
	// LabelRole is the planned pod's role (server, client, control-client, ...).
	LabelRole = "blastradius.dev/role"
	// LabelNode is the planned node (node-1 ...) a workload is pinned to.
	LabelNode = "blastradius.dev/node"
	// ServiceLabelPrefix + service name marks a pod as a member of that
	// service: a pod can be in several services and selectors cannot OR.
	ServiceLabelPrefix = "svc.blastradius.dev/"
)

// DataplaneModeLabel enrols a namespace in the reference data plane's mode
// (ambient, sidecar): the reference node agent reads it (its
// --enrol-label). Not Istio's labels (istio.io/dataplane-mode,
// istio-injection): Istio installed on the same cluster would take the
// reference's pods (istio-cni redirects them, istiod's webhook injects
// Envoy).
const DataplaneModeLabel = "blastradius.dev/dataplane-mode"

// ControlPlaneCASecret is the Secret the reference control plane reads its
// CA root from (keys root-cert.pem, root-key.pem): made by the run for
// each trial, since it holds a key.
const ControlPlaneCASecret = "controlplane-ca"

// The binary inside the image (one static binary, `make images`).
const Binary = "/blastradius"

// NotBuilt lists subcommands the manifests start that the binary does not
// have yet, with what they are for. The dry run prints them; a test checks
// every other container command is a real subcommand. Empty: the binary has
// every subcommand the manifests run (node-agent and redirect included).
var NotBuilt = map[string]string{}

// Pod is one planned application pod: its name in the trial plan, role and
// node index (1-based).
type Pod struct {
	Name, Role string
	Node       int
}

// Waypoint puts Replicas L7 proxies in front of Service (ambient only).
type Waypoint struct {
	Service  string
	Replicas int
}

// Params says what to render for one trial.
type Params struct {
	Mode  string // none, sidecar, ambient
	Image string // e.g. blastradius:v1.2.3
	// Nodes are the Kubernetes node names playing node-1..node-N.
	Nodes []string
	// Pods are the trial plan's application pods. Roles: server and
	// control-server (a Deployment each, serving), client (the client
	// DaemonSet, one pod per node), control-client (a Deployment, a client
	// agent), spare (a server Deployment scaled to 0 until a drain starts it).
	Pods []Pod
	// Services map a service name to its member pods.
	Services map[string][]string
	Waypoint *Waypoint
	CertTTL  time.Duration // 0: 1h
	Drain    time.Duration // 0: 5s
	// Namespace is the trial's namespace ("": Namespace(Mode)) and
	// NamespaceLabels extra labels on it: Istio's trials render the
	// workloads of mode none into a namespace Istio's label enrols.
	Namespace       string
	NamespaceLabels map[string]string
}

// Namespace is the namespace a mode's trial runs in.
func Namespace(mode string) string { return "blastradius-" + mode }

// templates are the embedded objects decoded into their API types, by
// file then name.
type templates struct {
	namespace  *corev1.Namespace
	server     *appsv1.Deployment
	service    *corev1.Service
	client     *appsv1.DaemonSet
	cpService  *corev1.Service
	cpRegistry *corev1.ConfigMap
	cp         *appsv1.Deployment
	ztunnel    *appsv1.DaemonSet
	ztunnelSA  *corev1.ServiceAccount
	agentRole  *rbacv1.ClusterRole
	agentBind  *rbacv1.ClusterRoleBinding
	wpService  *corev1.Service
	wp         *appsv1.Deployment
	sidecar    *corev1.Pod
}

// Decoded is every embedded document decoded strictly into its API type,
// by file. Tests and Render use it.
func Decoded() (map[string][]runtime.Object, error) {
	names, err := fs.Glob(files, "*.yaml")
	if err != nil {
		return nil, err
	}
	out := map[string][]runtime.Object{}
	for _, name := range names {
		raw, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		objs, err := DecodeStrict(raw)
		if err != nil {
			return nil, fmt.Errorf("manifests/%s: %w", name, err)
		}
		out[name] = objs
	}
	return out, nil
}

// DecodeStrict decodes a multi-document YAML stream into typed objects of
// the kinds the manifests use. Unknown fields, duplicate fields and unknown
// kinds are errors.
func DecodeStrict(raw []byte) ([]runtime.Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	var out []runtime.Object
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var obj runtime.Object
		switch tm.APIVersion + "/" + tm.Kind {
		case "v1/Namespace":
			obj = &corev1.Namespace{}
		case "v1/Service":
			obj = &corev1.Service{}
		case "v1/ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1/Pod":
			obj = &corev1.Pod{}
		case "apps/v1/Deployment":
			obj = &appsv1.Deployment{}
		case "apps/v1/DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "v1/ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		default:
			return nil, fmt.Errorf("document %d: kind %s %q is not one the manifests use", i, tm.APIVersion, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
		out = append(out, obj)
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

func load() (*templates, error) {
	dec, err := Decoded()
	if err != nil {
		return nil, err
	}
	t := &templates{}
	get := func(file, kind, name string) (runtime.Object, error) {
		for _, o := range dec[file] {
			m, _ := o.(metav1.Object)
			if o.GetObjectKind().GroupVersionKind().Kind == kind && m.GetName() == name {
				return o, nil
			}
		}
		return nil, fmt.Errorf("manifests/%s: no %s %q", file, kind, name)
	}
	for _, s := range []struct {
		file, kind, name string
		set              func(runtime.Object)
	}{
		{"namespace.yaml", "Namespace", "blastradius", func(o runtime.Object) { t.namespace = o.(*corev1.Namespace) }},
		{"server.yaml", "Deployment", "server", func(o runtime.Object) { t.server = o.(*appsv1.Deployment) }},
		{"service.yaml", "Service", "echo", func(o runtime.Object) { t.service = o.(*corev1.Service) }},
		{"client.yaml", "DaemonSet", "client", func(o runtime.Object) { t.client = o.(*appsv1.DaemonSet) }},
		{"controlplane.yaml", "Service", "controlplane", func(o runtime.Object) { t.cpService = o.(*corev1.Service) }},
		{"controlplane.yaml", "ConfigMap", "registry", func(o runtime.Object) { t.cpRegistry = o.(*corev1.ConfigMap) }},
		{"controlplane.yaml", "Deployment", "controlplane", func(o runtime.Object) { t.cp = o.(*appsv1.Deployment) }},
		{"nodeproxy.yaml", "DaemonSet", "ztunnel", func(o runtime.Object) { t.ztunnel = o.(*appsv1.DaemonSet) }},
		{"nodeproxy.yaml", "ServiceAccount", "ztunnel", func(o runtime.Object) { t.ztunnelSA = o.(*corev1.ServiceAccount) }},
		{"nodeproxy.yaml", "ClusterRole", "blastradius-node-agent", func(o runtime.Object) { t.agentRole = o.(*rbacv1.ClusterRole) }},
		{"nodeproxy.yaml", "ClusterRoleBinding", "blastradius-node-agent", func(o runtime.Object) { t.agentBind = o.(*rbacv1.ClusterRoleBinding) }},
		{"waypoint.yaml", "Service", "waypoint", func(o runtime.Object) { t.wpService = o.(*corev1.Service) }},
		{"waypoint.yaml", "Deployment", "waypoint", func(o runtime.Object) { t.wp = o.(*appsv1.Deployment) }},
		{"sidecar.yaml", "Pod", "sidecar", func(o runtime.Object) { t.sidecar = o.(*corev1.Pod) }},
	} {
		o, err := get(s.file, s.kind, s.name)
		if err != nil {
			return nil, err
		}
		s.set(o)
	}
	return t, nil
}

// Render returns a trial's objects in apply order: the namespace, the data
// plane's services and configuration before any pod that reads them (pods
// find the control plane through service environment variables, set only
// for services that exist when the pod starts), then the data plane, then
// the applications and their services.
func Render(p Params) ([]*unstructured.Unstructured, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	t, err := load()
	if err != nil {
		return nil, err
	}
	ns := Namespace(p.Mode)
	if p.Namespace != "" {
		ns = p.Namespace
	}
	certTTL, drain := p.CertTTL, p.Drain
	if certTTL <= 0 {
		certTTL = time.Hour
	}
	if drain <= 0 {
		drain = 5 * time.Second
	}
	var objs []runtime.Object

	nsObj := t.namespace.DeepCopy()
	nsObj.Name = ns
	if p.Mode != "none" {
		nsObj.Labels[DataplaneModeLabel] = p.Mode
	}
	for k, v := range p.NamespaceLabels {
		nsObj.Labels[k] = v
	}
	objs = append(objs, nsObj)

	meshed := p.Mode != "none"
	if meshed {
		objs = append(objs, t.cpService.DeepCopy())
		reg := t.cpRegistry.DeepCopy()
		objs = append(objs, reg)
		cp := t.cp.DeepCopy()
		pin(&cp.Spec.Template.Spec, p.Nodes[:1])
		cp.Spec.Template.Labels[LabelNode] = "node-1"
		c := &cp.Spec.Template.Spec.Containers[0]
		setFlag(c, "--cert-ttl", certTTL.String())
		objs = append(objs, cp)
	}
	if p.Mode == "ambient" {
		bind := t.agentBind.DeepCopy()
		bind.Subjects[0].Namespace = ns
		objs = append(objs, t.ztunnelSA.DeepCopy(), t.agentRole.DeepCopy(), bind)
		z := t.ztunnel.DeepCopy()
		pin(&z.Spec.Template.Spec, p.Nodes)
		setFlag(&z.Spec.Template.Spec.Containers[0], "--drain-deadline", drain.String())
		z.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64((drain + 5*time.Second) / time.Second))
		objs = append(objs, z)
		if w := p.Waypoint; w != nil {
			objs = append(objs, t.wpService.DeepCopy())
			d := t.wp.DeepCopy()
			d.Spec.Replicas = ptr(int32(w.Replicas))
			pin(&d.Spec.Template.Spec, p.Nodes)
			setFlag(&d.Spec.Template.Spec.Containers[0], "--drain-deadline", drain.String())
			d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64((drain + 5*time.Second) / time.Second))
			objs = append(objs, d)
		}
	}

	members := map[string][]string{} // pod -> services
	var svcNames []string
	for s, pods := range p.Services {
		svcNames = append(svcNames, s)
		for _, pod := range pods {
			members[pod] = append(members[pod], s)
		}
	}
	sort.Strings(svcNames)
	sidecar := func(spec *corev1.PodSpec) {
		if p.Mode != "sidecar" {
			return
		}
		spec.InitContainers = append(spec.InitContainers, *t.sidecar.Spec.InitContainers[0].DeepCopy())
		sc := t.sidecar.Spec.Containers[0].DeepCopy()
		setFlag(sc, "--drain-deadline", drain.String())
		spec.Containers = append(spec.Containers, *sc)
	}
	clientDone := false
	for _, pod := range p.Pods {
		switch pod.Role {
		case "client":
			// One DaemonSet plays every client-n<i>: one agent per node.
			if clientDone {
				continue
			}
			clientDone = true
			d := t.client.DeepCopy()
			pin(&d.Spec.Template.Spec, p.Nodes)
			d.Spec.Template.Labels[LabelRole] = "client"
			sidecar(&d.Spec.Template.Spec)
			objs = append(objs, d)
		case "server", "control-server", "spare", "control-client":
			d := t.server.DeepCopy()
			d.Name = pod.Name
			d.Labels["app.kubernetes.io/component"] = pod.Role
			d.Spec.Selector.MatchLabels[LabelPod] = pod.Name
			tl := d.Spec.Template.Labels
			tl[LabelPod], tl[LabelRole], tl[LabelNode] = pod.Name, pod.Role, fmt.Sprintf("node-%d", pod.Node)
			tl["app.kubernetes.io/component"] = pod.Role
			for _, s := range members[pod.Name] {
				tl[ServiceLabelPrefix+s] = "member"
			}
			pin(&d.Spec.Template.Spec, p.Nodes[pod.Node-1:pod.Node])
			if pod.Role == "control-client" {
				// A client agent, not a server: same command as the
				// client DaemonSet's.
				c := &d.Spec.Template.Spec.Containers[0]
				cc := t.client.Spec.Template.Spec.Containers[0]
				c.Name, c.Args, c.Ports = cc.Name, slices.Clone(cc.Args), slices.Clone(cc.Ports)
				c.VolumeMounts = slices.Clone(cc.VolumeMounts)
				d.Spec.Template.Spec.Volumes = slices.Clone(t.client.Spec.Template.Spec.Volumes)
			}
			if pod.Role == "spare" {
				// A drain's replacement: it exists from the start (in its
				// services) but runs only once the drain scales it up.
				d.Spec.Replicas = ptr(int32(0))
			}
			sidecar(&d.Spec.Template.Spec)
			objs = append(objs, d)
		default:
			return nil, fmt.Errorf("pod %s: role %q unknown", pod.Name, pod.Role)
		}
	}
	for _, s := range svcNames {
		svc := t.service.DeepCopy()
		svc.Name = s
		svc.Spec.Selector = map[string]string{ServiceLabelPrefix + s: "member"}
		objs = append(objs, svc)
	}

	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		m := o.(metav1.Object)
		switch o.(type) {
		case *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			// Cluster-scoped.
		default:
			m.SetNamespace(ns)
		}
		labels := m.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelPartOf] = "blastradius"
		labels[LabelManagedBy] = "blastradius"
		labels[LabelMode] = p.Mode
		m.SetLabels(labels)
		if spec := podSpec(o); spec != nil {
			for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
				for i := range cs {
					cs[i].Image = p.Image
				}
			}
			if tm := podTemplateMeta(o); tm != nil {
				tm.Labels[LabelMode] = p.Mode
				tm.Labels[LabelPartOf] = "blastradius"
			}
		}
		u, err := toUnstructured(o)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, m.GetName(), err)
		}
		out = append(out, u)
	}
	return out, nil
}

func (p Params) check() error {
	switch p.Mode {
	case "none", "sidecar", "ambient":
	default:
		return fmt.Errorf("mode %q unknown (none, sidecar, ambient)", p.Mode)
	}
	if p.Image == "" || strings.ContainsAny(p.Image, " \t\n") {
		return fmt.Errorf("image %q invalid", p.Image)
	}
	if len(p.Nodes) == 0 {
		return errors.New("no nodes")
	}
	for _, pod := range p.Pods {
		if pod.Node < 1 || pod.Node > len(p.Nodes) {
			return fmt.Errorf("pod %s on node %d: the cluster has nodes 1..%d", pod.Name, pod.Node, len(p.Nodes))
		}
	}
	if w := p.Waypoint; w != nil {
		if p.Mode != "ambient" {
			return fmt.Errorf("a waypoint needs mode ambient, not %s", p.Mode)
		}
		if w.Replicas < 1 {
			return fmt.Errorf("waypoint for %s: %d replicas", w.Service, w.Replicas)
		}
	}
	return nil
}

// pin restricts a pod spec to nodes by required node affinity on the
// hostname label (the template carries one term with one expression).
func pin(spec *corev1.PodSpec, nodes []string) {
	term := &spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0]
	term.MatchExpressions[0].Values = slices.Clone(nodes)
}

// setFlag replaces the value after flag in a container's args.
func setFlag(c *corev1.Container, flag, value string) {
	for i := 0; i+1 < len(c.Args); i++ {
		if c.Args[i] == flag {
			c.Args[i+1] = value
			return
		}
	}
	c.Args = append(c.Args, flag, value)
}

func podSpec(o runtime.Object) *corev1.PodSpec {
	switch v := o.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &v.Spec.Template.Spec
	case *corev1.Pod:
		return &v.Spec
	}
	return nil
}

func podTemplateMeta(o runtime.Object) *metav1.ObjectMeta {
	switch v := o.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template.ObjectMeta
	case *appsv1.DaemonSet:
		return &v.Spec.Template.ObjectMeta
	}
	return nil
}

// toUnstructured converts a typed object for apply, dropping what the
// typed structs always carry but an apply configuration must not claim:
// null fields (creationTimestamp) and the empty status.
func toUnstructured(o runtime.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	prune(m)
	return &unstructured.Unstructured{Object: m}, nil
}

func prune(m map[string]any) {
	for k, v := range m {
		switch vv := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			// Empty maps stay: emptyDir: {} is a volume type.
			prune(vv)
		case []any:
			for _, e := range vv {
				if em, ok := e.(map[string]any); ok {
					prune(em)
				}
			}
		}
	}
}

// Files lists the embedded manifest files.
func Files() []string {
	names, _ := fs.Glob(files, "*.yaml")
	return names
}

// Raw returns an embedded file.
func Raw(name string) ([]byte, error) { return files.ReadFile(path.Clean(name)) }

func ptr[T any](v T) *T { return &v }

// Commands returns each container of a rendered workload as
// "container: binary args...", init containers first, for the dry run.
func Commands(u *unstructured.Unstructured) []string {
	var out []string
	for _, path := range [][]string{
		{"spec", "template", "spec", "initContainers"},
		{"spec", "template", "spec", "containers"},
	} {
		cs, _, _ := unstructured.NestedSlice(u.Object, path...)
		for _, c := range cs {
			cm, _ := c.(map[string]any)
			name, _ := cm["name"].(string)
			var argv []string
			for _, key := range []string{"command", "args"} {
				xs, _ := cm[key].([]any)
				for _, x := range xs {
					s, _ := x.(string)
					argv = append(argv, quoteArg(s))
				}
			}
			out = append(out, name+": "+strings.Join(argv, " "))
		}
	}
	return out
}

func quoteArg(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\"'$()") {
		return "'" + s + "'"
	}
	return s
}
