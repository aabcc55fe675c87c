//go:build !nokube

package main

import (
	"bytes"
	"strings"
	"testing"
)

// `blastradius cluster` refuses bad input with one line and exit code 2
// before touching anything.
func TestClusterBadInput(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"cluster"}, "want a subcommand"},
		{[]string{"cluster", "sideways"}, `unknown subcommand "sideways"`},
		{[]string{"cluster", "up"}, "--provider local-k8s or kind is required"},
		{[]string{"cluster", "up", "--provider", "kind"}, "--provider kind has only down"},
		{[]string{"cluster", "down", "--provider", "kind", "--kind-config", "/nonexistent/kind.yaml"}, "/nonexistent/kind.yaml"},
		{[]string{"cluster", "up", "--provider", "local-k8s", "extra"}, `unexpected argument "extra"`},
		{[]string{"cluster", "up", "--nodes", "x"}, "invalid value"},
		{[]string{"cluster", "up", "--provider", "local-k8s", "--nodes", "0"}, "--nodes 0 out of range 1..9"},
		{[]string{"cluster", "up", "--provider", "local-k8s", "--nodes", "10"}, "--nodes 10 out of range 1..9"},
		{[]string{"cluster", "load-image", "--provider", "local-k8s"}, "give --load-image"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := dispatch(c.args, &out, &errb)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", c.args, code, errb.String())
		}
		if got := strings.TrimRight(errb.String(), "\n"); strings.Count(got, "\n") != 0 || !strings.Contains(got, c.want) {
			t.Errorf("%v: stderr %q, want one line containing %q", c.args, got, c.want)
		}
	}
}

func TestClusterHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"cluster", "up", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"-provider", "-nodes", "-dir", "-bin-dir", "-load-image", "docs/local-k8s.md"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}
