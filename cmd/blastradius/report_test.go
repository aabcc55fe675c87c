package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `blastradius report`: usage errors exit 2, an unreadable folder 1, each
// with one line; a good folder gets report.html (or --out) and exit 0.
func TestReportCommand(t *testing.T) {
	good := filepath.Join("..", "..", "reports", "testdata", "small")
	empty := t.TempDir()
	broken := t.TempDir()
	if err := os.WriteFile(filepath.Join(broken, "run.json"), []byte(`{"schemaVersion": 1, "id": "x", "sta`), 0o644); err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"report"}, 2, "no results folder given"},
		{[]string{"report", good, "extra"}, 2, `unexpected argument "extra"`},
		{[]string{"report", "--bogus", good}, 2, "flag provided but not defined"},
		{[]string{"report", good, "--out"}, 2, "flag needs an argument"},
		{[]string{"report", empty}, 1, empty + ": no run.json (not a results folder?)"},
		{[]string{"report", filepath.Join(empty, "nope")}, 1, "no run.json"},
		{[]string{"report", broken}, 1, filepath.Join(broken, "run.json") + ": "},
		{[]string{"report", good, "--out", filepath.Join(outDir, "no", "such", "dir", "r.html")}, 1, "no such file or directory"},
	} {
		var out, errb bytes.Buffer
		code := dispatch(c.args, &out, &errb)
		msg := errb.String()
		if code != c.code || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and one line containing %q", c.args, code, msg, c.code, c.want)
		}
	}

	// --out before or after the folder.
	for i, args := range [][]string{
		{"report", good, "--out", filepath.Join(outDir, "a.html")},
		{"report", "--out", filepath.Join(outDir, "b.html"), good},
	} {
		var out, errb bytes.Buffer
		if code := dispatch(args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		name := []string{"a.html", "b.html"}[i]
		b, err := os.ReadFile(filepath.Join(outDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("<!DOCTYPE html>")) || !strings.Contains(out.String(), name) || !strings.Contains(out.String(), "== answer:") {
			t.Errorf("%v: wrote %d bytes starting %.20q, stdout %q", args, len(b), b, out.String())
		}
	}

	// Default: report.html inside the folder, and nothing else left there.
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(good, "run.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "run.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := dispatch([]string{"report", dir}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "report.html run.json" {
		t.Errorf("folder holds %v, want report.html and run.json", names)
	}
}
