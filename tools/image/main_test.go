package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// fakeBinary is random bytes standing in for the slim binary: the test checks
// the image carries them unchanged, not that they run.
func fakeBinary(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	b := make([]byte, 256<<10)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "blastradius-pod")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func runImage(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// archive reads a tarball into name -> contents.
func archive(t *testing.T, r io.Reader) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files, hdrs := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], hdrs[h.Name] = b, h
	}
}

// The archive is what `docker save` writes: manifest.json naming the config
// and the layers by path, with the tag in RepoTags; the config says
// linux/amd64 and the entrypoint; the one layer holds the binary unchanged,
// executable, at /blastradius.
func TestArchiveIsADockerSaveOfTheBinary(t *testing.T) {
	dir := t.TempDir()
	bin, want := fakeBinary(t, dir)
	out := filepath.Join(dir, "out", "image.tar")
	code, stdout, stderr := runImage(t, "-binary", bin, "-tag", "blastradius:v1.2.3", "-out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, out) || strings.Count(stdout, "\n") != 1 {
		t.Errorf("stdout %q: want one line naming the archive", stdout)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, _ := archive(t, f)

	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || len(manifest[0].RepoTags) != 1 || manifest[0].RepoTags[0] != "blastradius:v1.2.3" {
		t.Fatalf("manifest.json %+v: want one image tagged blastradius:v1.2.3 (as given: a loader normalises it to docker.io/library/, as the kubelet does the manifests' image)", manifest)
	}
	m := manifest[0]
	if len(m.Layers) != 1 {
		t.Fatalf("layers %v, want one", m.Layers)
	}

	var cfg struct {
		Architecture, OS string
		Created          string
		Config           struct{ Entrypoint, Cmd []string }
		RootFS           struct {
			Type    string
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	rawCfg, ok := files[m.Config]
	if !ok {
		t.Fatalf("config %s not in the archive", m.Config)
	}
	if err := json.Unmarshal(rawCfg, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/blastradius" || len(cfg.Config.Cmd) != 0 {
		t.Errorf("entrypoint %v cmd %v", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if cfg.Created != "1970-01-01T00:00:00Z" {
		t.Errorf("created %q, want the fixed epoch", cfg.Created)
	}
	// The config's name is its digest (the image ID).
	if sum := sha256.Sum256(rawCfg); "sha256:"+hex.EncodeToString(sum[:]) != m.Config {
		t.Errorf("config stored as %s, digest %x", m.Config, sum)
	}

	zr, err := gzip.NewReader(bytes.NewReader(files[m.Layers[0]]))
	if err != nil {
		t.Fatalf("layer %s: %v", m.Layers[0], err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(raw); len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("rootfs diff_ids %v do not match the layer", cfg.RootFS.DiffIDs)
	}
	layer, hdrs := archive(t, bytes.NewReader(raw))
	h, ok := hdrs["blastradius"]
	if !ok {
		t.Fatalf("layer has %v, no blastradius", keys(hdrs))
	}
	if h.Typeflag != tar.TypeReg || h.Mode&0o111 != 0o111 || h.Uid != 0 || h.Gid != 0 {
		t.Errorf("/blastradius: type %c mode %o owner %d:%d", h.Typeflag, h.Mode, h.Uid, h.Gid)
	}
	if !bytes.Equal(layer["blastradius"], want) {
		t.Errorf("/blastradius differs from the input binary (%d bytes, want %d)", len(layer["blastradius"]), len(want))
	}
	if h.ModTime.Unix() != 0 {
		t.Errorf("/blastradius mtime %v, want the fixed epoch", h.ModTime)
	}

	// go-containerregistry reads it back as the same image.
	tag, _ := name.NewTag("blastradius:v1.2.3")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := img.ConfigName(); id.String() != m.Config {
		t.Errorf("read back id %s, want %s", id, m.Config)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The same binary gives the same archive, byte for byte; another tag or
// SOURCE_DATE_EPOCH gives another.
func TestArchiveIsReproducible(t *testing.T) {
	dir := t.TempDir()
	bin, _ := fakeBinary(t, dir)
	build := func(tag, out string) []byte {
		if code, _, stderr := runImage(t, "-binary", bin, "-tag", tag, "-out", out); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := build("blastradius:dev", filepath.Join(dir, "a.tar"))
	b := build("blastradius:dev", filepath.Join(dir, "b.tar"))
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same binary differ")
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if c := build("blastradius:dev", filepath.Join(dir, "c.tar")); bytes.Equal(a, c) {
		t.Error("SOURCE_DATE_EPOCH changed nothing")
	}
	if d := build("blastradius:other", filepath.Join(dir, "d.tar")); bytes.Equal(a, d) {
		t.Error("the tag changed nothing")
	}
	// Nothing but the archives is left behind (no temporary files).
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".image-") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestBadInputExitsTwoWithOneLine(t *testing.T) {
	dir := t.TempDir()
	bin, _ := fakeBinary(t, dir)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o755)
	out := filepath.Join(dir, "x.tar")
	for _, c := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"-tag", "a:b", "-out", out}, "", "-binary is required"},
		{[]string{"-binary", bin, "-out", out}, "", "-tag is required"},
		{[]string{"-binary", bin, "-tag", "a:b"}, "", "-out is required"},
		{[]string{"-binary", filepath.Join(dir, "missing"), "-tag", "a:b", "-out", out}, "", "no such file"},
		{[]string{"-binary", empty, "-tag", "a:b", "-out", out}, "", "is empty"},
		{[]string{"-binary", bin, "-tag", "Not A Tag", "-out", out}, "", `-tag "Not A Tag"`},
		{[]string{"-binary", bin, "-tag", "a:b", "-out", out, "extra"}, "", `unexpected argument "extra"`},
		{[]string{"-nope"}, "", "flag provided but not defined"},
		{[]string{"-binary", bin, "-tag", "a:b", "-out", out}, "yesterday", "SOURCE_DATE_EPOCH"},
	} {
		t.Setenv("SOURCE_DATE_EPOCH", c.env)
		code, _, stderr := runImage(t, c.args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", c.args, code, stderr, c.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("bad input still wrote the archive")
	}
}
