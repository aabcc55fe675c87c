// Package atomicjson is the one atomic JSON writer of the project (run.json,
// soak.json, bench files, the data plane's registry, local-k8s's state): a
// reader, a kill or a power loss sees the old file or the new one, never
// half of one or an empty one.
package atomicjson

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Write marshals v indented and replaces path with it, readable by all
// (0644).
func Write(path string, v any) error { return WriteMode(path, v, 0o644) }

// WriteMode is Write with the file's permissions: written to a temporary
// file beside path, synced, then renamed over it.
func WriteMode(path string, v any, perm os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	err = func() error {
		if _, err := tmp.Write(append(b, '\n')); err != nil {
			tmp.Close()
			return err
		}
		// fsync before rename: after a power loss the file is the old or the
		// new version, never an empty one.
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Chmod(tmp.Name(), perm); err != nil {
			return err
		}
		return os.Rename(tmp.Name(), path)
	}()
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}
