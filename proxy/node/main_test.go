package node

import (
	"testing"

	"blastradius.dev/blastradius/internal/nstest"
)

// The listener tests create network namespaces and nftables rules, and run
// a whole proxy whose admin port binds in its own namespace: always in a
// network namespace of their own (even as root), so nothing they bind or
// change touches the host's network and the namespace's listeners are only
// the ones the tests open.
func TestMain(m *testing.M) { nstest.Main(m, "node", nstest.Options{OwnNetwork: true}) }
