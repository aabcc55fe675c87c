package inpod

import (
	"testing"

	"blastradius.dev/blastradius/internal/nstest"
)

// These tests create real network namespaces, veth pairs and nftables rules:
// as root in place, otherwise in user, network and mount namespaces of their
// own (nstest).
func TestMain(m *testing.M) { nstest.Main(m, "inpod", nstest.Options{}) }
