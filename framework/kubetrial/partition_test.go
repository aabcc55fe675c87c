package kubetrial

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"blastradius.dev/blastradius/framework/scenario"
)

func kindNode(name, ip, cidr string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:   corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr, "fd00:10:244::/64"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeInternalIP, Address: "fc00::2"}}}}
}

// A kind partition runs nft in each node container with the other nodes'
// IPv4 addresses as sources, and heals by deleting the table in each,
// once however often heal is called; the trial's planned names map to the
// cluster's nodes.
func TestContainerPartitionOfKindNodes(t *testing.T) {
	cs := fake.NewSimpleClientset(kindNode("w1", "172.18.0.2", "10.244.1.0/24"), kindNode("w2", "172.18.0.3", "10.244.2.0/24"),
		kindNode("w3", "172.18.0.4", "10.244.3.0/24"))
	var calls []string
	p := &ContainerPartitioner{Runtime: "docker", Client: cs, run: func(_ context.Context, name string, args ...string) ([]byte, error) {
		calls = append(calls, name+" "+strings.Join(args, " "))
		return nil, nil
	}}
	b := &Backend{Nodes: []string{"w1", "w2", "w3"}, Partitioner: p}
	in := &nodes{b: b, planned: 3}
	at, heal, err := in.Partition("node-3", "node-1")
	if err != nil || at.IsZero() {
		t.Fatal(err)
	}
	want := []string{
		"docker exec w3 nft " + PartitionScript([]string{"172.18.0.4", "10.244.3.0/24"}, []string{"172.18.0.2", "10.244.1.0/24"}),
		"docker exec w1 nft " + PartitionScript([]string{"172.18.0.2", "10.244.1.0/24"}, []string{"172.18.0.4", "10.244.3.0/24"}),
	}
	if strings.Join(calls, "\n") != strings.Join(want, "\n") {
		t.Fatalf("partition ran\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	calls = nil
	for range 2 {
		if _, err := heal(); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(calls, "\n"); got != "docker exec w3 nft delete table ip blastradius-partition\ndocker exec w1 nft delete table ip blastradius-partition" {
		t.Errorf("heal ran\n%s", got)
	}
	calls = nil
	if _, _, err := in.PartitionAll(); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 3 || !strings.Contains(calls[0], "ip saddr { 172.18.0.3, 10.244.2.0/24, 172.18.0.4, 10.244.3.0/24 } ip daddr { 172.18.0.2, 10.244.1.0/24 } drop") {
		t.Errorf("segment partition ran\n%s", strings.Join(calls, "\n"))
	}
	if _, _, err := in.Partition("node-3", "node-7"); err == nil {
		t.Error("a partition to a node outside the trial was accepted")
	}
	caps := b.Capabilities("none")
	if caps[scenario.CapPartitionNodes] == "" || caps[scenario.CapPartitionSegment] == "" {
		t.Errorf("a backend with a partitioner offers %v", caps)
	}
	if caps := (&Backend{}).Capabilities("none"); caps[scenario.CapPartitionNodes] != "" {
		t.Errorf("a backend without a partitioner offers %v", caps)
	}
}

// The script is valid nft: checked by nft itself (-c: parsed and
// validated by the kernel, not committed), where nft is installed.
func TestPartitionScriptIsValidNft(t *testing.T) {
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft is not installed (Debian: nftables)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, nft, "-c", PartitionScript([]string{"172.18.0.4", "10.244.3.0/24"}, []string{"172.18.0.2", "10.244.1.0/24"})).CombinedOutput()
	if err != nil {
		t.Fatalf("nft -c: %v: %s", err, out)
	}
	out, err = exec.CommandContext(ctx, nft, "-c", PartitionScript([]string{"172.18.0.4"}, []string{"not-an-address"})).CombinedOutput()
	if err == nil {
		t.Errorf("nft -c accepted a bad address: %s", out)
	}
}
