package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// minFreeBytes is the free space a run's results folder must have before
// anything starts. A default-matrix run writes about 1 MiB per trial (event
// files, logs, run.json rewritten as trials finish) and the report a few
// hundred KiB more; 64 MiB leaves room for long scenarios and many trials
// without refusing a nearly full laptop disk that would still do.
var minFreeBytes uint64 = 64 << 20

// minFreeInodes: every trial writes a few dozen files.
const minFreeInodes = 1024

func defaultOutDir(prefix string) string {
	return filepath.Join("results", prefix+time.Now().UTC().Format("20060102-150405"))
}

// fixOutDir settles a command's results folder before anything starts: the
// default (results/<prefix><UTC time>) when none was given, added to args as
// --out so a re-executed command (the sandboxed half) writes to the same
// one, and checked by prepareOutDir. It returns the args to re-execute with.
func fixOutDir(out *string, args []string, prefix, marker string) ([]string, error) {
	if *out == "" {
		*out = defaultOutDir(prefix)
		args = append(args, "--out", *out)
	}
	return args, prepareOutDir(*out, marker)
}

// prepareOutDir makes sure a run can write its results before the run starts:
// the folder does not already hold a run (marker), it can be created and
// written, and its file system has room. A run that found out half-way,
// when run.json or an event file failed to write, would lose what it
// measured. A folder this check created is removed again when it fails.
func prepareOutDir(dir, marker string) error {
	if dir == "" {
		return errors.New("no results folder given")
	}
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		return fmt.Errorf("results folder %s already holds a %s; choose another --out", dir, marker)
	}
	_, statErr := os.Stat(dir)
	created := errors.Is(statErr, os.ErrNotExist)
	fail := func(err error) error {
		if created {
			os.Remove(dir)
		}
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fail(fmt.Errorf("results folder %s cannot be created: %v", dir, unwrapPath(err)))
	}
	// A probe file, written and closed: permissions, a read-only mount and
	// a file system that is already full all fail here, on one line.
	probe, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fail(fmt.Errorf("results folder %s is not writable: %v", dir, unwrapPath(err)))
	}
	_, werr := probe.Write(make([]byte, 64<<10))
	cerr := probe.Close()
	os.Remove(probe.Name())
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fail(fmt.Errorf("results folder %s cannot be written: %v", dir, unwrapPath(werr)))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fail(fmt.Errorf("results folder %s: file system: %v", dir, err))
	}
	if free := st.Bavail * uint64(st.Bsize); free < minFreeBytes {
		return fail(fmt.Errorf("results folder %s: only %s free on its file system, a run needs at least %s; free some space or choose another --out",
			dir, mib(free), mib(minFreeBytes)))
	}
	if st.Files > 0 && st.Ffree < minFreeInodes {
		return fail(fmt.Errorf("results folder %s: only %d free inodes on its file system, a run needs at least %d; choose another --out",
			dir, st.Ffree, minFreeInodes))
	}
	return nil
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// unwrapPath drops the *PathError wrapping: the message names the folder
// already, once.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
