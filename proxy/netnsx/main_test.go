package netnsx

import (
	"os"
	"testing"

	"blastradius.dev/blastradius/internal/nstest"
)

// These tests create real network namespaces, veth pairs and nftables rules:
// as root in place, otherwise in user, network and mount namespaces of their
// own (nstest).
func TestMain(m *testing.M) {
	if os.Getenv(unprivEnv) == "1" {
		// The child of TestDoOwnNamespaceUnprivileged: run as it is.
		os.Exit(m.Run())
	}
	nstest.Main(m, "netnsx", nstest.Options{})
}
