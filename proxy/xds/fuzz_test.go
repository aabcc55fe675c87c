package xds

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"blastradius.dev/blastradius/proxy/ca"
)

// Fuzzers of the control-plane protocol, from both ends: what a proxy does
// with a pushed DiscoveryResponse (decode, Validate, ACK or NACK), and what
// the control plane does with a proxy's DiscoveryRequest and
// CertificateRequest. They decode with the gRPC codec the stream uses, so
// the bytes are exactly a message's payload on the wire. Run one with
//
//	go test -run '^$' -fuzz '^FuzzClientHandle$' -fuzztime 1m ./proxy/xds/
//
// (or `make fuzz`); plain `go test` runs the seeds in testdata/fuzz.

func oneLine(t *testing.T, what, s string) {
	t.Helper()
	if strings.ContainsAny(s, "\r\n") {
		t.Errorf("%s spans several lines: %q", what, s)
	}
}

func mustJSON(f *testing.F, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// checkAccepted asserts, independently of Validate's code, what a proxy may
// rely on in a snapshot it applied.
func checkAccepted(t *testing.T, s *Snapshot) {
	t.Helper()
	if s.TrustDomain == "" || s.Version == "" {
		t.Fatalf("accepted a snapshot without trust domain or version: %q %q", s.TrustDomain, s.Version)
	}
	uids := map[string]bool{}
	// Addresses as packets carry them: a zone or an IPv4-mapped form names
	// the same destination as the plain address.
	addrs := map[netip.Addr]string{}
	for _, w := range s.Workloads {
		if w.UID == "" || uids[w.UID] {
			t.Fatalf("accepted workload uid %q (empty or duplicate)", w.UID)
		}
		uids[w.UID] = true
		ip, err := netip.ParseAddr(w.IP)
		if err != nil || ip.Zone() != "" {
			t.Fatalf("accepted workload %q with ip %q", w.UID, w.IP)
		}
		key := ip.WithZone("").Unmap()
		if other, dup := addrs[key]; dup {
			t.Fatalf("accepted workloads %q and %q with the same address (%s, %s)", other, w.UID, key, w.IP)
		}
		addrs[key] = w.UID
		if w.Protocol != ProtocolHBONE && w.Protocol != ProtocolTCP {
			t.Fatalf("accepted workload %q with protocol %q", w.UID, w.Protocol)
		}
		if w.Protocol == ProtocolHBONE && (w.Namespace == "" || w.ServiceAccount == "") {
			t.Fatalf("accepted HBONE workload %q without an identity", w.UID)
		}
	}
	for _, svc := range s.Services {
		vip, err := netip.ParseAddr(svc.VIP)
		if err != nil || vip.Zone() != "" || svc.Name == "" {
			t.Fatalf("accepted service %q with vip %q", svc.Name, svc.VIP)
		}
		key := vip.WithZone("").Unmap()
		if !key.IsValid() || key.IsUnspecified() || key.IsMulticast() {
			t.Fatalf("accepted service %q with vip %s", svc.Name, vip)
		}
		if other, dup := addrs[key]; dup {
			t.Fatalf("accepted service %q whose vip %s is also %q's address", svc.Name, svc.VIP, other)
		}
		addrs[key] = "service " + svc.Namespace + "/" + svc.Name
		for _, p := range svc.Ports {
			if p.Port < 1 || p.Port > 65535 || p.TargetPort < 1 || p.TargetPort > 65535 {
				t.Fatalf("accepted service %q with port %d->%d", svc.Name, p.Port, p.TargetPort)
			}
		}
		for _, ep := range svc.Endpoints {
			if !uids[ep] {
				t.Fatalf("accepted service %q with unknown endpoint %q", svc.Name, ep)
			}
		}
	}
	for _, p := range s.Policies {
		if p.Action != ActionAllow && p.Action != ActionDeny {
			t.Fatalf("accepted policy %q with action %q", p.Name, p.Action)
		}
	}
}

func FuzzClientHandle(f *testing.F) {
	good := snapshot(3)
	f.Add(mustJSON(f, DiscoveryResponse{Version: "v1", Nonce: "1", Snapshot: good}))
	f.Add(mustJSON(f, DiscoveryResponse{Version: "v2", Nonce: "2", Snapshot: snapshot(0)}))
	dupIP := snapshot(2)
	dupIP.Workloads[1].IP = dupIP.Workloads[0].IP
	f.Add(mustJSON(f, DiscoveryResponse{Version: "v3", Nonce: "3", Snapshot: dupIP}))
	mapped := snapshot(2)
	mapped.Workloads[1].IP = "::ffff:" + mapped.Workloads[0].IP
	f.Add(mustJSON(f, DiscoveryResponse{Version: "v4", Nonce: "4", Snapshot: mapped}))
	zoned := snapshot(1)
	zoned.Workloads[0].IP = "fe80::1%eth0\nforged log line"
	f.Add(mustJSON(f, DiscoveryResponse{Version: "v5", Nonce: "5", Snapshot: zoned}))
	f.Add(mustJSON(f, DiscoveryResponse{Version: "v6\nforged", Nonce: "6", Snapshot: Snapshot{}}))
	noVersion := snapshot(1)
	f.Add(mustJSON(f, DiscoveryResponse{Nonce: "7", Snapshot: noVersion}))
	f.Add([]byte(`{"version":"v1","nonce":"1","snapshot":{"trustDomain":"td","workloads":[{"uid":"","namespace":"a\nb"}]}}`))
	f.Add([]byte(`{"version":"v1","snapshot":{"trustDomain":"td","policies":[{"name":"p\n","action":"AUDIT"}]}}`))
	f.Add([]byte(`{"version":"v1","snapshot":{"trustDomain":"td","services":[{"name":"s","vip":"10.96.0.1","ports":[{"port":1e3,"targetPort":80}]}]}}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(``))

	base := snapshot(1)
	base.Version = "v0"
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp DiscoveryResponse
		if err := (Codec{}).Unmarshal(data, &resp); err != nil {
			oneLine(t, "codec error", err.Error())
			return
		}
		// Round trip of the wire message itself.
		b, err := Codec{}.Marshal(&resp)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again DiscoveryResponse
		if err := (Codec{}).Unmarshal(b, &again); err != nil || !reflect.DeepEqual(again, resp) {
			t.Fatalf("round trip of %s: %+v, %v; want %+v", b, again, err, resp)
		}

		// A client that already runs base: a NACK must leave it running.
		c := &Client{node: "n1", published: newPublished()}
		c.cur = &base
		ans := c.handle(&resp)
		if ans.Node != "n1" || ans.ResponseNonce != resp.Nonce {
			t.Fatalf("answer %+v does not name the node and the nonce %q", ans, resp.Nonce)
		}
		oneLine(t, "NACK reason", ans.ErrorDetail)
		snap := resp.Snapshot
		snap.Version = resp.Version
		valid := snap.Validate() == nil && resp.Version != ""
		cur, _ := c.Current()
		if ans.ErrorDetail != "" {
			if valid {
				t.Fatalf("NACKed a valid snapshot: %s", ans.ErrorDetail)
			}
			if cur != &base || ans.VersionInfo != base.Version || c.LastNack() != ans.ErrorDetail {
				t.Fatalf("after a NACK the client runs %q (answer %+v), want base %q", cur.Version, ans, base.Version)
			}
			return
		}
		if !valid {
			t.Fatalf("ACKed a snapshot Validate refuses (version %q)", resp.Version)
		}
		if ans.VersionInfo != resp.Version || !reflect.DeepEqual(*cur, snap) {
			t.Fatalf("ACK %+v, client runs %+v; want version %q", ans, cur, resp.Version)
		}
		checkAccepted(t, cur)
	})
}

// fuzzLog collects the server's log lines.
type fuzzLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *fuzzLog) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimSuffix(fmt.Sprintf(format, args...), "\n"))
}

func FuzzServerRecord(f *testing.F) {
	for _, r := range []DiscoveryRequest{
		{Node: "n1"},
		{Node: "n1", VersionInfo: "v1", ResponseNonce: "1"},
		{Node: "n1", VersionInfo: "v1", ResponseNonce: "2", ErrorDetail: `version v2 rejected: workload "a": bad ip "x"`},
		{Node: "n1", ResponseNonce: "99", ErrorDetail: "unknown nonce"},
		{Node: "n1", VersionInfo: "v1", ResponseNonce: "2", ErrorDetail: "line\nxds: node n9 NACKed v7"},
	} {
		f.Add(mustJSON(f, r))
	}
	f.Add([]byte(`{"node":"n1","responseNonce":"1","versionInfo":["v1"]}`))
	f.Add([]byte(`{"node":"","responseNonce":"1"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var req DiscoveryRequest
		if err := (Codec{}).Unmarshal(data, &req); err != nil {
			oneLine(t, "codec error", err.Error())
			return
		}
		var log fuzzLog
		s := NewServer(nil, td)
		s.Logf = log.logf
		before := NodeStatus{AckedVersion: "v1", Connected: true, Streams: 1}
		s.nodes["n1"] = &NodeStatus{AckedVersion: before.AckedVersion, Streams: 1}
		var sent sentLog
		sent.add("1", "v1")
		sent.add("2", "v2")
		s.record("n1", &req, &sent)
		got := s.Status()["n1"]
		want := before
		if req.ResponseNonce != "" {
			if req.VersionInfo != "" {
				want.AckedVersion = req.VersionInfo
			}
			if req.ErrorDetail != "" {
				want.LastNack = req.ErrorDetail
				want.NackedVersion = sent.version(req.ResponseNonce)
			}
		}
		if got != want {
			t.Fatalf("status after %+v: %+v, want %+v", req, got, want)
		}
		// A proxy's text must not be able to forge control-plane log lines.
		for _, l := range log.lines {
			oneLine(t, "log line", l)
		}
	})
}

func FuzzCreateCertificate(f *testing.F) {
	authority, err := ca.New(td, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	id := SpiffeID(td, "default", "server")
	csr, _, err := ca.NewCSR(id)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mustJSON(f, CertificateRequest{CSR: csr, Identity: id}))
	f.Add(mustJSON(f, CertificateRequest{CSR: csr, Identity: SpiffeID("other.domain", "default", "server")}))
	f.Add(mustJSON(f, CertificateRequest{CSR: csr, Identity: "spiffe://" + td + "/ns/a%0Ab/sa/x"}))
	f.Add(mustJSON(f, CertificateRequest{CSR: csr, Identity: "spiffe://" + td + "/ns/default/sa/server/extra"}))
	f.Add(mustJSON(f, CertificateRequest{CSR: csr[:len(csr)-1], Identity: id}))
	f.Add(mustJSON(f, CertificateRequest{CSR: []byte("not DER"), Identity: id}))
	f.Add([]byte(`{"csr":"not base64","identity":""}`))
	f.Add([]byte(`{}`))

	s := NewServer(authority, td)
	roots := x509.NewCertPool()
	roots.AddCert(authority.Root())
	f.Fuzz(func(t *testing.T, data []byte) {
		var req CertificateRequest
		if err := (Codec{}).Unmarshal(data, &req); err != nil {
			oneLine(t, "codec error", err.Error())
			return
		}
		resp, err := s.createCertificate(context.Background(), &req)
		if err != nil {
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("refusal with code %v, want InvalidArgument: %v", st.Code(), err)
			}
			oneLine(t, "refusal", st.Message())
			return
		}
		// Issued: the leaf names exactly the identity asked for, which is
		// a well-formed one of this trust domain, and chains to the root.
		block, _ := pem.Decode(resp.CertChainPEM)
		if block == nil {
			t.Fatalf("issued chain is not PEM: %q", resp.CertChainPEM)
		}
		leaf, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("issued leaf does not parse: %v", err)
		}
		got, err := ca.IdentityOf(leaf)
		if err != nil || got != req.Identity {
			t.Fatalf("issued leaf names %q (%v), asked for %q", got, err, req.Identity)
		}
		gotTD, ns, sa, err := ca.ParseSpiffeID(req.Identity)
		if err != nil || gotTD != td {
			t.Fatalf("signed for %q (trust domain %q, %v)", req.Identity, gotTD, err)
		}
		for _, part := range []string{ns, sa} {
			if strings.ContainsFunc(part, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '/' || r == '%' }) {
				t.Fatalf("signed identity %q with namespace %q, service account %q", req.Identity, ns, sa)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("issued leaf does not verify: %v", err)
		}
	})
}

// The node name a proxy opens its stream with is logged as is and keys the
// status: one with a control character is refused (found by reading
// FuzzServerRecord's log-line property over the connect/disconnect logs).
func TestStreamRefusesControlCharactersInNodeName(t *testing.T) {
	ts := startServer(t, "127.0.0.1:0")
	ts.xds.SetSnapshot(snapshot(1))
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(CodecName)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, node := range []string{"n1\nxds: node n2 connected", "n1\x00", "n1\u0085"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := conn.NewStream(ctx, &streamDesc, StreamMethod)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if err := st.SendMsg(&DiscoveryRequest{Node: node}); err != nil {
			cancel()
			t.Fatal(err)
		}
		var resp DiscoveryResponse
		err = st.RecvMsg(&resp)
		cancel()
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("node %q: stream got %+v, %v; want InvalidArgument", node, resp, err)
		}
	}
	if n := len(ts.xds.Status()); n != 0 {
		t.Errorf("status has %d nodes after refused streams: %v", n, ts.xds.Status())
	}
}
