package netnsx

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// These tests create real network namespaces, veth pairs and nftables rules.
// As root, NewNS is enough. Otherwise the test binary re-executes itself in
// new user, network and mount namespaces where it is root over everything it
// creates, and nothing it does can touch the host's network.
const insideEnv = "NETNSX_TEST_USERNS"

func TestMain(m *testing.M) {
	if os.Getenv(unprivEnv) == "1" {
		// The child of TestDoOwnNamespaceUnprivileged: run as it is.
		os.Exit(m.Run())
	}
	if os.Geteuid() != 0 {
		if os.Getenv(insideEnv) == "1" {
			fmt.Fprintln(os.Stderr, "netnsx tests: re-executed in a user namespace but still not root")
			os.Exit(1)
		}
		os.Exit(reexecInUserNS())
	}
	os.Exit(m.Run())
}

func reexecInUserNS() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netnsx tests: find own executable:", err)
		return 1
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), insideEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
		Pdeathsig:   syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		// No user namespaces for us: say so loudly, but do not fail the
		// build of machines that forbid them.
		fmt.Fprintf(os.Stderr, "SKIP netnsx tests: not root and cannot create a user namespace: %v\n", err)
		return 0
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netnsx tests:", err)
		return 1
	}
	return 0
}
