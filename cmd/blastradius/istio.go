//go:build !nokube

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"blastradius.dev/blastradius/framework/cluster/localk8s"
	"blastradius.dev/blastradius/framework/istio/istioinstall"
	"blastradius.dev/blastradius/framework/kubetrial"
	"blastradius.dev/blastradius/framework/results"
	"blastradius.dev/blastradius/internal/oneline"
	"blastradius.dev/blastradius/manifests"
)

// istioReadyTimeout bounds each part of Istio's install.
const istioReadyTimeout = 3 * time.Minute

// istioOptions are the values the run sets on Istio's charts, and the
// images built here it loads (none where upstream's are pulled).
func istioOptions(f *runFlags) (istioinstall.Options, []istioinstall.Built, bool, error) {
	o := istioinstall.Options{ProxyImage: f.istioProxyImage}
	dir := f.istioImages
	if dir == "" && f.provider == "local-k8s" {
		dir = defaultIstioImages
	}
	var built []istioinstall.Built
	if dir != "" {
		m, err := istioinstall.ReadBuilt(dir)
		if err != nil {
			return o, nil, false, err
		}
		for _, p := range []string{istioinstall.PartIstiod, istioinstall.PartCNI} {
			built = append(built, m[p])
		}
		o.PilotImage, o.CNIImage = m[istioinstall.PartIstiod].Reference, m[istioinstall.PartCNI].Reference
		// Loaded into the nodes: never pulled.
		o.PullPolicy = "IfNotPresent"
	}
	standIn := false
	switch {
	case f.ztunnelImage != "":
		o.ZtunnelImage = f.ztunnelImage
		standIn = f.ztunnelImage == f.image
	case f.provider == "local-k8s":
		// No registry: the tool's ztunnel-compatible proxy, from the
		// image the run loads anyway (the chart runs it as `proxy ztunnel`).
		o.ZtunnelImage, standIn = f.image, true
		o.PullPolicy = "IfNotPresent"
	}
	if f.provider == "local-k8s" {
		o.CNIBinDir, o.CNIConfDir = localk8s.CNIBinDir, localk8s.CNIConfDir
	}
	return o, built, standIn, nil
}

// noEnvoy says why Istio's sidecars and waypoints cannot run on the run's
// cluster ("" if they can): local-k8s's nodes reach no registry, so
// without a proxy image named for them they have no Envoy.
func noEnvoy(f *runFlags) string {
	if f.provider == "local-k8s" && f.istioProxyImage == "" {
		return kubetrial.EnvoyUnavailable
	}
	return ""
}

// installIstio installs Istio's ambient mesh for the run's istio-* modes
// and returns its uninstall. Images built here are loaded into the nodes
// first (load: the provider's loader; nil where nodes pull).
func installIstio(ctx context.Context, f *runFlags, b *kubetrial.Backend, load func(context.Context, string) error, logf func(string, ...any)) (func(), error) {
	o, built, standIn, err := istioOptions(f)
	if err != nil {
		return nil, err
	}
	if sv, err := b.Client.Discovery().ServerVersion(); err == nil {
		o.KubeVersion = sv.GitVersion
	}
	parts, err := istioinstall.Render(o)
	if err != nil {
		return nil, err
	}
	if len(built) > 0 {
		if load == nil {
			return nil, fmt.Errorf("--istio-images: the %s provider cannot load images into its nodes; push them to a registry the nodes reach instead", f.provider)
		}
		for _, bi := range built {
			logf("istio: loading %s (%s) into the nodes", bi.Reference, bi.Archive)
			if err := load(ctx, bi.Archive); err != nil {
				return nil, err
			}
		}
	}
	imgs, err := o.Images()
	if err != nil {
		return nil, err
	}
	what := "upstream ztunnel"
	if standIn {
		what = "the tool's ztunnel-compatible proxy"
	}
	logf("istio: installing the pinned charts (profile ambient): istiod %s, istio-cni %s, ztunnel %s (%s), sidecar %s", imgs[istioinstall.PartIstiod], imgs[istioinstall.PartCNI], imgs[istioinstall.PartZtunnel], what, imgs[istioinstall.Sidecar])
	c := istioinstall.Cluster{Client: b.Client, Dynamic: b.Dynamic, Mapper: b.Mapper, Logf: logf}
	uninstall := func() {
		saveIstioLogs(b, filepath.Join(f.out, "istio-logs"), logf)
		if os.Getenv("BLASTRADIUS_KEEP_ISTIO") == "1" {
			logf("istio: kept installed (BLASTRADIUS_KEEP_ISTIO); the next run with --mesh istio applies over it")
			return
		}
		logf("istio: uninstalling")
		t0 := time.Now()
		if err := istioinstall.Uninstall(context.Background(), c, parts, istioReadyTimeout); err != nil {
			logf("istio: %s", oneline.Fold(err.Error(), 0))
			return
		}
		logf("istio: uninstalled in %s: no object of its charts left", time.Since(t0).Round(100*time.Millisecond))
	}
	t0 := time.Now()
	// local-k8s runs no cluster DNS (docs/local-k8s.md).
	io := istioinstall.InstallOptions{ReadyTimeout: istioReadyTimeout, NoClusterDNS: f.provider == "local-k8s"}
	if err := istioinstall.Install(ctx, c, parts, io); err != nil {
		uninstall()
		return nil, err
	}
	logf("istio: installed and ready in %s", time.Since(t0).Round(100*time.Millisecond))
	b.Istio = &kubetrial.Istio{Namespace: istioinstall.Namespace, StandIn: standIn, NoEnvoy: noEnvoy(f)}
	f.images = runningImages(ctx, b, built, standIn, logf)
	return uninstall, nil
}

// saveIstioLogs writes the logs of every container of Istio's pods (and
// of the ones before a restart) into dir, before the uninstall removes
// them: what istiod, istio-cni and ztunnel said during the run is kept
// with its results.
func saveIstioLogs(b *kubetrial.Backend, dir string, logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := b.Client.CoreV1().Pods(istioinstall.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		logf("istio: logs: %v", err)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		logf("istio: logs: %v", err)
		return
	}
	n := 0
	for _, p := range list.Items {
		for _, c := range p.Spec.Containers {
			for _, previous := range []bool{true, false} {
				raw, err := b.Client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, Previous: previous}).DoRaw(ctx)
				if err != nil || len(raw) == 0 {
					continue
				}
				name := p.Name + "." + c.Name
				if previous {
					name += ".previous"
				}
				if err := os.WriteFile(filepath.Join(dir, name+".log"), raw, 0o644); err != nil {
					logf("istio: logs: %v", err)
					return
				}
				n++
			}
		}
	}
	logf("istio: %d container logs of istiod, istio-cni and ztunnel saved in %s", n, dir)
}

// dryRunIstio prints what a run installs of Istio: the charts and their
// version, the images, the values the tool sets on each chart, the order
// and the waits, and the uninstall. It reads files only.
func dryRunIstio(w io.Writer, f *runFlags) error {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	o, built, standIn, err := istioOptions(f)
	if err != nil {
		return err
	}
	imgs, err := o.Images()
	if err != nil {
		return err
	}
	vals, err := o.Values()
	if err != nil {
		return err
	}
	parts, err := istioinstall.Render(o)
	if err != nil {
		return err
	}
	p("")
	p("istio (--mesh istio: the istio-* modes)")
	p("  charts       base, istio-control/istio-discovery, istio-cni, ztunnel of istio.io/istio %s (embedded in this binary), rendered by Helm's engine;", istioVersion())
	p("               before them the Gateway API CRDs GatewayClass and Gateway (gateway-api %s, standard channel, embedded), for waypoints; a cluster's own are kept", istioinstall.GatewayAPIVersion)
	p("  images")
	for _, part := range []string{istioinstall.PartIstiod, istioinstall.PartCNI, istioinstall.PartZtunnel, istioinstall.Sidecar} {
		how := "pulled by the nodes"
		if part == istioinstall.Sidecar {
			how = "injected by istiod into the istio-sidecar pods, and run as the istio-ambient waypoints, pulled by the nodes"
			if why := noEnvoy(f); why != "" {
				how = "not run here (istio-sidecar and the waypoint cells are skipped)"
			}
		}
		if i := slices.IndexFunc(built, func(b istioinstall.Built) bool { return b.Part == part }); i >= 0 {
			how = "loaded from " + built[i].Archive + " (make istio-images)"
		}
		if part == istioinstall.PartZtunnel && standIn {
			how = "the tool's ztunnel-compatible proxy, the pods' image (loaded)"
		}
		p("    %-10s %s  %s", part, imgs[part], how)
	}
	p("  install      in istio-system, server-side apply (strict), part by part, each waited for at most %s:", istioReadyTimeout)
	for i, part := range parts {
		if part.Name == istioinstall.PartGatewayAPI {
			p("    %d. %-9s %s, %d CRDs, as released", i+1, part.Name, part.Chart, len(part.Objects))
			continue
		}
		p("    %d. %-9s chart %s, %d objects; values:", i+1, part.Name, part.Chart, len(part.Objects))
		y, err := yaml.Marshal(vals[part.Name])
		if err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimRight(string(y), "\n"), "\n") {
			p("         %s", line)
		}
	}
	if f.provider == "local-k8s" {
		p("  no DNS       local-k8s runs no cluster DNS: the ztunnel pods get istiod's Service address under its names (hostAliases)")
	}
	p("  per trial    istio-ambient: the workloads of mode none in namespace %s labelled istio.io/dataplane-mode=ambient; load starts once istio-cni annotated every pod ambient.istio.io/redirection=enabled and a %s probe of every flow crossed HBONE (ztunnel's counters)", manifests.Namespace("istio-ambient"), "2s")
	p("               istio-ambient with mesh.waypoint: the service labelled istio.io/use-waypoint=waypoint and a Gateway of class istio-waypoint (its overlay pins the replicas to node-1..N); istiod makes its Deployment (the sidecar image), scaled to mesh.waypoint.replicas and waited for as Ready")
	p("               istio-sidecar: the workloads of mode none in namespace %s labelled istio-injection=enabled; load starts once every pod carries istiod's sidecar (annotation sidecar.istio.io/status, istio-proxy ready)", manifests.Namespace("istio-sidecar"))
	p("  on exit      the logs of istiod, istio-cni and ztunnel saved in <results>/istio-logs, then every object of the charts deleted and waited for")
	return nil
}

// runningImages are the images Istio's pods run, as their kubelets report
// them (image ID, i.e. digest), with the manifest digests of those built
// here.
func runningImages(ctx context.Context, b *kubetrial.Backend, built []istioinstall.Built, standIn bool, logf func(string, ...any)) []results.Image {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := b.Client.CoreV1().Pods(istioinstall.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		logf("istio: images: %v", err)
		return nil
	}
	roles := map[string]string{"istiod": istioinstall.PartIstiod, "ztunnel": istioinstall.PartZtunnel}
	seen := map[string]bool{}
	var out []results.Image
	for _, p := range list.Items {
		role := roles[p.Labels["app"]]
		if p.Labels["k8s-app"] == "istio-cni-node" {
			role = istioinstall.PartCNI
		}
		if role == "" {
			continue
		}
		for _, cs := range p.Status.ContainerStatuses {
			key := role + " " + cs.Image + " " + cs.ImageID
			if seen[key] || cs.ImageID == "" {
				continue
			}
			seen[key] = true
			img := results.Image{Role: role, Ref: cs.Image, ID: cs.ImageID, StandIn: standIn && role == istioinstall.PartZtunnel}
			if i := slices.IndexFunc(built, func(bi istioinstall.Built) bool { return bi.Part == role }); i >= 0 {
				img.Digest = built[i].Digest
			}
			if _, d, ok := strings.Cut(cs.ImageID, "@"); ok && img.Digest == "" {
				img.Digest = d // pulled from a registry: the manifest digest
			}
			out = append(out, img)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Role < out[j].Role })
	for _, im := range out {
		logf("istio: %s runs %s (%s)", im.Role, im.Ref, im.ID)
	}
	return out
}

// istioVersion is the istio.io/istio version this binary embeds (its
// charts), as the build recorded it.
func istioVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "istio.io/istio" {
				return d.Version
			}
		}
	}
	return "(unknown)"
}
