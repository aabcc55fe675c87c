// Command image writes container images as docker-archive tarballs (the
// format `docker save` writes), which kind's image-archive loader and
// `ctr images import` accept. It needs no Docker engine: the images are
// assembled with go-containerregistry, FROM scratch, one layer each.
//
// With -binary it writes the blastradius image: the slim static binary at
// /blastradius (the entrypoint) and an empty /tmp.
//
//	go run ./tools/image -binary bin/blastradius-pod -tag blastradius:dev -out bin/blastradius-image.tar
//
// With -root it writes an image of a directory tree (tools/istio/images.sh
// assembles Istio's that way): every directory, regular file and symbolic
// link under DIR, with its permission bits (setuid, setgid and sticky
// included) and link target, owned by root; -entrypoint (which must be an
// executable file in the tree), -env, -user and -workdir go into the config.
// -index adds the image (reference, archive, image ID, manifest digest) to a
// JSON index, replacing an entry of the same reference.
//
//	go run ./tools/image -root DIR -entrypoint /usr/local/bin/x -env PATH=/usr/local/bin \
//		-tag example.local/x:v1 -out x.tar -index images.json
//
// The archives are reproducible: every timestamp is fixed (the Unix epoch, or
// SOURCE_DATE_EPOCH when set) and nothing of the host (paths, owners, times)
// enters them, so the same input gives the same bytes and the same image ID,
// and reloading an unchanged image is a no-op for containerd.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Path is where the binary sits in the image, and the entrypoint. The
// manifests run it as the container command (manifests.Binary).
const Path = "/blastradius"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// listFlag is a flag that may be given more than once.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

var userRE = regexp.MustCompile(`^[0-9]+(:[0-9]+)?$`)

func run(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("image", flag.ContinueOnError)
	flags.SetOutput(io.Discard)
	binary := flags.String("binary", "", "the static linux binary to put at "+Path+" (make images builds bin/blastradius-pod with CGO_ENABLED=0 -tags nokube)")
	root := flags.String("root", "", "instead of -binary: a directory whose whole tree is the image's file system")
	entrypoint := flags.String("entrypoint", "", "with -root: the entrypoint, an absolute path of an executable file in the tree")
	var env listFlag
	flags.Var(&env, "env", "with -root: KEY=VALUE for the image's environment (repeatable)")
	user := flags.String("user", "", "with -root: uid[:gid] the container runs as (numeric: there is no user database to look a name up in)")
	workdir := flags.String("workdir", "", "with -root: the working directory (default /)")
	tag := flags.String("tag", "", "image name and tag, e.g. blastradius:dev (what the manifests' image: says)")
	out := flags.String("out", "", "docker-archive tarball to write, e.g. bin/blastradius-image.tar")
	arch := flags.String("arch", "amd64", "the binary's architecture (the image's platform is linux/<arch>)")
	index := flags.String("index", "", "JSON index to add the image to (created if missing; an entry of the same reference is replaced)")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			flags.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: go run ./tools/image -binary file -tag name:tag -out file.tar")
			fmt.Fprintln(stderr, "       go run ./tools/image -root dir -entrypoint /path [-env K=V]... [-user uid[:gid]] [-workdir /dir] -tag name:tag -out file.tar [-index file.json]")
			flags.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "image: "+format+"\n", a...)
		return 2
	}
	rootOnly := ""
	switch {
	case *entrypoint != "":
		rootOnly = "-entrypoint"
	case len(env) > 0:
		rootOnly = "-env"
	case *user != "":
		rootOnly = "-user"
	case *workdir != "":
		rootOnly = "-workdir"
	}
	switch {
	case flags.NArg() > 0:
		return fail("unexpected argument %q", flags.Arg(0))
	case *binary == "" && *root == "":
		return fail("-binary is required (or -root DIR for an image of a directory tree)")
	case *binary != "" && *root != "":
		return fail("-binary and -root exclude each other")
	case *binary != "" && rootOnly != "":
		return fail("%s goes with -root, not -binary", rootOnly)
	case *root != "" && *entrypoint == "":
		return fail("-entrypoint is required with -root")
	case *root != "" && !absClean(*entrypoint):
		return fail("-entrypoint %q is not a clean absolute path", *entrypoint)
	case *workdir != "" && !absClean(*workdir):
		return fail("-workdir %q is not a clean absolute path", *workdir)
	case *user != "" && !userRE.MatchString(*user):
		return fail("-user %q is not uid[:gid] (numbers)", *user)
	case *tag == "":
		return fail("-tag is required")
	case *out == "":
		return fail("-out is required")
	case *arch == "":
		return fail("-arch is empty")
	}
	seen := map[string]bool{}
	for _, kv := range env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n") {
			return fail("-env %q is not KEY=VALUE", kv)
		}
		if seen[k] {
			return fail("-env %s given twice", k)
		}
		seen[k] = true
	}
	created, err := sourceDate(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return fail("%v", err)
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return fail("-tag %q: %v", *tag, err)
	}
	var img v1.Image
	if *binary != "" {
		bin, err := os.ReadFile(*binary)
		if err != nil {
			return fail("-binary: %v", err)
		}
		if len(bin) == 0 {
			return fail("-binary %s is empty", *binary)
		}
		if img, err = Build(bin, *arch, created); err != nil {
			fmt.Fprintf(stderr, "image: %v\n", err)
			return 1
		}
	} else {
		if st, err := os.Stat(*root); err != nil {
			return fail("-root: %v", err)
		} else if !st.IsDir() {
			return fail("-root %s is not a directory", *root)
		}
		if err := executableIn(*root, *entrypoint); err != nil {
			return fail("-entrypoint %s: %v", *entrypoint, err)
		}
		layer, err := RootLayerTar(*root, created)
		if err != nil {
			return fail("-root: %v", err)
		}
		wd := *workdir
		if wd == "" {
			wd = "/"
		}
		img, err = BuildRoot(layer, Config{
			Entrypoint: []string{*entrypoint},
			Env:        env,
			User:       *user,
			WorkingDir: wd,
		}, *arch, created)
		if err != nil {
			fmt.Fprintf(stderr, "image: %v\n", err)
			return 1
		}
	}
	if err := write(*out, ref, img); err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	id, err := img.ConfigName()
	if err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	st, _ := os.Stat(*out)
	var size int64
	if st != nil {
		size = st.Size()
	}
	if *index != "" {
		digest, err := img.Digest()
		if err != nil {
			fmt.Fprintf(stderr, "image: %v\n", err)
			return 1
		}
		e := IndexEntry{Reference: *tag, Archive: *out, ID: id.String(), Digest: digest.String(), Platform: "linux/" + *arch, Size: size}
		if err := addToIndex(*index, e); err != nil {
			fmt.Fprintf(stderr, "image: -index: %v\n", err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "image %s (id %s, linux/%s) written to %s, %.1f MiB\n", *tag, id, *arch, *out, float64(size)/(1<<20))
	return 0
}

func absClean(p string) bool { return path.IsAbs(p) && path.Clean(p) == p }

// executableIn checks that p (absolute, in the image) names an executable
// regular file under root, following symbolic links as the container would:
// absolute targets from root, none leaving it.
func executableIn(root, p string) error {
	for range 40 {
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(p)))
		if err != nil {
			return errors.New("not in the tree")
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(root, filepath.FromSlash(p)))
			if err != nil {
				return err
			}
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			p = path.Clean(target)
		case !fi.Mode().IsRegular():
			return errors.New("not a regular file")
		case fi.Mode().Perm()&0o111 == 0:
			return errors.New("not executable")
		default:
			return nil
		}
	}
	return errors.New("too many levels of symbolic links")
}

// sourceDate is the image's fixed timestamp: SOURCE_DATE_EPOCH (seconds) when
// set, otherwise the Unix epoch.
func sourceDate(env string) (time.Time, error) {
	if env == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	s, err := strconv.ParseInt(env, 10, 64)
	if err != nil || s < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q is not a number of seconds", env)
	}
	return time.Unix(s, 0).UTC(), nil
}

// Config is what an image of a tree says about running it.
type Config struct {
	Entrypoint []string
	Env        []string
	User       string
	WorkingDir string
}

// Build returns the image: FROM scratch, one layer with binary at Path
// (mode 0755, root-owned) and an empty /tmp (1777, for whatever in the
// binary wants a temporary file), entrypoint Path, platform linux/arch, every
// timestamp created.
func Build(binary []byte, arch string, created time.Time) (v1.Image, error) {
	layerTar, err := layerTar(binary, created)
	if err != nil {
		return nil, err
	}
	// No PATH or other environment: the manifests give the command as an
	// absolute path and the binary reads no environment of its own.
	return image(layerTar, Config{Entrypoint: []string{Path}, WorkingDir: "/"}, arch, created,
		v1.History{CreatedBy: "blastradius tools/image: " + Path, Comment: "the slim static blastradius binary"}, false)
}

// BuildRoot returns the image of a tree: FROM scratch, layerTar (from
// RootLayerTar) its one layer, cfg its config, platform linux/arch, every
// timestamp created.
func BuildRoot(layerTar []byte, cfg Config, arch string, created time.Time) (v1.Image, error) {
	return image(layerTar, cfg, arch, created,
		v1.History{CreatedBy: "blastradius tools/image: -root"}, true)
}

func image(layerTar []byte, c Config, arch string, created time.Time, h v1.History, cache bool) (v1.Image, error) {
	opts := []tarball.LayerOption{}
	if cache {
		// A tree's layer may be large: compress it once, not once for its
		// digest and again for the archive.
		opts = append(opts, tarball.WithCompressedCaching)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	h.Created = v1.Time{Time: created}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer, History: h})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Created = v1.Time{Time: created}
	cfg.Config.Entrypoint = c.Entrypoint
	cfg.Config.Cmd = nil
	cfg.Config.WorkingDir = c.WorkingDir
	if len(c.Env) > 0 {
		cfg.Config.Env = slices.Clone(c.Env)
	}
	cfg.Config.User = c.User
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// layerTar is the layer's uncompressed tar: directory entries before the
// files in them, fixed times and owners, so it is byte-for-byte reproducible.
func layerTar(binary []byte, created time.Time) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	entries := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777},
		{Typeflag: tar.TypeReg, Name: Path[1:], Mode: 0o755, Size: int64(len(binary))},
	}
	for _, h := range entries {
		if err := writeHeader(tw, h, created); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(binary); err != nil {
				return nil, fmt.Errorf("layer: %w", err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return b.Bytes(), nil
}

// writeHeader writes h with everything that would vary by host fixed: the
// time, root ownership, the PAX format.
func writeHeader(tw *tar.Writer, h *tar.Header, created time.Time) error {
	h.ModTime, h.AccessTime, h.ChangeTime = created, time.Time{}, time.Time{}
	h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "root", "root"
	h.Format = tar.FormatPAX
	return tw.WriteHeader(h)
}

// RootLayerTar is the uncompressed layer of the tree under root: one entry
// for each directory (name ending in /), regular file and symbolic link,
// in lexical order (so a directory precedes what is in it), not root itself.
// Kept: permission bits with setuid, setgid and sticky, link targets as they
// are. Fixed: times (created) and owners (root). A file linked more than
// once is stored once per name. Any other kind of file (device, FIFO,
// socket) is an error.
func RootLayerTar(root string, created time.Time) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m := fi.Mode()
		h := &tar.Header{Name: rel, Mode: int64(m.Perm())}
		if m&fs.ModeSetuid != 0 {
			h.Mode |= 0o4000
		}
		if m&fs.ModeSetgid != 0 {
			h.Mode |= 0o2000
		}
		if m&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		var content string
		switch {
		case m.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, rel+"/"
		case m&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, target, 0o777
		case m.IsRegular():
			h.Typeflag, h.Size = tar.TypeReg, fi.Size()
			content = p
		default:
			return fmt.Errorf("%s is a %v: only directories, regular files and symbolic links go into a layer", p, m.Type())
		}
		if err := writeHeader(tw, h, created); err != nil {
			return err
		}
		if content == "" {
			return nil
		}
		f, err := os.Open(content)
		if err != nil {
			return err
		}
		defer f.Close()
		if n, err := io.Copy(tw, f); err != nil {
			return err
		} else if n != h.Size {
			return fmt.Errorf("%s changed size while read", p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Index is the JSON an -index file holds: what was built, so that a run can
// record which images it loaded.
type Index struct {
	Images []IndexEntry `json:"images"`
}

// IndexEntry is one image of an Index.
type IndexEntry struct {
	// Reference is the image's name and tag, as the archive's RepoTags says.
	Reference string `json:"reference"`
	// Archive is the docker-archive tarball, relative to the index file's
	// directory when it is under it.
	Archive string `json:"archive"`
	// ID is the config's digest: the image ID containerd and the kubelet
	// report (imageID).
	ID string `json:"id"`
	// Digest is the manifest's digest as go-containerregistry writes the
	// manifest (what a registry would hold). A docker-archive carries no
	// manifest: containerd writes one of its own on import, whose digest
	// (`ctr images ls`) differs; the ID does not.
	Digest   string `json:"digest"`
	Platform string `json:"platform"`
	// Size is the archive's size in bytes.
	Size int64 `json:"size"`
}

// addToIndex adds e to the index at file, replacing an entry of the same
// reference, entries sorted by reference, written through a temporary file.
func addToIndex(file string, e IndexEntry) error {
	var idx Index
	raw, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(raw, &idx); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	absIdx, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return err
	}
	absOut, err := filepath.Abs(e.Archive)
	if err != nil {
		return err
	}
	if rel, err := filepath.Rel(absIdx, absOut); err == nil && filepath.IsLocal(rel) {
		e.Archive = filepath.ToSlash(rel)
	} else {
		e.Archive = absOut
	}
	idx.Images = slices.DeleteFunc(idx.Images, func(o IndexEntry) bool { return o.Reference == e.Reference })
	idx.Images = append(idx.Images, e)
	slices.SortFunc(idx.Images, func(a, b IndexEntry) int { return strings.Compare(a.Reference, b.Reference) })
	out, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(file, append(out, '\n'))
}

func writeFile(file string, b []byte) error {
	dir := filepath.Dir(file)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".index-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// write writes img tagged ref as a docker-archive tarball at path, through a
// temporary file renamed into place, so an interrupted build never leaves a
// truncated archive for a loader to choke on.
func write(path string, ref name.Tag, img v1.Image) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".image-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tarball.Write(ref, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
