package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// The listener tests create network namespaces and nftables rules, and run
// a whole proxy whose admin port binds in its own namespace. The test binary
// therefore re-executes itself in new network and mount namespaces (and, when
// not root, a user namespace where it is root over everything it creates):
// nothing it binds or changes can touch the host's network, and the
// namespace's listeners are only the ones the tests open.
const insideEnv = "NODE_TEST_USERNS"

func TestMain(m *testing.M) {
	if os.Getenv(insideEnv) == "1" {
		if os.Geteuid() != 0 {
			fmt.Fprintln(os.Stderr, "node tests: re-executed in a user namespace but still not root")
			os.Exit(1)
		}
		// Loopback starts down in a new namespace; the tests serving HBONE
		// on 127.0.0.1 need it.
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "node tests: loopback up:", err)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	os.Exit(reexecInUserNS())
}

func reexecInUserNS() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "node tests: find own executable:", err)
		return 1
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), insideEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		Pdeathsig:  syscall.SIGKILL,
	}
	if os.Geteuid() != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	}
	if err := cmd.Start(); err != nil {
		// No user namespaces for us: say so loudly, but do not fail the
		// build of machines that forbid them.
		fmt.Fprintf(os.Stderr, "SKIP node tests: cannot create a network namespace: %v\n", err)
		return 0
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "node tests:", err)
		return 1
	}
	return 0
}
