package events

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestArchiveRoundTrip(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	files := map[string]string{"f1.jsonl": "{\"a\":1}\n", "f2.jsonl": "{\"b\":2}\n{\"c\":3}\n"}
	for n, body := range files {
		if err := os.WriteFile(filepath.Join(src, n), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Not events: left out.
	os.WriteFile(filepath.Join(src, "notes.txt"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(src, "sub.jsonl"), 0o755)
	var buf bytes.Buffer
	if err := WriteArchive(src, &buf); err != nil {
		t.Fatal(err)
	}
	n, err := ReadArchive(&buf, dst)
	if err != nil || n != 2 {
		t.Fatalf("read %d files, err %v; want 2", n, err)
	}
	for name, body := range files {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || string(got) != body {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dst, "notes.txt")); err == nil {
		t.Error("a non-event file was sent")
	}
}

// A stream from a pod is input: names with paths, links and other files
// are refused, and garbage is an error, not a panic.
func TestReadArchiveRefusesUnsafeEntries(t *testing.T) {
	for _, h := range []tar.Header{
		{Name: "../escape.jsonl", Typeflag: tar.TypeReg},
		{Name: "sub/f.jsonl", Typeflag: tar.TypeReg},
		{Name: "f.txt", Typeflag: tar.TypeReg},
		{Name: ".hidden.jsonl", Typeflag: tar.TypeReg},
		{Name: "l.jsonl", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&h)
		tw.Close()
		dir := t.TempDir()
		if _, err := ReadArchive(&buf, dir); err == nil || !strings.Contains(err.Error(), "unexpected entry") {
			t.Errorf("%q: err %v, want unexpected entry", h.Name, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%q: wrote %v", h.Name, ents)
		}
	}
	if _, err := ReadArchive(strings.NewReader("not a tar stream at all, but long enough to be read as a header block..."), t.TempDir()); err == nil {
		t.Error("garbage accepted")
	}
}
