package localk8s

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"blastradius.dev/blastradius/internal/k8sversion"
)

// testBinDir is where `make k8s-bins` puts the binaries, relative to
// this package; BLASTRADIUS_K8S_BIN_DIR overrides it.
func testBinDir() string {
	if d := os.Getenv("BLASTRADIUS_K8S_BIN_DIR"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", ".cache", "k8s", k8sversion.Version)
}

func TestNodeNames(t *testing.T) {
	for i := 1; i <= MaxNodes; i++ {
		if got := NodeIndex(NodeName(i)); got != i {
			t.Errorf("NodeIndex(%s) = %d", NodeName(i), got)
		}
		if i > 1 && NodeName(i-1) >= NodeName(i) {
			t.Errorf("%s does not sort before %s", NodeName(i-1), NodeName(i))
		}
	}
	for _, bad := range []string{"", "lk-node-", "lk-node-01", "node-1", "lk-node-x"} {
		if NodeIndex(bad) != 0 {
			t.Errorf("NodeIndex(%q) != 0", bad)
		}
	}
}

// componentNames are the process names of everything a cluster runs; the
// test checks that Down leaves none that were not there before Up.
var componentNames = map[string]bool{
	"etcd": true, "kube-apiserver": true, "kube-controller": true, "kube-scheduler": true,
	"kubelet": true, "kube-proxy": true, "containerd": true, "containerd-shim": true, "pause": true,
	"lk-node-init": true,
}

func componentPids(t *testing.T) map[int]string {
	out := map[int]string{}
	for _, pid := range allPids() {
		if pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		comm := strings.TrimSpace(string(b))
		if componentNames[comm] && pidAlive(pid) {
			out[pid] = comm
		}
	}
	return out
}

// TestLocalK8s brings up a real two-node cluster: both nodes Ready, a
// DaemonSet with one pod per node, pod to pod across nodes and through a
// Service, a node crash seen as NotReady, its restart seen as Ready, a
// partition and its healing likewise, and a Down that leaves nothing
// behind.
func TestLocalK8s(t *testing.T) {
	if os.Getenv("BLASTRADIUS_LOCAL_K8S") != "1" {
		t.Skip("slow (a real two-node cluster, about a minute): set BLASTRADIUS_LOCAL_K8S=1 to run it")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, mounts, containerd)")
	}
	binDir := testBinDir()
	if _, err := findBinaries(binDir); err != nil {
		t.Skipf("binaries missing (make k8s-bins, apt-get install containerd runc containernetworking-plugins): %v", err)
	}
	t0 := time.Now()
	before := componentPids(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	tUp := time.Now()
	c, err := Up(ctx, Config{Dir: dir, Nodes: 2, BinDir: binDir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING up (2 nodes): %s", time.Since(tUp).Round(100*time.Millisecond))
	downDone := false
	t.Cleanup(func() {
		if !downDone {
			if err := DownLogf(dir, t.Logf); err != nil {
				t.Error(err)
			}
		}
	})
	if want := []string{"lk-node-1", "lk-node-2"}; strings.Join(c.Nodes, ",") != strings.Join(want, ",") {
		t.Fatalf("nodes %v, want %v", c.Nodes, want)
	}
	for _, n := range c.Nodes {
		if r, err := c.NodeReady(ctx, n); err != nil || r != "True" {
			t.Fatalf("%s Ready=%q %v", n, r, err)
		}
	}
	cs := c.Client()

	// A DaemonSet of the pause image serving HTTP: one pod per node.
	ns := "lk-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "echo"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: new(int64),
					Containers: []corev1.Container{{
						Name: "echo", Image: PauseImage, ImagePullPolicy: corev1.PullNever,
						Args:  []string{"serve", ":8080"},
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
					}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if svc, err = cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tPods := time.Now()
	podOn := waitDaemonPods(ctx, t, c, ns, "app=echo", c.Nodes, 2*time.Minute)
	t.Logf("TIMING daemonset pods Running on both nodes: %s", time.Since(tPods).Round(100*time.Millisecond))
	for i, n := range c.Nodes {
		_, cidr, _ := net.ParseCIDR(podCIDR(i + 1).String())
		if ip := net.ParseIP(podOn[n].Status.PodIP); !cidr.Contains(ip) {
			t.Errorf("pod %s on %s has IP %s, not in the node's %s", podOn[n].Name, n, ip, cidr)
		}
	}

	// From node-1: the pod on node-2 directly, and the Service (kube-proxy).
	target := podOn[c.Nodes[1]]
	runGet(ctx, t, c, ns, "get-pod", c.Nodes[0], fmt.Sprintf("http://%s:8080/", target.Status.PodIP), target.Name)
	runGet(ctx, t, c, ns, "get-svc", c.Nodes[0], fmt.Sprintf("http://%s/", svc.Spec.ClusterIP), "echo-")

	// Crash node-2: NotReady within the grace period plus a margin.
	victim := c.Nodes[1]
	tCrash := time.Now()
	if err := c.Crash(victim); err != nil {
		t.Fatal(err)
	}
	if c.Running(victim) {
		t.Fatalf("%s still running after Crash", victim)
	}
	if err := c.WaitNotReady(ctx, []string{victim}, NodeMonitorGracePeriod+30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING crash -> NotReady: %s", time.Since(tCrash).Round(100*time.Millisecond))
	if r, _ := c.NodeReady(ctx, c.Nodes[0]); r != "True" {
		t.Errorf("%s Ready=%s while %s is down", c.Nodes[0], r, victim)
	}

	tRestart := time.Now()
	if err := c.Restart(victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, []string{victim}, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING restart -> Ready: %s", time.Since(tRestart).Round(100*time.Millisecond))
	tBack := time.Now()
	waitDaemonPods(ctx, t, c, ns, "app=echo", c.Nodes, 2*time.Minute)
	t.Logf("TIMING restarted node's pod Running again: %s", time.Since(tBack).Round(100*time.Millisecond))

	// Partition node-2 (its veth down): NotReady while its processes run;
	// heal: Ready again.
	tPart := time.Now()
	if err := c.Partition(victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitNotReady(ctx, []string{victim}, NodeMonitorGracePeriod+30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING partition -> NotReady: %s", time.Since(tPart).Round(100*time.Millisecond))
	if !c.Running(victim) {
		t.Errorf("%s stopped running while partitioned", victim)
	}
	tHeal := time.Now()
	if err := c.Heal(victim); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, []string{victim}, time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("TIMING heal -> Ready: %s", time.Since(tHeal).Round(100*time.Millisecond))

	// Down, then nothing of the cluster may be left on the machine.
	tDown := time.Now()
	if err := DownLogf(dir, t.Logf); err != nil {
		t.Fatal(err)
	}
	downDone = true
	t.Logf("TIMING down: %s", time.Since(tDown).Round(100*time.Millisecond))
	for pid, comm := range componentPids(t) {
		if _, ok := before[pid]; !ok {
			t.Errorf("process left after Down: %d %s", pid, comm)
		}
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && (strings.HasPrefix(f[1], dir) || strings.HasPrefix(f[1], "/run/netns/"+nodePrefix) || strings.Contains(f[1], cgroupBase)) {
			t.Errorf("mount left after Down: %s", line)
		}
	}
	links, err := exec.Command("ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(links), "\n") {
		if strings.Contains(line, bridgeName) || strings.Contains(line, " "+vethPrefix) {
			t.Errorf("link left after Down: %s", line)
		}
	}
	netnses, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(netnses), nodePrefix) {
		t.Errorf("network namespaces left after Down: %s", netnses)
	}
	if cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupBase); len(cgs) > 0 {
		t.Errorf("cgroups left after Down: %v", cgs)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
		t.Errorf("state file left after Down")
	}
	t.Logf("TIMING test total: %s", time.Since(t0).Round(100*time.Millisecond))
}

// waitDaemonPods waits until each node runs exactly one Running, ready pod
// matching the selector, and returns them by node.
func waitDaemonPods(ctx context.Context, t *testing.T, c *Cluster, ns, selector string, nodes []string, timeout time.Duration) map[string]*corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		list, err := c.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		var pending []string
		byNode := map[string]*corev1.Pod{}
		if err != nil {
			pending = append(pending, err.Error())
		} else {
			count := map[string]int{}
			for i := range list.Items {
				p := &list.Items[i]
				if p.DeletionTimestamp != nil {
					continue
				}
				count[p.Spec.NodeName]++
				if p.Status.Phase == corev1.PodRunning && podReady(p) {
					byNode[p.Spec.NodeName] = p
				}
			}
			for _, n := range nodes {
				if count[n] != 1 || byNode[n] == nil {
					pending = append(pending, fmt.Sprintf("%s: %d pods, running %v", n, count[n], byNode[n] != nil))
				}
			}
		}
		if len(pending) == 0 {
			return byNode
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon pods not Running after %s: %s", timeout, strings.Join(pending, "; "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, cd := range p.Status.Conditions {
		if cd.Type == corev1.PodReady {
			return cd.Status == corev1.ConditionTrue
		}
	}
	return false
}

// runGet runs `pause get url` in a pod on node and checks it succeeds
// and that its log (read through the kubelet) contains want.
func runGet(ctx context.Context, t *testing.T, c *Cluster, ns, name, node, url, want string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:      node,
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "get", Image: PauseImage, ImagePullPolicy: corev1.PullNever,
				Args: []string{"get", url, "30s"},
			}},
		},
	}
	if _, err := c.Client().CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		p, err := c.Client().CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
			logs, lerr := c.Client().CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if p.Status.Phase != corev1.PodSucceeded {
				t.Fatalf("%s on %s: GET %s failed: %s (logs: %s %v)", name, node, url, p.Status.Phase, logs, lerr)
			}
			if lerr != nil || !strings.Contains(string(logs), want) {
				t.Fatalf("%s: logs %q (err %v), want %q", name, logs, lerr, want)
			}
			t.Logf("%s on %s: GET %s -> %s", name, node, url, strings.TrimSpace(string(logs)))
			return
		}
		if time.Now().After(deadline) {
			phase := corev1.PodPhase("?")
			if p != nil {
				phase = p.Status.Phase
			}
			t.Fatalf("%s on %s: not finished after 90s (phase %s, err %v)", name, node, phase, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
