// Package procfs reads what blastradius needs to know about a process from
// /proc: enough to tell a recorded process from an unrelated one that got
// the same pid later.
package procfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Stat reads a process's state letter and start time (clock ticks since
// boot, /proc/<pid>/stat field 22).
func Stat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted from the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("pid %d: bad stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("pid %d: short stat", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

// Alive reports whether pid still runs (a zombie does not) and, unless start
// is 0, is the process that started at start.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, s, err := Stat(pid)
	if err != nil || st == 'Z' || st == 'X' {
		return false
	}
	return start == 0 || s == start
}
