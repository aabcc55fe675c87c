package evidence

import (
	"testing"

	"blastradius.dev/blastradius/internal/nstest"
)

// The namespace tests create network namespaces and nftables rules: in
// namespaces of their own (nstest), so the test's own counters see no
// traffic but its own.
func TestMain(m *testing.M) { nstest.Main(m, "evidence", nstest.Options{OwnNetwork: true}) }
