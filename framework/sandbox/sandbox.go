package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// envMarker is set in the re-executed child; its presence means "already inside".
const envMarker = "BLASTRADIUS_SANDBOX"

// Inside reports whether this process is the sandboxed child.
func Inside() bool { return os.Getenv(envMarker) == "1" }

// Enter re-executes the current binary with args inside new user, network,
// mount and PID namespaces, forwards SIGINT/SIGTERM to it, waits, and returns
// its exit code. It must only be called when !Inside().
func Enter(args []string) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 1, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envMarker+"=1", fmt.Sprintf("BLASTRADIUS_OUTER_UID=%d", os.Getuid()))
	uid, gid := os.Getuid(), os.Getgid()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		// Root inside maps to the caller outside: files the run writes belong to
		// whoever started it.
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
		GidMappingsEnableSetgroups: false,
		Pdeathsig:                  syscall.SIGKILL,
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 1, explain(err)
	}
	go func() {
		n := 0
		for s := range sigs {
			// The first interrupt asks the child to stop cleanly (save what
			// was measured, write the report). A second one is someone who
			// will not wait: SIGKILL the child, which is init of its PID
			// namespace, so every process of the run dies with it and its
			// namespaces and mounts go away.
			if n++; n > 1 {
				fmt.Fprintln(os.Stderr, "blastradius: interrupted again: stopping at once")
				_ = cmd.Process.Kill()
				continue
			}
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// knob is a kernel setting that can forbid unprivileged user namespaces.
type knob struct {
	path, name string
	forbids    func(v string) bool
}

var knobs = []knob{
	{"/proc/sys/kernel/unprivileged_userns_clone", "kernel.unprivileged_userns_clone=0", func(v string) bool { return v == "0" }},
	{"/proc/sys/user/max_user_namespaces", "user.max_user_namespaces=0", func(v string) bool { return v == "0" }},
	{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "kernel.apparmor_restrict_unprivileged_userns=1", func(v string) bool { return v == "1" }},
}

// explain turns a failed clone into a one-line error that names the kernel
// setting in the way, when one is.
func explain(err error) error {
	var forbidding []string
	for _, k := range knobs {
		b, rerr := os.ReadFile(k.path)
		if rerr == nil && k.forbids(strings.TrimSpace(string(b))) {
			forbidding = append(forbidding, k.name)
		}
	}
	if len(forbidding) > 0 {
		return fmt.Errorf("cannot create a user namespace (%v): the kernel setting %s forbids it; run as root or set it with sysctl (the embedded cluster needs unprivileged user namespaces)", err, strings.Join(forbidding, ", "))
	}
	return fmt.Errorf("cannot create user, network, mount and PID namespaces: %v (the embedded cluster needs unprivileged user namespaces: check kernel.unprivileged_userns_clone, user.max_user_namespaces and, on Ubuntu, kernel.apparmor_restrict_unprivileged_userns)", err)
}

// Setup prepares the inside of the sandbox; call it first thing when Inside().
// Mounts are made private, so nothing done here propagates to the host, and a
// fresh /proc is mounted, so /proc/self and /proc/<pid> agree with the new
// PID namespace (netlink libraries find their thread's namespace through them).
func Setup() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("sandbox: make mounts private: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("sandbox: mount /proc: %w", err)
	}
	return nil
}
