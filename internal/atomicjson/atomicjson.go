// Package atomicjson writes a JSON file so that a reader (or a kill) sees
// the old file or the new one, never half of one.
package atomicjson

import (
	"encoding/json"
	"os"
)

// Write marshals v indented and replaces path with it: written to a
// temporary file beside it, then renamed over it.
func Write(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
