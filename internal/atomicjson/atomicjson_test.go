package atomicjson

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesWholly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f.json")
	for _, v := range []map[string]int{{"a": 1}, {"b": 2}} {
		if err := Write(p, v); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "{\n  \"b\": 2\n}\n" {
		t.Errorf("file %q, %v", b, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	if err := WriteMode(p, 3, 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	if err := Write(p, func() {}); err == nil {
		t.Error("an unmarshalable value was written")
	}
	if err := Write(filepath.Join(t.TempDir(), "no", "such", "dir.json"), 1); err == nil {
		t.Error("writing into a missing folder succeeded")
	}
}
