package localk8s

import (
	"os"
	"testing"
)

// The tests' clusters start this test binary as their nodes' init.
func TestMain(m *testing.M) {
	RunNodeInit()
	os.Exit(m.Run())
}
