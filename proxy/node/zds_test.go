package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/netnsx"
)

// TestZDSCapturesAPodOnlyFromItsAdd: the redirect rules are in the pod
// before the node agent hands it over, as istio-cni installs them; until
// the proxy has acked the pod's add over ZDS the pod's outbound
// connections find no capture listener (refused), from the add on the
// proxy takes them, and after the del they are refused again.
func TestZDSCapturesAPodOnlyFromItsAdd(t *testing.T) {
	ip := netip.MustParseAddr("10.244.2.2") // b in snap()
	fd := agentPodNS(t, ip)
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		t.Fatal(err)
	}
	eth, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// A default route, so that an app's connection gets as far as the
	// output hook where the redirect rules take it.
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Scope: netlink.SCOPE_LINK, Dst: all}); err != nil {
		t.Fatal(err)
	}
	h.Close()

	authority, err := ca.New("cluster.local", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	log := &logLines{}
	p := New(Options{Node: "node-1", Mark: DefaultMark, Logf: log.logf},
		func(_ context.Context, csr []byte, id string) ([]byte, error) { return authority.Sign(csr, id) }, authority.RootPEM)
	p.SetSnapshot(snap())
	defer p.certs.Close()

	path := fmt.Sprintf("@blastradius-zds-test-%d", time.Now().UnixNano())
	srv, err := inpod.NewServer(path)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hd := &inpodHandler{p: p, logf: log.logf}
	go func() { _ = inpod.Run(ctx, path, hd) }()
	for srv.Connected() != 1 {
		select {
		case <-ctx.Done():
			t.Fatal("the proxy never completed its ZDS snapshot")
		case <-time.After(10 * time.Millisecond):
		}
	}

	// An app connection from the pod to a peer (no route beyond eth0 is
	// needed: the redirect rules send it to the capture port on loopback).
	app := func() error {
		c, err := netnsx.DialTCP(ctx, fd, "10.244.1.1:8080", 0, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := app(); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("an app connection before the pod's add: %v, want refused (no capture listener)", err)
	}
	if got := listenersIn(t, fd); len(got) != 0 {
		t.Fatalf("listeners in the pod before its add: %v", got)
	}

	info := &zdsapi.WorkloadInfo{Name: "b", Namespace: "default", ServiceAccount: "b"}
	if err := srv.Add("uid-of-b", fd, info); err != nil {
		t.Fatalf("add over ZDS: %v", err)
	}
	if pods := p.Pods(); !slices.Equal(pods, []string{"uid-of-b"}) {
		t.Fatalf("pods after the add: %v", pods)
	}
	if err := app(); err != nil {
		t.Fatalf("an app connection after the pod's add was not captured: %v", err)
	}

	if err := srv.Del("uid-of-b"); err != nil {
		t.Fatalf("del over ZDS: %v", err)
	}
	if pods := p.Pods(); len(pods) != 0 {
		t.Fatalf("pods after the del: %v", pods)
	}
	if err := app(); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("an app connection after the pod's del: %v, want refused", err)
	}
}
