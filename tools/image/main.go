// Command image writes the blastradius container image: FROM scratch, one
// layer holding the slim static binary at /blastradius (the entrypoint), as a
// docker-archive tarball (the format `docker save` writes), which kind's
// image-archive loader and `ctr images import` accept. It needs no Docker
// engine: the image is assembled with go-containerregistry.
//
//	go run ./tools/image -binary bin/blastradius-pod -tag blastradius:dev -out bin/blastradius-image.tar
//
// The archive is reproducible: every timestamp is fixed (the Unix epoch, or
// SOURCE_DATE_EPOCH when set), so the same binary gives the same bytes and
// the same image ID, and reloading an unchanged image is a no-op for
// containerd.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
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

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	binary := fs.String("binary", "", "the static linux binary to put at "+Path+" (make images builds bin/blastradius-pod with CGO_ENABLED=0 -tags nokube)")
	tag := fs.String("tag", "", "image name and tag, e.g. blastradius:dev (what the manifests' image: says)")
	out := fs.String("out", "", "docker-archive tarball to write, e.g. bin/blastradius-image.tar")
	arch := fs.String("arch", "amd64", "the binary's architecture (the image's platform is linux/<arch>)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "usage: go run ./tools/image -binary file -tag name:tag -out file.tar")
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "image: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return fail("unexpected argument %q", fs.Arg(0))
	case *binary == "":
		return fail("-binary is required")
	case *tag == "":
		return fail("-tag is required")
	case *out == "":
		return fail("-out is required")
	case *arch == "":
		return fail("-arch is empty")
	}
	created, err := sourceDate(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return fail("%v", err)
	}
	ref, err := name.NewTag(*tag)
	if err != nil {
		return fail("-tag %q: %v", *tag, err)
	}
	bin, err := os.ReadFile(*binary)
	if err != nil {
		return fail("-binary: %v", err)
	}
	if len(bin) == 0 {
		return fail("-binary %s is empty", *binary)
	}
	img, err := Build(bin, *arch, created)
	if err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	if err := write(*out, ref, img); err != nil {
		fmt.Fprintf(stderr, "image: %v\n", err)
		return 1
	}
	id, _ := img.ConfigName()
	st, _ := os.Stat(*out)
	var size int64
	if st != nil {
		size = st.Size()
	}
	fmt.Fprintf(stdout, "image %s (id %s, linux/%s) written to %s, %.1f MiB\n", *tag, id, *arch, *out, float64(size)/(1<<20))
	return 0
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

// Build returns the image: FROM scratch, one layer with binary at Path
// (mode 0755, root-owned) and an empty /tmp (1777, for whatever in the
// binary wants a temporary file), entrypoint Path, platform linux/arch, every
// timestamp created.
func Build(binary []byte, arch string, created time.Time) (v1.Image, error) {
	layerTar, err := layerTar(binary, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "blastradius tools/image: " + Path,
			Comment:   "the slim static blastradius binary",
		},
	})
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
	cfg.Config.Entrypoint = []string{Path}
	cfg.Config.Cmd = nil
	cfg.Config.WorkingDir = "/"
	// No PATH or other environment: the manifests give the command as an
	// absolute path and the binary reads no environment of its own.
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
		h.ModTime, h.AccessTime, h.ChangeTime = created, time.Time{}, time.Time{}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "root", "root"
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
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
