package scenario

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseFile feeds arbitrary bytes to the scenario file decoder. Every
// error must be one line starting with the file name; an accepted file must
// be a complete scenario, and writing it back out as a file (encodeFile)
// must decode to the same scenario. Run it with
//
//	go test -run '^$' -fuzz '^FuzzParseFile$' -fuzztime 1m ./framework/scenario/
//
// (or `make fuzz`); plain `go test` runs the seeds in testdata/fuzz.
func FuzzParseFile(f *testing.F) {
	paths, _ := filepath.Glob("../../scenarios/*.yaml")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"",
		"name: x\ntopology: {nodes: 3}\nload: {duration: 5s}\n",
		"name: x\ntopology: {nodes: 3}\nload: {duration: 5s}\n---\n",
		"a: &a [*a]\nname: *a\ntopology: *a\n",
		"name: x\ntopology: {nodes: 2}\nload: {duration: 9s}\nfault: {kind: blackhole, at: 1s, holes: [1s], gap: 1s}\nflows: {custom: [{from: 1, to: 2, via: pod, profile: tcp-stream}]}\n",
		"name: x\ntopology: {nodes: 2}\nload: {duration: 9s}\nfault: {kind: blackhole, at: 1s, holes: [1s, 2s], gap: 1s, drop: client-pod}\nflows: {custom: [{from: 1, to: 2, via: pod, profile: tcp-stream}]}\n",
		"name: x\ndescription: \"two\\nlines \\u2028 and a tab\\t\"\ntopology: {nodes: 3, workloadsPerNode: 2}\nmodes: [ambient]\n" +
			"mesh: {certTTL: 90s, drain: 2s, waypoint: {service: echo-n2, replicas: 2}}\nflows: {matrix: [pod/tcp-stream, svc/http-newconn]}\n" +
			"load: {duration: 20s, budget: 1.5e2}\nfault: {kind: waypoint-outage, at: 5s, recoverAfter: 3s}\ntrials: 2\nexpect: [contained, max-disruption 2s]\n",
		"name: x\ntopology: {nodes: 3}\nload: {duration: 10s}\nfault: {kind: node-partition, at: 1s, node: node-3, peer: node-1, recoverAfter: 2s}\n",
		"name: x\ntopology: {nodes: 2}\nload: {duration: 5s, budget: .nan}\n",
		"name: x\ntopology: {nodes: 9223372036854775808}\n",
		"name: x\r\ntopology: {nodes: 2}\r\nload: {duration: 5s}\r\nname: y\r\n",
		"name: \"\\x00\"\ntopology: {nodes: 2}\n",
		everyField,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := ParseFile("fuzz.yaml", data)
		if err != nil {
			checkFileError(t, "fuzz.yaml", err)
			return
		}
		if sc.File != "fuzz.yaml" || sc.Name == "" || sc.Nodes < 1 || sc.Duration <= 0 {
			t.Errorf("accepted an incomplete scenario: %+v", sc)
		}
		if len(sc.Profiles) == 0 && len(sc.Custom) == 0 {
			t.Errorf("accepted a scenario without flows: %+v", sc)
		}
		// Round trip: the scenario written back as a file reads the same.
		out := encodeFile(sc)
		again, err := ParseFile("fuzz.yaml", []byte(out))
		if err != nil {
			t.Fatalf("re-encoded scenario refused: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(again, sc) {
			t.Fatalf("round trip changed the scenario:\n%+v\n%+v\nfile:\n%s", sc, again, out)
		}
	})
}

// q writes a string as a YAML double-quoted scalar: JSON's quoting is a
// subset of YAML's.
func q(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// encodeFile writes sc in the file format (docs/scenarios.md), every field
// that differs from what leaving it out means.
func encodeFile(sc Scenario) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("name: %s\n", q(sc.Name))
	if sc.Description != "" {
		w("description: %s\n", q(sc.Description))
	}
	w("topology:\n  nodes: %d\n", sc.Nodes)
	if sc.WorkloadsPerNode != 0 {
		w("  workloadsPerNode: %d\n", sc.WorkloadsPerNode)
	}
	if len(sc.Mesh.Modes) > 0 {
		w("modes:\n")
		for _, m := range sc.Mesh.Modes {
			w("  - %s\n", q(m))
		}
	}
	if m := sc.Mesh; m.CertTTL != 0 || m.Drain != 0 || m.Handoff != "" || m.Waypoint != nil {
		w("mesh:\n")
		if m.CertTTL != 0 {
			w("  certTTL: %s\n", m.CertTTL)
		}
		if m.Handoff != "" {
			w("  handoff: %s\n", m.Handoff)
		}
		if m.Drain != 0 {
			w("  drain: %s\n", m.Drain)
		}
		if m.Waypoint != nil {
			w("  waypoint:\n    service: %s\n    replicas: %d\n", q(m.Waypoint.Service), m.Waypoint.Replicas)
		}
	}
	w("flows:\n")
	if len(sc.Custom) > 0 {
		w("  custom:\n")
		for _, c := range sc.Custom {
			w("    - from: %d\n      to: %d\n      via: %s\n      profile: %s\n", c.ClientNode, c.ServerNode, q(c.Kind.Via), q(c.Kind.Profile))
			if c.QPS != 0 {
				w("      qps: %s\n", strconv.FormatFloat(c.QPS, 'g', -1, 64))
			}
		}
	} else {
		w("  matrix:\n")
		for _, k := range sc.Profiles {
			w("    - %s\n", q(k.Via+"/"+k.Profile))
		}
	}
	w("load:\n  duration: %s\n", sc.Duration)
	if sc.Budget != 0 {
		w("  budget: %s\n", strconv.FormatFloat(sc.Budget, 'g', -1, 64))
	}
	if f := sc.Fault; f.Kind != "" {
		w("fault:\n  kind: %s\n  at: %s\n", q(f.Kind), f.At)
		for _, s := range []struct{ field, v string }{{"node", f.Node}, {"peer", f.Peer}, {"pod", f.Pod}, {"flow", f.Flow}, {"drop", f.Drop}} {
			if s.v != "" {
				w("  %s: %s\n", s.field, q(s.v))
			}
		}
		if f.RecoverAfter != 0 {
			w("  recoverAfter: %s\n", f.RecoverAfter)
		}
		if f.Then != 0 {
			w("  then: %s\n", f.Then)
		}
		if f.Gap != 0 {
			w("  gap: %s\n", f.Gap)
		}
		if len(f.Holes) > 0 {
			w("  holes:\n")
			for _, h := range f.Holes {
				w("    - %s\n", h)
			}
		}
	}
	if sc.Trials != 0 {
		w("trials: %d\n", sc.Trials)
	}
	if len(sc.Expect) > 0 {
		w("expect:\n")
		for _, e := range sc.Expect {
			w("  - %s\n", q(e.String()))
		}
	}
	return b.String()
}

// TestEncodeFileRoundTrip: the fuzzer's round trip only means something if
// encodeFile writes every field; check it on files that use them all.
func TestEncodeFileRoundTrip(t *testing.T) {
	ins := map[string]string{"every-field": everyField}
	paths, _ := filepath.Glob("../../scenarios/*.yaml")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ins[p] = string(b)
	}
	for name, in := range ins {
		sc, err := ParseFile("x.yaml", []byte(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out := encodeFile(sc)
		again, err := ParseFile("x.yaml", []byte(out))
		if err != nil || !reflect.DeepEqual(again, sc) {
			t.Errorf("%s: round trip: %v\n%+v\n%+v\n%s", name, err, sc, again, out)
		}
	}
}
