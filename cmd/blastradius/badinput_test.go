//go:build !nokube

// The slim build (-tags nokube) answers the kind config and cluster rows
// with errNoKube before it reads anything, so this table is for the full
// build only; TestBadInputExitsTwoWithOneLine covers the slim one.

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"istio.io/istio/pkg/zdsapi"

	"blastradius.dev/blastradius/proxy/ca"
	"blastradius.dev/blastradius/proxy/hbone"
	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/xds"
)

// Categories of TestBadInputs. Every one must have
// at least two rows: a category that lost its rows would otherwise pass
// unnoticed.
const (
	catCLI          = "cli"           // flags and arguments of the subcommands
	catScenario     = "scenario-file" // run --scenario <file>
	catKindConfig   = "kind-config"   // run --provider kind --kind-config <file>
	catBaseline     = "baseline"      // compare <run> --baseline <dir>
	catNodeAgent    = "node-agent"    // proxy/inpod: node agent <-> node proxy packets
	catControlPlane = "control-plane" // proxy/xds: pushes to proxies, requests to the control plane
	catHBONE        = "hbone"         // proxy/hbone: what reaches the HBONE port
)

var badInputCategories = []string{catCLI, catScenario, catKindConfig, catBaseline, catNodeAgent, catControlPlane, catHBONE}

// badInputDeadline bounds each row: a bad input must be refused, not waited
// on. It is generous for two busy cores; a refusal takes milliseconds. A
// variable so that TestBadInputChecksCanFail can show a hang is caught.
var badInputDeadline = 10 * time.Second

// badInput is one row. CLI rows (args set) go through dispatch and must exit
// 2 with exactly one line on stderr; protocol rows (call set) return the
// error the project produced (an ack's reason, a log line, a status).
type badInput struct {
	category string
	name     string
	args     []string
	call     func(t *testing.T) (string, error)
	want     string // a substring naming what was wrong
}

// TestBadInputs feeds malformed input to every boundary blastradius has:
// the command line, the files it reads, and the messages its data plane
// exchanges. Each must be refused with one line that says what was wrong,
// without a panic, within badInputDeadline. docs/reliability.md ("Bad
// inputs") describes the table.
func TestBadInputs(t *testing.T) {
	f := newBadInputFiles(t)
	rows := slices.Concat(cliRows(f), scenarioRows(f), kindConfigRows(f), baselineRows(f),
		nodeAgentRows(), controlPlaneRows(), hboneRows())

	perCat := map[string]int{}
	for _, r := range rows {
		if !slices.Contains(badInputCategories, r.category) {
			t.Errorf("row %q: unknown category %q", r.name, r.category)
		}
		perCat[r.category]++
	}
	for _, c := range badInputCategories {
		if perCat[c] < 2 {
			t.Errorf("category %s has %d rows, want at least 2", c, perCat[c])
		}
	}
	if len(rows) < 20 {
		t.Errorf("%d rows, want at least 20", len(rows))
	}

	for _, r := range rows {
		t.Run(r.category+"/"+r.name, func(t *testing.T) {
			msg, err := runBadInput(t, r)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case msg == "":
				t.Errorf("no error at all, want one containing %q", r.want)
			case strings.ContainsAny(msg, "\r\n"):
				t.Errorf("error is not one line: %q", msg)
			case !strings.Contains(msg, r.want):
				t.Errorf("error %q does not say %q", msg, r.want)
			default:
				t.Log(msg) // -v shows what each bad input gets
			}
		})
	}
}

// badInputDispatch is dispatch, replaced by TestBadInputChecksCanFail with
// a fake that breaks the contract.
var badInputDispatch = dispatch

// runBadInput runs one row on its own goroutine so that a panic is caught
// and a hang is cut at the deadline (the goroutine is then abandoned: the
// test has failed and the process ends with it).
func runBadInput(t *testing.T, r badInput) (string, error) {
	type result struct {
		msg string
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- result{err: fmt.Errorf("panic: %v\n%s", p, debug.Stack())}
			}
		}()
		if r.call != nil {
			msg, err := r.call(t)
			done <- result{msg, err}
			return
		}
		var stdout, stderr bytes.Buffer
		code := badInputDispatch(r.args, &stdout, &stderr)
		msg := stderr.String()
		switch {
		case code != 2:
			done <- result{err: fmt.Errorf("%q: exit %d, want 2 (stderr %q)", r.args, code, msg)}
		case strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n"):
			done <- result{err: fmt.Errorf("%q: stderr %q, want exactly one line", r.args, msg)}
		default:
			done <- result{msg: strings.TrimSuffix(msg, "\n")}
		}
	}()
	select {
	case res := <-done:
		return res.msg, res.err
	case <-time.After(badInputDeadline):
		return "", fmt.Errorf("no answer within %v: hangs on bad input", badInputDeadline)
	}
}

// --- files -------------------------------------------------------------

type badInputFiles struct {
	dir string
	run string // a minimal valid results folder (for compare's first argument)
}

func newBadInputFiles(t *testing.T) *badInputFiles {
	dir := t.TempDir()
	f := &badInputFiles{dir: dir}
	f.run = f.folder("run", "run.json", `{"schemaVersion":1}`)
	return f
}

// file writes name under the test folder and returns its path.
func (f *badInputFiles) file(name, body string) string {
	p := filepath.Join(f.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		panic(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		panic(err)
	}
	return p
}

// folder makes the folder name, holding file (if not "") with body.
func (f *badInputFiles) folder(name, file, body string) string {
	p := filepath.Join(f.dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		panic(err)
	}
	if file != "" {
		f.file(filepath.Join(name, file), body)
	}
	return p
}

// --- CLI ------------------------------------------------------------------

func cliRows(f *badInputFiles) []badInput {
	cli := func(name, want string, args ...string) badInput {
		return badInput{category: catCLI, name: name, args: args, want: want}
	}
	netnsDir := f.folder("netns", "", "")
	// ztunnel mode as the chart runs it; every value is given as a flag so
	// the test's own environment (POD_NAME and the like on a CI pod) does
	// not matter, and a row's later flag overrides the base one.
	zt := func(name, want string, args ...string) badInput {
		base := []string{"proxy", "ztunnel", "--xds-address", "istiod.istio-system.svc:15012", "--ca-address", "",
			"--pod-name", "ztunnel-x7k2p", "--pod-namespace", "istio-system", "--node", "node-1", "--instance-ip", "10.244.1.3",
			"--cluster-id", "Kubernetes", "--inpod-enabled", "true"}
		return cli(name, want, append(base, args...)...)
	}
	ztToken := f.file("ztunnel/istio-token", "token\n")
	ztBadRoot := f.file("ztunnel/root-cert.pem", "not a certificate\n")
	return []badInput{
		cli("no command", "no command given"),
		cli("compare without run folder", "no run folder given", "compare", "--baseline", f.run),
		cli("compare without baseline", "no --baseline given", "compare", f.run),
		cli("compare two run folders", `unexpected argument "x"`, "compare", f.run, "x", "--baseline", f.run),
		cli("compare empty baseline flag", "empty folder", "compare", f.run, "--baseline", ""),
		cli("compare min-history 0", "--min-history 0 must be at least 1", "compare", f.run, "--baseline", f.run, "--min-history", "0"),
		cli("compare flake-tolerance NaN", "--flake-tolerance NaN out of range", "compare", f.run, "--baseline", f.run, "--flake-tolerance", "NaN"),
		cli("compare format xml", `--format "xml" unknown`, "compare", f.run, "--baseline", f.run, "--format", "xml"),
		cli("report without folder", "no results folder given", "report"),
		cli("report two folders", `unexpected argument "b"`, "report", "a", "b"),
		cli("report unknown flag", "flag provided but not defined: -html", "report", "--html", "a"),
		cli("cluster without subcommand", "want a subcommand", "cluster"),
		cli("cluster unknown subcommand", `unknown subcommand "reboot"`, "cluster", "reboot"),
		cli("cluster up unknown provider", "--provider local-k8s", "cluster", "up", "--provider", "k3d"),
		cli("cluster up nodes 0", "--nodes 0 out of range", "cluster", "up", "--provider", "local-k8s", "--nodes", "0"),
		cli("cluster status stray argument", `unexpected argument "now"`, "cluster", "status", "--provider", "local-k8s", "now"),
		cli("bench unknown mode", `--modes: "mesh" unknown`, "bench", "--modes", "mesh"),
		cli("bench mode twice", "--modes: none given twice", "bench", "--modes", "none,none"),
		cli("bench qps NaN", "--qps NaN out of range", "bench", "--qps", "NaN"),
		cli("bench duration 1ms", "--duration 1ms out of range", "bench", "--duration", "1ms"),
		cli("bench stray argument", `unexpected argument "ambient"`, "bench", "ambient"),
		cli("node-agent without node", "--node is required", "node-agent"),
		cli("node-agent mark 0", "--mark 0 out of range", "node-agent", "--node", "n1", "--mark", "0"),
		cli("node-agent mark above 32 bits", "--mark 4294967296 out of range", "node-agent", "--node", "n1", "--mark", "0x100000000"),
		cli("node-agent watch-timeout 10ms", "--watch-timeout 10ms: at least 1s", "node-agent", "--node", "n1", "--watch-timeout", "10ms"),
		cli("node-agent missing netns dir", "--netns-dir "+filepath.Join(f.dir, "nope")+": not a directory", "node-agent", "--node", "n1", "--netns-dir", filepath.Join(f.dir, "nope")),
		cli("node-agent plain http api server", `--api-server "http://10.96.0.1": want https://host:port`, "node-agent", "--node", "n1", "--netns-dir", netnsDir, "--api-server", "http://10.96.0.1"),
		cli("redirect without pod ip", "--pod-ip is required", "redirect"),
		cli("redirect ipv6 pod ip", `--pod-ip "fd00::1" is not an IPv4 address`, "redirect", "--pod-ip", "fd00::1"),
		cli("redirect ambient mode", `--mode "ambient" unknown`, "redirect", "--pod-ip", "10.244.1.2", "--mode", "ambient"),
		cli("redirect netns is a file", "not a network namespace", "redirect", "--pod-ip", "10.244.1.2", "--netns", f.file("not-a-netns", "x")),
		cli("events without folder", "usage: blastradius events <dir>", "events"),
		cli("events flag instead of folder", "usage: blastradius events <dir>", "events", "--all"),
		cli("agent unknown flag", "flag provided but not defined: -qqps", "agent", "--qqps", "10"),
		cli("proxy unknown flag", "flag provided but not defined: -nodes", "proxy", "--nodes", "3"),
		cli("proxy ztunnel word after flags", `unexpected argument "ztunnel"`, "proxy", "--node", "n1", "ztunnel"),
		zt("proxy ztunnel without XDS_ADDRESS", "XDS_ADDRESS is not set", "--xds-address="),
		zt("proxy ztunnel without POD_NAMESPACE", "POD_NAMESPACE is not set", "--pod-namespace="),
		zt("proxy ztunnel without NODE_NAME", "NODE_NAME is not set", "--node="),
		zt("proxy ztunnel without INSTANCE_IP", "INSTANCE_IP is not set", "--instance-ip="),
		zt("proxy ztunnel INSTANCE_IP not an IP", `--instance-ip (INSTANCE_IP) "10.244.1" is not an IP address`, "--instance-ip", "10.244.1"),
		zt("proxy ztunnel XDS_ADDRESS without port", `--xds-address (XDS_ADDRESS) "istiod.istio-system.svc": want host:port`, "--xds-address", "istiod.istio-system.svc"),
		zt("proxy ztunnel CA_ADDRESS named port", `--ca-address (CA_ADDRESS) "istiod:grpc": port "grpc" is not a port number`, "--ca-address", "istiod:grpc"),
		zt("proxy ztunnel INPOD_ENABLED false", "only in-pod mode", "--inpod-enabled", "false"),
		zt("proxy ztunnel ready address taken by stats", "share a port", "--ready-addr", ":15020"),
		zt("proxy ztunnel shared mode argument", `unexpected argument "shared"`, "shared"),
		zt("proxy ztunnel token not mounted", "service-account token: open "+filepath.Join(f.dir, "ztunnel", "nope"), "--token-file", filepath.Join(f.dir, "ztunnel", "nope")),
		zt("proxy ztunnel root not mounted", "istiod root: open "+filepath.Join(f.dir, "ztunnel", "nope.pem"), "--token-file", ztToken, "--root-cert", filepath.Join(f.dir, "ztunnel", "nope.pem")),
		zt("proxy ztunnel root not PEM", ztBadRoot+" holds no PEM certificate", "--token-file", ztToken, "--root-cert", ztBadRoot),
		cli("controlplane unknown flag", "flag provided but not defined: -port", "controlplane", "--port", "1"),
		cli("bench-agent unknown flag", "flag provided but not defined: -rate", "bench-agent", "--rate", "1"),
		cli("scenarios stray argument", `unexpected argument "node-crash"`, "scenarios", "node-crash"),
		cli("version stray argument", `unexpected argument "--short"`, "version", "--short"),
	}
}

// --- scenario files ---------------------------------------------------------

func scenarioRows(f *badInputFiles) []badInput {
	sc := func(name, want, file string) badInput {
		return badInput{category: catScenario, name: name, args: []string{"run", "--scenario", file}, want: want}
	}
	p := func(name, body string) string { return f.file(filepath.Join("scenarios", name), body) }
	empty := p("empty.yaml", "")
	twoDocs := p("two.yaml", "name: a\ntopology:\n  nodes: 3\nload:\n  duration: 5s\n---\nname: b\n")
	binary := p("binary.yaml", "\x7fELF\x02\x01\x01\x00\x00\x00")
	list := p("list.yaml", "- name: a\n- name: b\n")
	tooMany := p("nodes.yaml", "name: x\ntopology:\n  nodes: 200\nload:\n  duration: 5s\n")
	badDur := p("duration.yaml", "name: x\ntopology:\n  nodes: 3\nload:\n  duration: fast\n")
	kind := p("kind.yaml", "name: x\ntopology:\n  nodes: 3\nload:\n  duration: 10s\nfault:\n  kind: meteor\n  at: 2s\n")
	late := p("late.yaml", "name: x\ntopology:\n  nodes: 3\nload:\n  duration: 10s\nfault:\n  kind: node-crash\n  node: node-2\n  at: 20s\n")
	upper := p("upper.yaml", "name: Node_Crash\ntopology:\n  nodes: 3\nload:\n  duration: 10s\n")
	drop := p("drop.yaml", "name: x\ntopology:\n  nodes: 2\nload:\n  duration: 10s\nfault:\n  kind: blackhole\n  at: 2s\n  holes: [1s]\n  drop: server\n")
	dir := f.folder("scenarios/dir.yaml", "", "")
	return []badInput{
		sc("empty file", empty+": empty file", empty),
		sc("two documents", "a second YAML document", twoDocs),
		sc("binary file", binary+":", binary),
		sc("list instead of mapping", list+":1:1:", list),
		sc("200 nodes", "topology.nodes", tooMany),
		sc("duration not a duration", "load.duration", badDur),
		sc("unknown fault kind", "fault.kind", kind),
		sc("fault after the load ends", "fault.at", late),
		sc("blackhole drop unknown", drop+`:10:9: fault.drop: unknown drop "server" (known: flow, client-pod)`, drop),
		sc("name not lower-case", "name", upper),
		sc("folder instead of file", dir+": is a directory", dir),
	}
}

// --- kind config ----------------------------------------------------------

func kindConfigRows(f *badInputFiles) []badInput {
	kc := func(name, want, file string) badInput {
		return badInput{category: catKindConfig, name: name, want: want,
			args: []string{"run", "--provider", "kind", "--kind-config", file, "--dry-run"}}
	}
	p := func(name, body string) string { return f.file(filepath.Join("kind", name), body) }
	const head = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n"
	return []badInput{
		kc("not YAML", "not YAML", p("tab.yaml", "\t: [")),
		kc("empty file", `want kind: Cluster, apiVersion: kind.x-k8s.io/v1alpha4; got kind "" apiVersion ""`, p("empty.yaml", "")),
		kc("old apiVersion", `apiVersion "kind.x-k8s.io/v1alpha3"`, p("v1alpha3.yaml", "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n")),
		kc("a kubeconfig by mistake", `got kind "Config"`, p("kubeconfig.yaml", "apiVersion: v1\nkind: Config\nclusters: []\n")),
		kc("unknown node role", `node role "master"`, p("master.yaml", head+"nodes:\n- role: master\n- role: worker\n- role: worker\n")),
		kc("one worker", "needs at least 2 workers", p("one.yaml", head+"nodes:\n- role: control-plane\n- role: worker\n")),
		kc("no control plane", "needs a control-plane node", p("nocp.yaml", head+"nodes:\n- role: worker\n- role: worker\n- role: worker\n")),
		kc("nodes not a list", "invalid", p("nodes.yaml", head+"nodes: 3\n")),
		kc("folder instead of file", "is a directory", f.folder("kind/dir.yaml", "", "")),
	}
}

// --- baseline folders -------------------------------------------------------

func baselineRows(f *badInputFiles) []badInput {
	bl := func(name, want, dir string) badInput {
		return badInput{category: catBaseline, name: name, want: want,
			args: []string{"compare", f.run, "--baseline", dir}}
	}
	missing := filepath.Join(f.dir, "base", "missing")
	empty := f.folder("base/empty", "", "")
	file := f.file("base/file", "{}")
	corrupt := f.folder("base/corrupt", "run.json", `{"schemaVersion": 1, "scenarios": [`)
	newer := f.folder("base/newer", "run.json", `{"schemaVersion": 999}`)
	noVersion := f.folder("base/noversion", "run.json", `{"scenarios": []}`)
	stringVersion := f.folder("base/stringversion", "run.json", `{"schemaVersion": "1"}`)
	array := f.folder("base/array", "run.json", `[1, 2, 3]`)
	wrongField := f.folder("base/wrongfield", "run.json", `{"schemaVersion": 1, "trials": "all"}`)
	jsonDir := f.folder("base/jsondir/run.json", "", "")
	store := f.folder("base/store", "", "")
	f.folder("base/store/good", "run.json", `{"schemaVersion":1}`)
	f.folder("base/store/torn", "run.json", `{"schemaVersion":1,`)
	junk := f.folder("base/junk", "notes.txt", "no runs here")
	return []badInput{
		bl("missing folder", missing+": no such folder", missing),
		bl("empty folder", empty+": no run.json", empty),
		bl("a file, not a folder", file+": not a folder", file),
		bl("corrupt run.json", corrupt+": run.json: unexpected end of JSON input", corrupt),
		bl("newer schema version", "schema version 999 is newer than this build reads (2)", newer),
		bl("no schema version", noVersion+": run.json has no schemaVersion", noVersion),
		bl("schema version a string", stringVersion+": run.json: schemaVersion is a JSON string, want a number", stringVersion),
		bl("run.json an array", array+": run.json holds a JSON array, not an object", array),
		bl("field of the wrong type", wrongField+": run.json", wrongField),
		bl("run.json a folder", "run.json: is a directory", filepath.Dir(jsonDir)),
		bl("store with a torn run", filepath.Join(store, "torn")+": run.json", store),
		bl("folder of other files", junk+": no run.json", junk),
		{category: catBaseline, name: "run folder missing", want: "nope: no such folder",
			args: []string{"compare", filepath.Join(f.dir, "nope"), "--baseline", f.run}},
	}
}

// --- node agent <-> node proxy ----------------------------------------------

// nopHandler is a node proxy that accepts everything well-formed, so any
// NACK comes from the protocol's own checks.
type nopHandler struct{}

func (nopHandler) Add(_ string, fd int, _ *zdsapi.WorkloadInfo) error { unix.Close(fd); return nil }
func (nopHandler) Keep(string) error                                  { return nil }
func (nopHandler) Del(string) error                                   { return nil }
func (nopHandler) SnapshotDone()                                      {}

// zds encodes a ZDS message for the rows.
func zds(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func zdsAdd(uid string) []byte {
	return zds(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Add{Add: &zdsapi.AddWorkload{Uid: uid,
		WorkloadInfo: &zdsapi.WorkloadInfo{Name: "a", Namespace: "default", ServiceAccount: "a"}}}})
}

func zdsKeep(uid string) []byte {
	return zds(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Keep{Keep: &zdsapi.KeepWorkload{Uid: uid}}})
}

func zdsDel(uid string) []byte {
	return zds(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_Del{Del: &zdsapi.DelWorkload{Uid: uid}}})
}

func zdsSnapshotSent() []byte {
	return zds(&zdsapi.WorkloadRequest{Payload: &zdsapi.WorkloadRequest_SnapshotSent{SnapshotSent: &zdsapi.SnapshotSent{}}})
}

func zdsAck(reason string) []byte {
	return zds(&zdsapi.WorkloadResponse{Payload: &zdsapi.WorkloadResponse_Ack{Ack: &zdsapi.Ack{Error: reason}}})
}

// toProxy plays a node agent: it listens, lets a real node proxy side
// (inpod.Connect) connect and say hello, sends it pkt with the descriptors
// opened from fdPaths attached, and returns the reason of the proxy's ack.
func toProxy(pkt []byte, fdPaths ...string) func(*testing.T) (string, error) {
	return toProxyAfter(nil, pkt, fdPaths...)
}

// toProxyAfter is toProxy that first sends the prelude packets, each of which
// the proxy must accept.
func toProxyAfter(prelude [][]byte, pkt []byte, fdPaths ...string) func(*testing.T) (string, error) {
	return func(t *testing.T) (string, error) {
		path := filepath.Join(t.TempDir(), "agent.sock")
		ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			return "", err
		}
		defer ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		connected := make(chan error, 1)
		go func() { connected <- inpod.Connect(ctx, path, nopHandler{}) }()
		ln.SetDeadline(time.Now().Add(5 * time.Second))
		c, err := ln.AcceptUnix()
		if err != nil {
			return "", fmt.Errorf("the proxy did not connect: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		var hello zdsapi.ZdsHello
		if err != nil || proto.Unmarshal(buf[:n], &hello) != nil || hello.Version != zdsapi.Version_V1 {
			return "", fmt.Errorf("the proxy's first packet %x (%v) is not a V1 hello", buf[:n], err)
		}
		// ack sends one packet and returns the proxy's answer.
		ack := func(pkt []byte, fds []int) (string, error) {
			var oob []byte
			if len(fds) > 0 {
				oob = unix.UnixRights(fds...)
			}
			if _, _, err := c.WriteMsgUnix(pkt, oob, nil); err != nil {
				return "", err
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil {
				return "", fmt.Errorf("no ack: %v", err)
			}
			var a zdsapi.WorkloadResponse
			if err := proto.Unmarshal(buf[:n], &a); err != nil || a.GetAck() == nil {
				return "", fmt.Errorf("answer %x is not an ack", buf[:n])
			}
			return a.GetAck().GetError(), nil
		}
		for _, p := range prelude {
			if reason, err := ack(p, nil); err != nil || reason != "" {
				return "", fmt.Errorf("the proxy rejected the prelude %x: %q, %v", p, reason, err)
			}
		}
		var fds []int
		for _, p := range fdPaths {
			fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			defer unix.Close(fd)
			fds = append(fds, fd)
		}
		reason, err := ack(pkt, fds)
		if err != nil {
			return "", err
		}
		if reason == "" {
			return "", fmt.Errorf("the proxy accepted %x", pkt)
		}
		// The proxy keeps the connection after a NACK: the next message
		// gets its own answer.
		select {
		case err := <-connected:
			return "", fmt.Errorf("the proxy dropped the connection after a NACK: %v", err)
		default:
		}
		return reason, nil
	}
}

// agentLogs starts a real node agent (inpod.Server) with a short ack timeout
// and returns it, its socket and its log lines.
func agentLogs(t *testing.T) (*inpod.Server, string, chan string, error) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	logs := make(chan string, 16)
	srv, err := inpod.NewServer(path, inpod.WithAckTimeout(300*time.Millisecond), inpod.WithLogf(func(format string, a ...any) {
		select {
		case logs <- fmt.Sprintf(format, a...):
		default:
		}
	}))
	return srv, path, logs, err
}

// logged returns the first of logs containing want.
func logged(logs chan string, want string) (string, error) {
	timeout := time.After(5 * time.Second)
	for {
		select {
		case l := <-logs:
			if strings.Contains(l, want) {
				return l, nil
			}
		case <-timeout:
			return "", errors.New("the agent logged nothing about it")
		}
	}
}

// toAgent plays a node proxy against a real node agent (inpod.Server): it
// connects, says hello, reads the snapshot, answers with send(conn) and
// returns the agent's log line containing want (the agent has no caller to
// return an error to: its log is where a bad proxy shows).
func toAgent(want string, send func(c *net.UnixConn) error) func(*testing.T) (string, error) {
	return func(t *testing.T) (string, error) {
		srv, path, logs, err := agentLogs(t)
		if err != nil {
			return "", err
		}
		defer srv.Close()
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			return "", err
		}
		defer c.Close()
		if _, err := c.Write(zds(&zdsapi.ZdsHello{Version: zdsapi.Version_V1})); err != nil {
			return "", err
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		if _, err := c.Read(buf); err != nil { // snapshot_sent: there are no pods
			return "", fmt.Errorf("no snapshot: %v", err)
		}
		if err := send(c); err != nil {
			return "", err
		}
		return logged(logs, want)
	}
}

// helloToAgent connects to a real node agent and sends hello instead of a
// proper ZDS hello (nil: nothing at all); the agent must hang up and log a
// line containing want, which it returns.
func helloToAgent(want string, hello []byte) func(*testing.T) (string, error) {
	return func(t *testing.T) (string, error) {
		srv, path, logs, err := agentLogs(t)
		if err != nil {
			return "", err
		}
		defer srv.Close()
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
		if err != nil {
			return "", err
		}
		defer c.Close()
		if hello != nil {
			if _, err := c.Write(hello); err != nil {
				return "", err
			}
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		if n, err := c.Read(buf); err == nil && n > 0 {
			return "", fmt.Errorf("the agent sent %x to a proxy without a proper hello", buf[:n])
		}
		return logged(logs, want)
	}
}

func nodeAgentRows() []badInput {
	na := func(name, want string, call func(*testing.T) (string, error)) badInput {
		return badInput{category: catNodeAgent, name: name, want: want, call: call}
	}
	write := func(b []byte) func(*net.UnixConn) error {
		return func(c *net.UnixConn) error { _, err := c.Write(b); return err }
	}
	add := zdsAdd("default/a")
	return []badInput{
		// agent -> proxy: the proxy NACKs and keeps the connection.
		na("not protobuf", "malformed message", toProxy([]byte("not protobuf"))),
		na("cut message", "malformed message", toProxy(add[:len(add)-2], "/proc/self/ns/net")),
		na("no payload", "malformed message: no payload", toProxy([]byte{0x78, 0x01})),
		na("uid not UTF-8", "malformed message", toProxy([]byte("\x0a\x06\x0a\x04ns/\xff"), "/proc/self/ns/net")),
		na("add without uid", "add without uid", toProxy(zdsAdd(""), "/proc/self/ns/net")),
		na("add without netns fd", `add "default/a": want exactly one netns fd attached, got 0`, toProxy(add)),
		na("add with two fds", "got 2", toProxy(add, "/proc/self/ns/net", "/proc/self/ns/net")),
		na("add with a file, not a netns", `add "default/a": fd`, toProxy(add, "/dev/null")),
		na("keep without uid", "keep without uid", toProxy(zdsKeep(""))),
		na("keep after snapshot_sent", `keep "default/a" after the snapshot`, toProxyAfter([][]byte{zdsSnapshotSent()}, zdsKeep("default/a"))),
		na("snapshot_sent twice", "snapshot_sent twice", toProxyAfter([][]byte{zdsSnapshotSent()}, zdsSnapshotSent())),
		na("del with a fd", "del: unexpected descriptor attached", toProxy(zdsDel("default/a"), "/dev/null")),
		na("del without uid", "del without uid", toProxy(zdsDel(""))),
		// proxy -> agent: the agent drops the proxy and says why.
		na("no hello", "sent no hello within 300ms", helloToAgent("no hello", nil)),
		na("hello without version", "hello with version NOT_USED", helloToAgent("hello with", []byte{0x08, 0x00})),
		na("garbage instead of hello", "not a hello", helloToAgent("not a hello", []byte("HELLO\n"))),
		na("garbage instead of ack", "not an ack", toAgent("not an ack", write([]byte("HELLO\n")))),
		na("unsolicited ack", "unsolicited ack", toAgent("unsolicited", func(c *net.UnixConn) error {
			if _, err := c.Write(zdsAck("")); err != nil {
				return err
			}
			_, err := c.Write(zdsAck(""))
			return err
		})),
		na("no ack", "no ack within", toAgent("no ack", func(*net.UnixConn) error { return nil })),
		na("multi-line NACK", "rejected it", toAgent("rejected it", write(zdsAck("line one\nline two")))),
	}
}

// --- control plane <-> proxies -----------------------------------------------

// goodSnapshot is a snapshot a proxy accepts; rows break one thing in it.
func goodSnapshot() xds.Snapshot {
	return xds.Snapshot{
		TrustDomain: "cluster.local",
		Workloads: []xds.Workload{
			{UID: "default/a", Name: "a", Namespace: "default", ServiceAccount: "a", IP: "10.244.1.2", Protocol: xds.ProtocolHBONE},
			{UID: "default/b", Name: "b", Namespace: "default", ServiceAccount: "b", IP: "10.244.2.2", Protocol: xds.ProtocolTCP},
		},
		Services: []xds.Service{{Name: "b", Namespace: "default", VIP: "10.96.0.10", Ports: []xds.Port{{Port: 80, TargetPort: 8080}}, Endpoints: []string{"default/b"}}},
		Policies: []xds.Policy{{Name: "p", Namespace: "default", Action: xds.ActionAllow, Principals: []string{"*"}}},
	}
}

// pushToProxy plays a control plane that pushes msg (marshalled by the
// discovery codec) to a real proxy side (xds.Client) and returns what the
// proxy answered: the NACK's reason, or, when the push does not even
// decode, the client's log line about the stream it dropped.
func pushToProxy(msg any) func(*testing.T) (string, error) {
	return func(t *testing.T) (string, error) {
		answers := make(chan xds.DiscoveryRequest, 1)
		desc := grpc.ServiceDesc{
			ServiceName: xds.ServiceName,
			HandlerType: (*any)(nil),
			Streams: []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true, ClientStreams: true,
				Handler: func(_ any, ss grpc.ServerStream) error {
					var hello xds.DiscoveryRequest
					if err := ss.RecvMsg(&hello); err != nil {
						return err
					}
					if err := ss.SendMsg(msg); err != nil {
						return err
					}
					var a xds.DiscoveryRequest
					if err := ss.RecvMsg(&a); err != nil {
						return err
					}
					answers <- a
					<-ss.Context().Done()
					return nil
				}}},
		}
		g := grpc.NewServer()
		g.RegisterService(&desc, struct{}{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		go g.Serve(ln)
		defer g.Stop()
		logs := make(chan string, 16)
		c, err := xds.NewClient(ln.Addr().String(), "node-1", xds.WithLogf(func(format string, a ...any) {
			select {
			case logs <- fmt.Sprintf(format, a...):
			default:
			}
		}))
		if err != nil {
			return "", err
		}
		defer c.Close()
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan struct{})
		go func() { c.Run(ctx); close(ran) }()
		defer func() { cancel(); <-ran }()
		select {
		case a := <-answers:
			if a.ErrorDetail == "" {
				return "", fmt.Errorf("the proxy ACKed %s", a.VersionInfo)
			}
			if a.ErrorDetail != c.LastNack() {
				return "", fmt.Errorf("NACK sent %q, LastNack %q", a.ErrorDetail, c.LastNack())
			}
			return a.ErrorDetail, nil
		case l := <-logs:
			return l, nil
		case <-time.After(5 * time.Second):
			return "", errors.New("the proxy neither ACKed, NACKed nor dropped the stream")
		}
	}
}

func badSnapshot(edit func(s *xds.Snapshot)) xds.DiscoveryResponse {
	s := goodSnapshot()
	edit(&s)
	return xds.DiscoveryResponse{Version: "v1", Nonce: "1", Snapshot: s}
}

// testControlPlane is a real discovery server with a CA on loopback.
type testControlPlane struct {
	addr string
	srv  *xds.Server
	logs chan string
}

func startControlPlane(t *testing.T) (*testControlPlane, func(), error) {
	authority, err := ca.New("cluster.local", time.Hour)
	if err != nil {
		return nil, nil, err
	}
	cp := &testControlPlane{srv: xds.NewServer(authority, "cluster.local"), logs: make(chan string, 16)}
	cp.srv.Logf = func(format string, a ...any) {
		select {
		case cp.logs <- fmt.Sprintf(format, a...):
		default:
		}
	}
	g := grpc.NewServer(xds.ServerOptions()...)
	cp.srv.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	cp.addr = ln.Addr().String()
	go g.Serve(ln)
	return cp, func() { cp.srv.Close(); g.Stop() }, nil
}

// toControlPlane opens a discovery stream to a real control plane, sends
// reqs (answering its push when a request's ResponseNonce is "*") and
// returns the stream's error or the control plane's log line containing
// want.
func toControlPlane(want string, reqs ...xds.DiscoveryRequest) func(*testing.T) (string, error) {
	return func(t *testing.T) (string, error) {
		cp, stop, err := startControlPlane(t)
		if err != nil {
			return "", err
		}
		defer stop()
		cp.srv.SetSnapshot(goodSnapshot())
		conn, err := grpc.NewClient(cp.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.CallContentSubtype(xds.CodecName)))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, xds.StreamMethod)
		if err != nil {
			return "", err
		}
		for _, r := range reqs {
			if r.ResponseNonce == "*" {
				var push xds.DiscoveryResponse
				if err := st.RecvMsg(&push); err != nil {
					return err.Error(), nil
				}
				r.ResponseNonce = push.Nonce
			}
			if err := st.SendMsg(&r); err != nil {
				break // the error comes with RecvMsg
			}
		}
		recvErr := make(chan error, 1)
		go func() {
			for {
				var push xds.DiscoveryResponse
				if err := st.RecvMsg(&push); err != nil {
					recvErr <- err
					return
				}
			}
		}()
		for {
			select {
			case err := <-recvErr:
				return err.Error(), nil
			case l := <-cp.logs:
				if strings.Contains(l, want) {
					return l, nil
				}
			case <-ctx.Done():
				return "", errors.New("the control plane neither refused the stream nor logged it")
			}
		}
	}
}

// signAt asks a real control plane's CA to sign csr for identity through
// the project's client, and returns its error.
func signAt(csr func() ([]byte, error), identity string) func(*testing.T) (string, error) {
	return func(t *testing.T) (string, error) {
		cp, stop, err := startControlPlane(t)
		if err != nil {
			return "", err
		}
		defer stop()
		c, err := xds.NewClient(cp.addr, "node-1")
		if err != nil {
			return "", err
		}
		defer c.Close()
		der, err := csr()
		if err != nil {
			return "", err
		}
		if _, err := c.Sign(context.Background(), der, identity); err != nil {
			return err.Error(), nil
		}
		return "", fmt.Errorf("signed %s", identity)
	}
}

func goodCSR() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
}

func controlPlaneRows() []badInput {
	cp := func(name, want string, call func(*testing.T) (string, error)) badInput {
		return badInput{category: catControlPlane, name: name, want: want, call: call}
	}
	return []badInput{
		// control plane -> proxy: the proxy NACKs and says why.
		cp("no trust domain", "empty trust domain", pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.TrustDomain = "" }))),
		cp("no version", "empty version", pushToProxy(xds.DiscoveryResponse{Nonce: "1", Snapshot: goodSnapshot()})),
		cp("duplicate uid", `workload "default/a": duplicate uid`, pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.Workloads[1].UID = "default/a" }))),
		cp("bad workload ip", `bad ip "10.244.1.300"`, pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.Workloads[0].IP = "10.244.1.300" }))),
		cp("meshed workload without identity", "HBONE workload needs namespace and serviceAccount", pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.Workloads[0].ServiceAccount = "" }))),
		cp("unknown protocol", `protocol "UDP" is neither`, pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.Workloads[1].Protocol = "UDP" }))),
		cp("empty uid, name with a newline", "empty uid", pushToProxy(badSnapshot(func(s *xds.Snapshot) {
			s.Workloads[1].UID, s.Workloads[1].Name = "", "b\nworkload \"default/z\": fine"
		}))),
		cp("vip 0.0.0.0", "vip 0.0.0.0 is not a unicast address", pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.Services[0].VIP = "0.0.0.0" }))),
		cp("port 70000", "bad port mapping 70000->8080", pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.Services[0].Ports[0].Port = 70000 }))),
		cp("unknown endpoint", `unknown endpoint uid "default/ghost"`, pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.Services[0].Endpoints = []string{"default/ghost"} }))),
		cp("policy action lower-case", `action "allow" is neither ALLOW nor DENY`, pushToProxy(badSnapshot(func(s *xds.Snapshot) { s.Policies[0].Action = "allow" }))),
		cp("push that does not decode", "json unmarshal", pushToProxy(map[string]any{"version": 1, "snapshot": "all"})),
		// proxy -> control plane.
		cp("stream without node name", "first request must name the node", toControlPlane("", xds.DiscoveryRequest{})),
		cp("NACK with a multi-line reason", "NACKed", toControlPlane("NACKed",
			xds.DiscoveryRequest{Node: "node-1"},
			xds.DiscoveryRequest{Node: "node-1", ResponseNonce: "*", ErrorDetail: "bad\nxds: node node-2 NACKed v9"})),
		cp("node name with a newline", "has control characters", toControlPlane("connected", xds.DiscoveryRequest{Node: "node-1\nxds: node node-2 connected"})),
		cp("CSR not DER", "ca: parse CSR", signAt(func() ([]byte, error) { return []byte("-----BEGIN CERTIFICATE REQUEST-----"), nil }, "spiffe://cluster.local/ns/default/sa/a")),
		cp("identity of another trust domain", `this CA signs only for "cluster.local"`, signAt(goodCSR, "spiffe://evil.example/ns/default/sa/a")),
		cp("identity not a SPIFFE id", "https://cluster.local/ns/default/sa/a", signAt(goodCSR, "https://cluster.local/ns/default/sa/a")),
	}
}

// --- HBONE ------------------------------------------------------------------

const (
	hboneClientID = "spiffe://cluster.local/ns/default/sa/client"
	hboneServerID = "spiffe://cluster.local/ns/default/sa/server"
)

// miniCA is a throwaway root, like proxy/hbone's tests build.
type miniCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var badInputSerial atomic.Int64

func newMiniCA() (*miniCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(badInputSerial.Add(1)), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &miniCA{cert: cert, key: key, pool: pool}, nil
}

// leaf issues a certificate for id ("" = no URI SAN at all).
func (c *miniCA) leaf(id string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(badInputSerial.Add(1)),
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if id != "" {
		u, err := url.Parse(id)
		if err != nil {
			return nil, err
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// hboneEnv is a real HBONE server on loopback standing for the destination
// 127.0.0.1: it admits only hboneClientID, and only to 127.0.0.1 (as a
// node proxy admits only its pod's IP).
type hboneEnv struct {
	ca   *miniCA
	addr string
	m    *hbone.Metrics
}

func startHBONE() (*hboneEnv, func(), error) {
	authority, err := newMiniCA()
	if err != nil {
		return nil, nil, err
	}
	srvCert, err := authority.leaf(hboneServerID)
	if err != nil {
		return nil, nil, err
	}
	e := &hboneEnv{ca: authority, m: new(hbone.Metrics)}
	srv := &hbone.Server{
		Cert:  func(context.Context) (*tls.Certificate, error) { return srvCert, nil },
		Roots: func() *x509.CertPool { return authority.pool },
		Authorize: func(peer, target string) int {
			if host, _, _ := net.SplitHostPort(target); host != "127.0.0.1" {
				return 400
			}
			if peer != hboneClientID {
				return 401
			}
			return 200
		},
		// No row is admitted, so no row should get here.
		Forward: func(context.Context, net.Conn, string, string) error { return errors.New("no application") },
		Metrics: e.m,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	e.addr = ln.Addr().String()
	go srv.Serve(ln)
	return e, func() { srv.Close() }, nil
}

// serverCounted waits for the server to count a failure and names it.
func (e *hboneEnv) serverCounted() string {
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if counts := e.m.FailureCounts(); len(counts) > 0 {
			var rs []string
			for r, n := range counts {
				if n > 0 {
					rs = append(rs, r)
				}
			}
			if len(rs) > 0 {
				sort.Strings(rs)
				return strings.Join(rs, ",")
			}
		}
	}
	return "nothing"
}

// hboneConnect opens a CONNECT with the project's dialer, presenting a
// certificate for src from the given issuer (nil: the server's own CA).
func hboneConnect(src, authority, wantServer string, foreignCA bool) func(*testing.T) (string, error) {
	return func(t *testing.T) (string, error) {
		e, stop, err := startHBONE()
		if err != nil {
			return "", err
		}
		defer stop()
		issuer := e.ca
		if foreignCA {
			if issuer, err = newMiniCA(); err != nil {
				return "", err
			}
		}
		d := &hbone.Dialer{
			Cert:  func(context.Context, string) (*tls.Certificate, error) { return issuer.leaf(src) },
			Roots: func() *x509.CertPool { return e.ca.pool },
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := d.Connect(ctx, src, e.addr, authority, wantServer)
		if err == nil {
			c.Close()
			return "", fmt.Errorf("CONNECT %s as %s admitted", authority, src)
		}
		return fmt.Sprintf("client: %v; server counted %s", err, e.serverCounted()), nil
	}
}

// hboneRaw opens mutual TLS to the HBONE port with cfg (certificates from
// the server's CA when withCert), then, if the handshake holds, speaks raw
// HTTP/2: the preface, SETTINGS, one HEADERS block of fields on streamID.
// It returns the response (status, reset or GOAWAY) and the server's
// failure count.
func hboneRaw(withCert bool, cfg *tls.Config, streamID uint32, fields ...string) func(*testing.T) (string, error) {
	return func(t *testing.T) (string, error) {
		e, stop, err := startHBONE()
		if err != nil {
			return "", err
		}
		defer stop()
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"h2"}}
		}
		cfg = cfg.Clone()
		cfg.InsecureSkipVerify = true // the server's identity is not what these rows test
		if withCert {
			cert, err := e.ca.leaf(hboneClientID)
			if err != nil {
				return "", err
			}
			cfg.Certificates = []tls.Certificate{*cert}
		}
		raw, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
		if err != nil {
			return "", err
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		c := tls.Client(raw, cfg)
		res := h2Exchange(c, streamID, fields)
		return fmt.Sprintf("client: %s; server counted %s", res, e.serverCounted()), nil
	}
}

// h2Exchange sends one request and describes the answer in one line.
func h2Exchange(c *tls.Conn, streamID uint32, fields []string) string {
	if err := c.Handshake(); err != nil {
		return "handshake: " + err.Error()
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return "preface: " + err.Error()
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		return "settings: " + err.Error()
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: streamID, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return "headers: " + err.Error()
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "read: " + err.Error()
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			return "status " + f.PseudoValue("status")
		case *http2.RSTStreamFrame:
			return "stream reset: " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			return fmt.Sprintf("GOAWAY %s %q", f.ErrCode, f.DebugData())
		}
	}
}

// plainHTTP sends an HTTP/1.1 request to the HBONE port without TLS.
func plainHTTP(t *testing.T) (string, error) {
	e, stop, err := startHBONE()
	if err != nil {
		return "", err
	}
	defer stop()
	c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	answer := strings.SplitN(string(b), "\r\n", 2)[0]
	if answer == "" && err != nil {
		answer = err.Error()
	} else if answer == "" {
		answer = "closed without a word"
	}
	return fmt.Sprintf("client: %s; server counted %s", answer, e.serverCounted()), nil
}

func hboneRows() []badInput {
	hb := func(name, want string, call func(*testing.T) (string, error)) badInput {
		return badInput{category: catHBONE, name: name, want: want, call: call}
	}
	connect := []string{":method", "CONNECT", ":authority", "127.0.0.1:8080"}
	return []badInput{
		hb("authority without port", "invalid authority: address 127.0.0.1: missing port in address", hboneConnect(hboneClientID, "127.0.0.1", "", false)),
		hb("port 0", "400 Bad Request; server counted bad_authority", hboneConnect(hboneClientID, "127.0.0.1:0", "", false)),
		hb("port 70000", "400 Bad Request; server counted bad_authority", hboneConnect(hboneClientID, "127.0.0.1:70000", "", false)),
		hb("port not a number", "400 Bad Request; server counted bad_authority", hboneConnect(hboneClientID, "127.0.0.1:http", "", false)),
		hb("target not this destination", "400 Bad Request; server counted bad_authority", hboneConnect(hboneClientID, "10.244.9.9:8080", "", false)),
		hb("peer not allowed", "401 Unauthorized; server counted policy_denied", hboneConnect("spiffe://cluster.local/ns/evil/sa/attacker", "127.0.0.1:8080", "", false)),
		hb("server not the identity asked for", "wrong identity", hboneConnect(hboneClientID, "127.0.0.1:8080", "spiffe://cluster.local/ns/default/sa/other", false)),
		hb("client certificate of another CA", "server counted untrusted", hboneConnect(hboneClientID, "127.0.0.1:8080", "", true)),
		hb("client certificate without SPIFFE id", "server counted no_identity", hboneConnect("", "127.0.0.1:8080", "", false)),
		hb("no client certificate", "server counted no_identity", hboneRaw(false, nil, 1, connect...)),
		hb("TLS 1.2", "server counted protocol", hboneRaw(true, &tls.Config{MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}, 1, connect...)),
		hb("ALPN http/1.1", "server counted protocol", hboneRaw(true, &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"}}, 1, connect...)),
		hb("plain HTTP/1 to the HBONE port", "server counted plaintext", plainHTTP),
		hb("GET instead of CONNECT", "status 405; server counted bad_method", hboneRaw(true, nil, 1, ":method", "GET", ":scheme", "https", ":path", "/", ":authority", "127.0.0.1:8080")),
		hb("CONNECT without authority", "status 400; server counted bad_authority", hboneRaw(true, nil, 1, ":method", "CONNECT")),
		hb("CONNECT with a path", "stream reset: PROTOCOL_ERROR; server counted protocol", hboneRaw(true, nil, 1, ":method", "CONNECT", ":authority", "127.0.0.1:8080", ":path", "/")),
		hb("no method", "stream reset: PROTOCOL_ERROR; server counted protocol", hboneRaw(true, nil, 1, ":authority", "127.0.0.1:8080")),
		hb("stream id from the server's range", "GOAWAY PROTOCOL_ERROR", hboneRaw(true, nil, 2, connect...)),
	}
}

// The table's own checks must be able to fail: a row that panics, exits
// other than 2, or writes more than one line is reported, not passed.
func TestBadInputChecksCanFail(t *testing.T) {
	if _, err := runBadInput(t, badInput{call: func(*testing.T) (string, error) { panic("boom") }}); err == nil || !strings.Contains(err.Error(), "panic: boom") {
		t.Errorf("a panicking row gave %v", err)
	}
	if _, err := runBadInput(t, badInput{args: []string{"version"}}); err == nil || !strings.Contains(err.Error(), "exit 0") {
		t.Errorf("a row that exits 0 gave %v", err)
	}
	if _, err := runBadInput(t, badInput{args: []string{"frobnicate", "x"}}); err != nil {
		t.Errorf("a good row failed: %v", err)
	}
	defer func() { badInputDispatch = dispatch }()
	badInputDispatch = func(_ []string, _, stderr io.Writer) int {
		fmt.Fprint(stderr, "bad flag\nusage: ...\n")
		return 2
	}
	if _, err := runBadInput(t, badInput{args: []string{"x"}}); err == nil || !strings.Contains(err.Error(), "want exactly one line") {
		t.Errorf("a multi-line stderr gave %v", err)
	}
	badInputDispatch = func(_ []string, _, stderr io.Writer) int {
		fmt.Fprint(stderr, "bad flag")
		return 2
	}
	if _, err := runBadInput(t, badInput{args: []string{"x"}}); err == nil || !strings.Contains(err.Error(), "want exactly one line") {
		t.Errorf("a stderr without its newline gave %v", err)
	}
	badInputDispatch = dispatch
	defer func(d time.Duration) { badInputDeadline = d }(badInputDeadline)
	badInputDeadline = 50 * time.Millisecond
	block := make(chan struct{})
	defer close(block)
	if _, err := runBadInput(t, badInput{call: func(*testing.T) (string, error) { <-block; return "", nil }}); err == nil || !strings.Contains(err.Error(), "hangs") {
		t.Errorf("a hanging row gave %v", err)
	}
}
