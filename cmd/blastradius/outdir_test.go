package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// runRefused runs `blastradius run` with args and wants exit 2 and one line
// on stderr containing every want, before anything started.
func runRefused(t *testing.T, args []string, want ...string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(append([]string{"run"}, args...), &out, &errb)
	msg := errb.String()
	if code != 2 || strings.Count(msg, "\n") != 1 {
		t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line", args, code, msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("%v: stderr %q lacks %q", args, msg, w)
		}
	}
	if out.Len() > 0 {
		t.Errorf("%v: printed %q before refusing", args, out.String())
	}
}

func TestOutDirRefusedBeforeTheRun(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	runRefused(t, []string{"--out", filepath.Join(file, "out")}, "results folder "+filepath.Join(file, "out")+" cannot be created: not a directory")

	used := filepath.Join(dir, "used")
	if err := os.MkdirAll(used, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(used, "run.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	runRefused(t, []string{"--out", used}, "already holds a run.json; choose another --out")

	// Too little room: the threshold is the only thing lowered for the test.
	if err := prepareOutDir(filepath.Join(dir, "fine"), "run.json"); err != nil {
		t.Fatalf("an ordinary temporary folder refused: %v", err)
	}
	saved := minFreeBytes
	minFreeBytes = 1 << 62
	defer func() { minFreeBytes = saved }()
	roomless := filepath.Join(dir, "roomless")
	runRefused(t, []string{"--out", roomless}, "results folder "+roomless+": only ", " MiB free on its file system, a run needs at least ")
	if _, err := os.Stat(roomless); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused folder was left behind: %v", err)
	}
}

// A full file system and a read-only one, for real: the test re-runs itself
// in a user and mount namespace of its own (unshare -Urm, root or not) and
// mounts small tmpfs there.
func TestOutDirOnFullAndReadOnlyFileSystems(t *testing.T) {
	if os.Getenv("BLASTRADIUS_OUTDIR_CHILD") != "1" {
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("unshare (util-linux) not installed")
		}
		cmd := exec.Command("unshare", "-Urm", os.Args[0], "-test.run=^TestOutDirOnFullAndReadOnlyFileSystems$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "BLASTRADIUS_OUTDIR_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestOutDirOnFullAndReadOnlyFileSystems") {
			t.Fatalf("in a mount namespace: %v\n%s", err, out)
		}
		return
	}
	mount := func(size string) string {
		d := t.TempDir()
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size="+size); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() { _ = unix.Unmount(d, unix.MNT_DETACH) })
		return d
	}

	// Full: fill it to the last block first.
	full := mount("4m")
	f, err := os.Create(filepath.Join(full, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling: %v", err)
			}
			break
		}
	}
	f.Close()
	runRefused(t, []string{"--out", filepath.Join(full, "out")}, "results folder "+filepath.Join(full, "out"), "no space left on device")

	// Room, but less than a run needs.
	small := mount("16m")
	runRefused(t, []string{"--out", filepath.Join(small, "out")}, "only 16.0 MiB free on its file system, a run needs at least 64.0 MiB")

	// Read-only.
	ro := mount("128m")
	if err := unix.Mount("", ro, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	runRefused(t, []string{"--out", filepath.Join(ro, "out")}, "results folder "+filepath.Join(ro, "out")+" cannot be created: read-only file system")
}
