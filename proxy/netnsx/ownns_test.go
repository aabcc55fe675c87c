package netnsx

import (
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/internal/nstest"
)

const unprivEnv = "NETNSX_TEST_UNPRIVILEGED"

// A sidecar proxy on Kubernetes is handed its own pod's namespace and has
// no CAP_SYS_ADMIN: Do must run there in place instead of calling setns,
// which the kernel refuses without that capability even for the namespace
// the thread is already in. The child runs as nobody, with no capability.
func TestDoOwnNamespaceUnprivileged(t *testing.T) {
	if os.Getenv(unprivEnv) == "1" {
		fd, err := unix.Open(selfNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		err = Do(fd, func() error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err == nil {
				ln.Close()
			}
			return err
		})
		if err != nil {
			t.Fatalf("Do in the own namespace without privileges: %v", err)
		}
		return
	}
	if os.Geteuid() != 0 || nstest.Inside("netnsx") {
		t.Skip("needs real root to start a child as nobody")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The build folder is root's; nobody runs a copy.
	dir, err := os.MkdirTemp("", "netnsx-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin, err := os.ReadFile(self)
	if err == nil {
		err = os.WriteFile(dir+"/netnsx.test", bin, 0o755)
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dir+"/netnsx.test", "-test.run=^TestDoOwnNamespaceUnprivileged$", "-test.count=1")
	cmd.Env = append(os.Environ(), unprivEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged child: %v\n%s", err, out)
	}
}
