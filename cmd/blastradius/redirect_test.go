package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"blastradius.dev/blastradius/proxy/inpod"
	"blastradius.dev/blastradius/proxy/netnsx"
)

func TestRedirectCommandBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"redirect"}, "blastradius redirect: --pod-ip is required"},
		{[]string{"redirect", "--pod-ip", "$(POD_IP)"}, `--pod-ip "$(POD_IP)" is not an IPv4 address`},
		{[]string{"redirect", "--mode", "ambient", "--pod-ip", "10.0.0.1"}, `--mode "ambient" unknown`},
	} {
		var out, errb bytes.Buffer
		code := dispatch(c.args, &out, &errb)
		if code != 2 || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", c.args, code, errb.String(), c.want)
		}
	}
}

// The sidecar init container's command in a fresh network namespace: the
// rules are there after, and a second run (an init container restarted)
// leaves the same rules, not two copies.
func TestRedirectCommandInFreshNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (proxy/inpod tests the same in a user namespace)")
	}
	ns, err := netnsx.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ns)
	for run := 1; run <= 2; run++ {
		var out, errb bytes.Buffer
		code := dispatch([]string{"redirect", "--mode", "sidecar", "--pod-ip", "10.244.1.7", "--netns", fmt.Sprintf("/proc/self/fd/%d", ns)}, &out, &errb)
		if code != 0 || errb.Len() != 0 {
			t.Fatalf("run %d: exit %d, stderr %q", run, code, errb.String())
		}
		c, err := nftables.New(nftables.WithNetNSFd(ns))
		if err != nil {
			t.Fatal(err)
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
		if err != nil {
			t.Fatal(err)
		}
		rules := map[string]int{}
		for _, ch := range chains {
			if ch.Table.Name != inpod.RedirectTable {
				continue
			}
			rs, err := c.GetRules(ch.Table, ch)
			if err != nil {
				t.Fatal(err)
			}
			rules[ch.Name] = len(rs)
		}
		if len(rules) != 4 || rules["outbound"] != 1 || rules["inbound"] != 1 {
			t.Errorf("run %d: chains and rules %v", run, rules)
		}
	}
}

// The init container has NET_ADMIN and NET_RAW only (manifests/sidecar.yaml,
// as istio-init), so no CAP_SYS_ADMIN and no setns. The slim binary, run as
// a non-root user holding just those two capabilities in a fresh network
// namespace, installs the rules twice (the second run replacing the first);
// the control, --netns (which enters the namespace), is refused.
func TestRedirectCommandNeedsOnlyNetAdmin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process with chosen capabilities")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the binary with")
	}
	// A directory the unprivileged user can read and enter.
	dir, err := os.MkdirTemp("", "redirect-caps")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "blastradius")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, gobin, "build", "-tags", "nokube", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	script := `"$0" redirect --pod-ip 10.244.0.9 && "$0" redirect --pod-ip 10.244.0.9 || exit 1
if "$0" redirect --pod-ip 10.244.0.9 --netns /proc/self/ns/net 2>/dev/null; then echo "setns allowed"; exit 1; fi
echo ready; exec sleep 30`
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script, bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWNET,
		Credential:  &syscall.Credential{Uid: 65534, Gid: 65534},
		AmbientCaps: []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW},
		Pdeathsig:   syscall.SIGKILL,
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == "ready" {
			break
		}
	}
	if len(lines) == 0 || lines[len(lines)-1] != "ready" {
		cmd.Wait()
		t.Fatalf("with NET_ADMIN and NET_RAW only: %q, stderr %q", lines, stderr.String())
	}
	// The child's namespace, read while it sleeps in it.
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ns)
	c, err := nftables.New(nftables.WithNetNSFd(ns))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 1 || tables[0].Name != inpod.RedirectTable {
		t.Errorf("tables in the child's namespace: %v", tables)
	}
}
