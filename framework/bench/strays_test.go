package bench

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Two processes with one command line in one network namespace: the one not
// tracked is a stray, and killStrays ends it.
func TestFindStrays(t *testing.T) {
	start := func() *exec.Cmd {
		c := exec.Command("sleep", "30")
		if err := c.Start(); err != nil {
			t.Skipf("cannot start sleep: %v", err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		return c
	}
	a, b := start(), start()
	// A child started a moment ago may not have exec'd sleep yet (its
	// command line is still empty): read both until they settle.
	var id, idb string
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ok bool
		id, ok = procIdentity(a.Process.Pid)
		if !ok {
			t.Skip("no /proc")
		}
		idb, _ = procIdentity(b.Process.Pid)
		if (id == idb && strings.Contains(id, "sleep")) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if idb != id {
		t.Fatalf("identities differ: %q, %q", id, idb)
	}
	w := &strayWatch{known: map[string]string{id: "pod/sleep"}}
	strays := w.find(map[int]bool{a.Process.Pid: true})
	if len(strays) != 1 || strays[b.Process.Pid] != "pod/sleep" {
		t.Fatalf("strays %v, want only pid %d", strays, b.Process.Pid)
	}
	killStrays(strays)
	if err := b.Wait(); err == nil {
		t.Error("stray still ran to completion")
	}
	if s := w.find(map[int]bool{a.Process.Pid: true}); len(s) != 0 {
		t.Errorf("after the kill: strays %v", s)
	}
	// Once the original is no longer tracked (stopped), it is a stray too.
	if s := w.find(nil); len(s) != 1 || s[a.Process.Pid] == "" {
		t.Errorf("untracked original: strays %v, want pid %d", s, a.Process.Pid)
	}
}
