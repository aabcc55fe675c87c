package localk8s

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// pauseSource is the sandbox program. There is no registry to pull
// registry.k8s.io/pause from, so Up compiles this into a static binary and
// wraps it in a one-layer image.
//
//go:embed pause/main.go
var pauseSource []byte

const pauseBuildTimeout = 3 * time.Minute

// pauseImageTar builds (or takes from the cache) the pause image as a
// docker-archive tar, the format `ctr images import` reads. The cache key
// is the source, so a changed program is rebuilt.
func pauseImageTar(ctx context.Context, l layout, logf func(string, ...any)) (string, error) {
	sum := sha256.Sum256(append(append([]byte{}, pauseSource...), runtime.GOARCH...))
	out := filepath.Join(l.cache(), "pause-"+hex.EncodeToString(sum[:8])+".tar")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(l.cache(), 0o755); err != nil {
		return "", err
	}
	logf("building the pause image (static Go binary) ...")
	t0 := time.Now()
	bin, err := buildPause(ctx, l)
	if err != nil {
		return "", err
	}
	logf("pause image built (%s)", time.Since(t0).Round(100*time.Millisecond))
	layer, err := singleFileLayer("pause", bin)
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = []string{"/pause"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	ref, err := name.NewTag(pauseImage)
	if err != nil {
		return "", err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return "", err
	}
	return out, os.Rename(tmp, out)
}

// buildPause compiles the embedded program in a throwaway module with the
// Go toolchain that built this binary's project (static: CGO off).
func buildPause(ctx context.Context, l layout) ([]byte, error) {
	src, err := os.MkdirTemp(l.cache(), "pause-src-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	if err := os.WriteFile(filepath.Join(src, "main.go"), pauseSource, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module pause\n\ngo 1.22\n"), 0o644); err != nil {
		return nil, err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, serr := os.Stat(goBin); serr != nil {
			return nil, fmt.Errorf("the pause image is compiled on first use and needs the go command: not in PATH nor at %s", goBin)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, pauseBuildTimeout)
	defer cancel()
	bin := filepath.Join(src, "pause")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build pause: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return os.ReadFile(bin)
}

func singleFileLayer(name string, content []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}
