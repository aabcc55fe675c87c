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
	if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
	if err := Write(filepath.Join(t.TempDir(), "no", "such", "dir.json"), 1); err == nil {
		t.Error("writing into a missing folder succeeded")
	}
}
