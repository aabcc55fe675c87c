package netns

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// A network namespace's identity is per thread, so every operation that needs
// to be "inside" one locks its OS thread, switches, works, and switches back.
// A thread that cannot be switched back is left locked: the Go runtime then
// discards it when the goroutine exits instead of reusing a thread that sits in
// the wrong namespace.

// newNetNS creates a network namespace and returns a descriptor that holds it.
// The namespace lives exactly as long as that descriptor (and any process in it).
func newNetNS() (int, error) {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("open current netns: %w", err)
	}
	defer unix.Close(orig)
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return -1, fmt.Errorf("unshare netns: %w", err)
	}
	fd, openErr := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		if openErr == nil {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("restore netns: %w", err) // thread stays locked on purpose
	}
	runtime.UnlockOSThread()
	if openErr != nil {
		return -1, fmt.Errorf("open new netns: %w", openErr)
	}
	return fd, nil
}

// inNetNS runs fn with the calling goroutine's thread inside the namespace fd.
func inNetNS(fd int, fn func() error) error {
	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open current netns: %w", err)
	}
	defer unix.Close(orig)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := fn()
	if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("restore netns: %w", err) // thread stays locked on purpose
	}
	runtime.UnlockOSThread()
	return ferr
}

// startIn starts cmd with the network namespace fd: a child forked from a
// thread inherits that thread's namespace.
func startIn(fd int, cmd *exec.Cmd) error {
	return inNetNS(fd, cmd.Start)
}

// writeSysctl writes a per-network-namespace sysctl from inside fd; /proc/sys/net
// resolves to the namespace of the thread that opens it.
func writeSysctl(fd int, name, value string) error {
	return inNetNS(fd, func() error {
		return os.WriteFile("/proc/sys/"+name, []byte(value), 0o644)
	})
}
