package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad input must give one clear line and exit code 2, before anything starts.
func TestBadInputExitsTwoWithOneLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	syntax := write("syntax.yaml", "name: x\ntopology:\n  nodes: 3\n   bad: [\n")
	unknown := write("unknown.yaml", "name: x\ntopology:\n  nodes: 3\n  nodez: 4\nload:\n  duration: 5s\n")
	impossible := write("impossible.yaml", "name: x\ntopology:\n  nodes: 3\nload:\n  duration: 10s\nfault:\n  kind: node-crash\n  node: node-5\n  at: 2s\n")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--scenario", syntax}, syntax + ":4"},
		{[]string{"run", "--scenario", unknown}, unknown + ":4:3: topology.nodez: unknown field"},
		{[]string{"run", "--scenario", impossible}, impossible + ":8:9: fault.node"},
		{[]string{"run", "--scenario", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{[]string{"run", "--scenario", "no-such-thing"}, `unknown scenario "no-such-thing"`},
		{[]string{"run", "--scenario", "baseline,bogus"}, `unknown scenario "bogus"`},
		{[]string{"run", "--scenario", ""}, "no scenario given"},
		{[]string{"run", "--bucket", "fast"}, "invalid value"},
		{[]string{"run", "--bucket", "0s"}, "--bucket 0s out of range"},
		{[]string{"run", "--budget", "-3"}, `invalid value "-3" for flag -budget: want a positive rate or auto`},
		{[]string{"run", "--budget", "200000"}, "--budget 200000 out of range"},
		{[]string{"run", "--budget", "lots"}, `invalid value "lots" for flag -budget`},
		{[]string{"run", "--timeout", "1ns"}, "--timeout 1ns out of range"},
		{[]string{"run", "--not-ready-grace", "-1s"}, "--not-ready-grace must be positive"},
		{[]string{"run", "--provider", "vmware"}, `--provider "vmware" unknown`},
		{[]string{"run", "--mode", "bogus"}, `--mode "bogus" unknown`},
		{[]string{"run", "--mode", "none,sidecars"}, `--mode "sidecars" unknown`},
		{[]string{"run", "--mode", "ambient,ambient"}, "--mode ambient given twice"},
		{[]string{"run", "--mode", ""}, `--mode "" unknown`},
		{[]string{"run", "--trials", "-1"}, "--trials -1 out of range"},
		{[]string{"run", "--trials", "101"}, "--trials 101 out of range"},
		{[]string{"run", "--trials", "two"}, "invalid value"},
		{[]string{"run", "--no-such-flag"}, "flag provided but not defined"},
		{[]string{"run", "stray"}, `unexpected argument "stray"`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := dispatch(c.args, &out, &errb)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", c.args, code)
		}
		msg := errb.String()
		if strings.Count(msg, "\n") != 1 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: stderr %q, want one line containing %q", c.args, msg, c.want)
		}
	}
}

func TestHelpExplainsEveryFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"run", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, f := range []string{"-provider", "-mode", "-scenario", "-out", "-bucket", "-budget", "-not-ready-grace", "-timeout", "-trials", "-flows"} {
		if !strings.Contains(errb.String(), f) {
			t.Errorf("--help does not explain %s", f)
		}
	}
}
