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
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// tree makes a small root file system: a program, a symbolic link to it
// (relative) and one to the loader's way (absolute), a private directory, a
// sticky /tmp, a setuid file and an empty directory.
func tree(t *testing.T, dir string) string {
	t.Helper()
	root := filepath.Join(dir, "root")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{"usr/local/bin", 0o755},
		{"usr/sbin", 0o755},
		{"etc/private", 0o750},
		{"tmp", os.ModeSticky | 0o777},
		{"var/empty", 0o755},
	} {
		p := filepath.Join(root, d.path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, d.mode); err != nil { // past the umask, with the sticky bit
			t.Fatal(err)
		}
	}
	write := func(p, content string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(root, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/local/bin/prog", "#!program\n", 0o755)
	write("etc/private/conf", "secret=1\n", 0o640)
	write("usr/sbin/suid", "s\n", os.ModeSetuid|0o755)
	for link, target := range map[string]string{
		"usr/sbin/prog":  "../local/bin/prog",
		"usr/sbin/abs":   "/usr/local/bin/prog",
		"usr/sbin/loose": "missing", // dangling: kept as it is
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// imageFiles reads the archive: its manifest.json entry, its config and its
// one layer's entries in order.
func imageFiles(t *testing.T, archivePath string) (cfg map[string]any, layer map[string][]byte, hdrs []*tar.Header) {
	t.Helper()
	f, err := os.Open(archivePath)
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
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 || len(manifest[0].Layers) != 1 {
		t.Fatalf("manifest.json %s (%v): want one image of one layer", files["manifest.json"], err)
	}
	if err := json.Unmarshal(files[manifest[0].Config], &cfg); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(files[manifest[0].Layers[0]]))
	if err != nil {
		t.Fatal(err)
	}
	layer = map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return cfg, layer, hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		layer[h.Name] = b
		hdrs = append(hdrs, h)
	}
}

// An image of a tree holds the tree: directories before what is in them,
// modes (sticky, setuid, private) and link targets as they are, owner root,
// fixed times; the config has the entrypoint, environment, user and working
// directory; the index names it by reference with the archive, image ID and
// manifest digest go-containerregistry reads back.
func TestRootTreeRoundTrips(t *testing.T) {
	dir := t.TempDir()
	root := tree(t, dir)
	out := filepath.Join(dir, "images", "prog.tar")
	index := filepath.Join(dir, "images", "images.json")
	code, stdout, stderr := runImage(t, "-root", root, "-entrypoint", "/usr/sbin/prog",
		"-env", "PATH=/usr/local/bin:/usr/sbin", "-env", "MODE=a=b", "-user", "1337:1337", "-workdir", "/var/empty",
		"-tag", "example.local/x/prog:v0.0.0-20260827124520-eed52ebb66ad", "-out", out, "-index", index)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, out) || strings.Count(stdout, "\n") != 1 {
		t.Errorf("stdout %q: want one line naming the archive", stdout)
	}
	cfg, layer, hdrs := imageFiles(t, out)
	c, _ := json.Marshal(cfg["config"])
	var got struct {
		Entrypoint, Cmd, Env []string
		User, WorkingDir     string
	}
	json.Unmarshal(c, &got)
	if strings.Join(got.Entrypoint, " ") != "/usr/sbin/prog" || len(got.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q", got.Entrypoint, got.Cmd)
	}
	if strings.Join(got.Env, " ") != "PATH=/usr/local/bin:/usr/sbin MODE=a=b" {
		t.Errorf("env %q", got.Env)
	}
	if got.User != "1337:1337" || got.WorkingDir != "/var/empty" {
		t.Errorf("user %q workdir %q", got.User, got.WorkingDir)
	}
	if cfg["os"] != "linux" || cfg["architecture"] != "amd64" || cfg["created"] != "1970-01-01T00:00:00Z" {
		t.Errorf("platform %v/%v created %v", cfg["os"], cfg["architecture"], cfg["created"])
	}

	type entry struct {
		typ  byte
		mode int64
		link string
	}
	want := map[string]entry{
		"etc/":               {tar.TypeDir, 0o755, ""},
		"etc/private/":       {tar.TypeDir, 0o750, ""},
		"etc/private/conf":   {tar.TypeReg, 0o640, ""},
		"tmp/":               {tar.TypeDir, 0o1777, ""},
		"usr/":               {tar.TypeDir, 0o755, ""},
		"usr/local/":         {tar.TypeDir, 0o755, ""},
		"usr/local/bin/":     {tar.TypeDir, 0o755, ""},
		"usr/local/bin/prog": {tar.TypeReg, 0o755, ""},
		"usr/sbin/":          {tar.TypeDir, 0o755, ""},
		"usr/sbin/abs":       {tar.TypeSymlink, 0o777, "/usr/local/bin/prog"},
		"usr/sbin/loose":     {tar.TypeSymlink, 0o777, "missing"},
		"usr/sbin/prog":      {tar.TypeSymlink, 0o777, "../local/bin/prog"},
		"usr/sbin/suid":      {tar.TypeReg, 0o4755, ""},
		"var/":               {tar.TypeDir, 0o755, ""},
		"var/empty/":         {tar.TypeDir, 0o755, ""},
	}
	seen := map[string]bool{}
	for _, h := range hdrs {
		w, ok := want[h.Name]
		if !ok {
			t.Errorf("unexpected entry %q", h.Name)
			continue
		}
		seen[h.Name] = true
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Linkname != w.link {
			t.Errorf("%s: type %c mode %o link %q; want %c %o %q", h.Name, h.Typeflag, h.Mode, h.Linkname, w.typ, w.mode, w.link)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "root" || h.Gname != "root" || h.ModTime.Unix() != 0 {
			t.Errorf("%s: owner %d:%d (%s:%s) mtime %v; want root and the epoch", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
		if parent := path.Dir(strings.TrimSuffix(h.Name, "/")); parent != "." && !seen[parent+"/"] {
			t.Errorf("%s comes before its directory", h.Name)
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no entry %q", name)
		}
	}
	if string(layer["usr/local/bin/prog"]) != "#!program\n" || string(layer["etc/private/conf"]) != "secret=1\n" {
		t.Errorf("file contents changed: %q %q", layer["usr/local/bin/prog"], layer["etc/private/conf"])
	}

	var idx Index
	raw, err := os.ReadFile(index)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &idx); err != nil || len(idx.Images) != 1 {
		t.Fatalf("index %s (%v): want one image", raw, err)
	}
	e := idx.Images[0]
	tag, _ := name.NewTag(e.Reference)
	img, err := tarball.ImageFromPath(filepath.Join(filepath.Dir(index), e.Archive), &tag)
	if err != nil {
		t.Fatalf("index entry %+v: %v", e, err)
	}
	id, _ := img.ConfigName()
	digest, _ := img.Digest()
	st, _ := os.Stat(out)
	if e.Archive != "prog.tar" || e.ID != id.String() || e.Digest != digest.String() || e.Platform != "linux/amd64" || e.Size != st.Size() {
		t.Errorf("index entry %+v; want archive prog.tar, id %s, digest %s, linux/amd64, size %d", e, id, digest, st.Size())
	}
	if !strings.Contains(stdout, id.String()) {
		t.Errorf("stdout %q does not name the id %s", stdout, id)
	}
}

// The same tree gives the same image wherever it sits and whatever its
// files' times and owners (another copy, later); a mode changes it. The
// index keeps one entry per reference, sorted.
func TestRootTreeIsReproducible(t *testing.T) {
	dir := t.TempDir()
	a := tree(t, filepath.Join(dir, "a"))
	b := tree(t, filepath.Join(dir, "b"))
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(b, "usr/local/bin/prog"), later, later)
	os.Lchown(filepath.Join(b, "etc/private/conf"), 1234, 1234) // root runs the tests in CI; elsewhere a no-op
	index := filepath.Join(dir, "images.json")
	build := func(root, tag, out string) string {
		t.Helper()
		code, _, stderr := runImage(t, "-root", root, "-entrypoint", "/usr/local/bin/prog", "-env", "PATH=/bin",
			"-tag", tag, "-out", filepath.Join(dir, out), "-index", index)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		tg, _ := name.NewTag(tag)
		img, err := tarball.ImageFromPath(filepath.Join(dir, out), &tg)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	da := build(a, "example.local/p:1", "a.tar")
	db := build(b, "example.local/p:1", "b.tar")
	if da != db {
		t.Fatalf("two copies of one tree: digests %s and %s", da, db)
	}
	fa, _ := os.ReadFile(filepath.Join(dir, "a.tar"))
	fb, _ := os.ReadFile(filepath.Join(dir, "b.tar"))
	if !bytes.Equal(fa, fb) {
		t.Error("same digest, different archive bytes")
	}
	os.Chmod(filepath.Join(b, "etc/private/conf"), 0o644)
	if dc := build(b, "example.local/other:1", "c.tar"); dc == da {
		t.Error("a mode changed nothing")
	}
	var idx Index
	raw, _ := os.ReadFile(index)
	json.Unmarshal(raw, &idx)
	var refs []string
	for _, e := range idx.Images {
		refs = append(refs, e.Reference+"="+e.Archive)
	}
	if got := strings.Join(refs, " "); got != "example.local/other:1=c.tar example.local/p:1=b.tar" {
		t.Errorf("index %s", got)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestRootBadInputExitsTwoWithOneLine(t *testing.T) {
	dir := t.TempDir()
	root := tree(t, dir)
	bin, _ := fakeBinary(t, dir)
	out := filepath.Join(dir, "x.tar")
	fifoRoot := filepath.Join(dir, "fifo")
	os.MkdirAll(filepath.Join(fifoRoot, "bin"), 0o755)
	os.WriteFile(filepath.Join(fifoRoot, "bin", "x"), []byte("x"), 0o755)
	if err := syscall.Mkfifo(filepath.Join(fifoRoot, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := []string{"-tag", "a:b", "-out", out}
	with := func(args ...string) []string { return append(args, ok...) }
	for _, c := range []struct {
		args []string
		want string
	}{
		{ok, "-binary is required (or -root DIR"},
		{with("-binary", bin, "-root", root), "-binary and -root exclude each other"},
		{with("-binary", bin, "-entrypoint", "/x"), "-entrypoint goes with -root"},
		{with("-binary", bin, "-env", "A=b"), "-env goes with -root"},
		{with("-binary", bin, "-user", "1"), "-user goes with -root"},
		{with("-binary", bin, "-workdir", "/"), "-workdir goes with -root"},
		{with("-root", root), "-entrypoint is required with -root"},
		{with("-root", root, "-entrypoint", "usr/local/bin/prog"), `-entrypoint "usr/local/bin/prog" is not a clean absolute path`},
		{with("-root", root, "-entrypoint", "/usr/../usr/local/bin/prog"), "is not a clean absolute path"},
		{with("-root", root, "-entrypoint", "/usr/local/bin/nope"), "-entrypoint /usr/local/bin/nope: not in the tree"},
		{with("-root", root, "-entrypoint", "/usr/local/bin"), "not a regular file"},
		{with("-root", root, "-entrypoint", "/etc/private/conf"), "not executable"},
		{with("-root", root, "-entrypoint", "/usr/sbin/loose"), "/usr/sbin/loose: not in the tree"},
		{with("-root", root, "-entrypoint", "/usr/sbin/prog", "-env", "PATH"), `-env "PATH" is not KEY=VALUE`},
		{with("-root", root, "-entrypoint", "/usr/sbin/prog", "-env", "=x"), `-env "=x" is not KEY=VALUE`},
		{with("-root", root, "-entrypoint", "/usr/sbin/prog", "-env", "A=1", "-env", "A=2"), "-env A given twice"},
		{with("-root", root, "-entrypoint", "/usr/sbin/prog", "-user", "istio"), `-user "istio" is not uid[:gid]`},
		{with("-root", root, "-entrypoint", "/usr/sbin/prog", "-workdir", "opt"), `-workdir "opt" is not a clean absolute path`},
		{with("-root", filepath.Join(dir, "missing"), "-entrypoint", "/x"), "-root: stat"},
		{with("-root", bin, "-entrypoint", "/x"), "is not a directory"},
		{with("-root", fifoRoot, "-entrypoint", "/bin/x"), "pipe is a p---------: only directories, regular files and symbolic links"},
		{[]string{"-root", root, "-entrypoint", "/usr/sbin/prog", "-out", out}, "-tag is required"},
		{[]string{"-root", root, "-entrypoint", "/usr/sbin/prog", "-tag", "a:b"}, "-out is required"},
		{[]string{"-root", root, "-entrypoint", "/usr/sbin/prog", "-tag", "Not A Tag", "-out", out}, `-tag "Not A Tag"`},
	} {
		code, _, stderr := runImage(t, c.args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", c.args, code, stderr, c.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("bad input still wrote the archive")
	}
	// An index that is not one is reported, in one line, and left alone.
	index := filepath.Join(dir, "bad.json")
	os.WriteFile(index, []byte("not json"), 0o644)
	code, _, stderr := runImage(t, "-root", root, "-entrypoint", "/usr/sbin/prog", "-tag", "a:b", "-out", out, "-index", index)
	if code != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "-index: "+index) {
		t.Errorf("bad index: exit %d, stderr %q", code, stderr)
	}
	if b, _ := os.ReadFile(index); string(b) != "not json" {
		t.Errorf("bad index rewritten: %q", b)
	}
}
