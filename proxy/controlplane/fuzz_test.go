package controlplane

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzRegistryRead feeds arbitrary bytes as the registry file the control
// plane follows (the harness writes it; what it holds is pushed to every
// proxy). A file is either refused with a one-line error (the control plane
// logs it on one line) or decoded into a snapshot of this control plane's
// trust domain that reads back the same once written out again. Run it with
//
//	go test -run '^$' -fuzz '^FuzzRegistryRead$' -fuzztime 1m ./proxy/controlplane/
//
// (or `make fuzz`); plain `go test` runs the seeds in testdata/fuzz.
func FuzzRegistryRead(f *testing.F) {
	f.Add([]byte(`{"trustDomain":"cluster.local","workloads":[{"uid":"default/a","name":"a","namespace":"default","serviceAccount":"a","node":"n1","ip":"10.0.0.1","protocol":"HBONE"}],"services":[],"policies":[]}`))
	f.Add([]byte(`{"workloads":[]}`))
	f.Add([]byte(`{"trustDomain":"evil.example"}`))
	f.Add([]byte(`{"workloads":[{"uid":"a","endpoint":"typo"}]}`))
	f.Add([]byte(`{} {}`))
	f.Add([]byte(`{"services":[{"name":"s","ports":[{"port":8e1,"targetPort":-1}]}]}`))
	f.Add([]byte(`{"trustDomain":"a\nb"}`))
	f.Add([]byte(``))
	const td = "cluster.local"
	path := filepath.Join(f.TempDir(), "registry.json")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r := &registry{path: path, trustDomain: td}
		snap, err := r.read()
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error spans several lines: %q", err.Error())
			}
			return
		}
		if snap.TrustDomain != td {
			t.Fatalf("accepted trust domain %q, this control plane's is %q", snap.TrustDomain, td)
		}
		// Round trip: written out again (as the harness would), it reads
		// the same.
		b, err := json.Marshal(snap)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := r.read()
		if err != nil || !reflect.DeepEqual(again, snap) {
			t.Fatalf("round trip of %s: %+v, %v; want %+v", b, again, err, snap)
		}
		// Validate must not panic whatever the registry holds (invalid
		// snapshots are published on purpose, for proxies to NACK).
		_ = snap.Validate()
	})
}
