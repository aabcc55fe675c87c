package istiodtest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/workloadapi"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"blastradius.dev/blastradius/framework/cluster/kube/kubetest"
	"blastradius.dev/blastradius/proxy/node"
)

var apiServer kubetest.Shared

func TestMain(m *testing.M) {
	if os.Getenv(envProxy) == "1" {
		os.Exit(node.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(apiServer.Run(m))
}

const addressType = "type.googleapis.com/istio.workload.Address"

// A pod object with the status a kubelet would write reaches a ztunnel-type
// client of the real istiod as a workload over delta xDS.
func TestIstiodServesPodsAsWorkloads(t *testing.T) {
	kube := apiServer.Get(t)
	d := Start(t, kube)
	if b, _ := pem.Decode(d.RootPEM); b == nil {
		t.Fatalf("root is not PEM: %q", d.RootPEM)
	} else if _, err := x509.ParseCertificate(b.Bytes); err != nil {
		t.Fatalf("root: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := kubernetes.NewForConfig(kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo", Labels: map[string]string{"istio.io/dataplane-mode": "ambient"}}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-1", Namespace: "demo", Labels: map[string]string{"app": "echo"},
			Annotations: map[string]string{"ambient.istio.io/redirection": "enabled"}},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "default", Containers: []corev1.Container{{Name: "echo", Image: "echo"}}},
	}
	p, err := cs.CoreV1().Pods("demo").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.3.5", PodIPs: []corev1.PodIP{{IP: "10.244.3.5"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if _, err := cs.CoreV1().Pods("demo").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient(d.XDS, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "ztunnel~10.244.1.2~ztunnel-test.istio-system~istio-system.svc.cluster.local"}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: addressType}); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr("10.244.3.5")
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v; istiod log:\n%s", err, tail(d.Log, 30))
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce}); err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.Resources {
			var a workloadapi.Address
			if err := proto.Unmarshal(r.Resource.GetValue(), &a); err != nil {
				t.Fatalf("%s: %v", r.Name, err)
			}
			w := a.GetWorkload()
			if w == nil {
				continue
			}
			for _, b := range w.Addresses {
				if ip, ok := netip.AddrFromSlice(b); ok && ip == want {
					t.Logf("workload %s: %v", r.Name, w)
					if w.Name != "echo-1" || w.Namespace != "demo" || w.Node != "node-1" || w.TunnelProtocol != workloadapi.TunnelProtocol_HBONE {
						t.Fatalf("workload %v", w)
					}
					return
				}
			}
		}
	}
}
