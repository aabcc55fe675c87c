// Package nstest runs a package's tests as root over namespaces of their own,
// for tests that create network namespaces, veth pairs, nftables rules or
// listeners: as root they may run in place; otherwise (or when asked to) the
// test binary re-executes itself in new network and mount namespaces, plus a
// user namespace when not root, where it is root over everything it creates
// and nothing it does touches the host's network. Test support only.
package nstest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// Options say how a package's tests want their namespaces.
type Options struct {
	// OwnNetwork re-executes even as root, so the tests never bind or
	// change anything in the host's network namespace.
	OwnNetwork bool
}

func env(pkg string) string { return "BLASTRADIUS_NSTEST_" + strings.ToUpper(pkg) }

// Inside reports whether this is the re-executed test binary of pkg (in a
// namespace of its own, where loopback is up).
func Inside(pkg string) bool { return os.Getenv(env(pkg)) == "1" }

// EnvNoNamespaces, set to 1, says this machine cannot create the namespaces
// (a kernel that forbids unprivileged user namespaces, a container without
// CAP_SYS_ADMIN): the packages that need them then skip, saying so. Unset,
// a package that cannot create them fails: a test binary that ran nothing
// must not report ok. `make test` never sets it.
const EnvNoNamespaces = "BLASTRADIUS_NO_NAMESPACES"

// Main is the TestMain of package pkg: it runs m in place or re-executes the
// test binary and exits with its status. Where namespaces cannot be created
// it fails, unless $BLASTRADIUS_NO_NAMESPACES=1 says so of this machine.
func Main(m *testing.M, pkg string, o Options) {
	if Inside(pkg) {
		if os.Geteuid() != 0 {
			fmt.Fprintf(os.Stderr, "%s tests: re-executed in a user namespace but still not root\n", pkg)
			os.Exit(1)
		}
		// Loopback starts down in a new network namespace; tests serve on
		// 127.0.0.1.
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s tests: loopback up: %v\n", pkg, err)
			os.Exit(1)
		}
		os.Exit(m.Run())
	}
	if os.Geteuid() == 0 && !o.OwnNetwork {
		os.Exit(m.Run())
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s tests: find own executable: %v\n", pkg, err)
		os.Exit(1)
	}
	os.Exit(reexec(pkg, self, os.Args[1:]))
}

func reexec(pkg, self string, args []string) int {
	cmd := exec.Command(self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env(pkg)+"=1")
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
		if os.Getenv(EnvNoNamespaces) == "1" {
			fmt.Fprintf(os.Stderr, "SKIP %s tests: cannot create network namespaces (%v), and $%s=1 says this machine cannot\n", pkg, err, EnvNoNamespaces)
			return 0
		}
		fmt.Fprintf(os.Stderr, "FAIL %s tests: cannot create network namespaces: %v (set %s=1 on a machine that cannot, to skip them)\n", pkg, err, EnvNoNamespaces)
		return 1
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s tests: %v\n", pkg, err)
		return 1
	}
	return 0
}
