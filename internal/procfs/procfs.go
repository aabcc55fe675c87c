// Package procfs is the one /proc reader of the project: a process's state,
// parent, CPU ticks and start time (/proc/<pid>/stat), its memory and
// threads (/proc/<pid>/status), and the machine's CPU counters (/proc/stat).
// Parsers take the file's bytes, so tests feed them real lines.
package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStat is what blastradius reads of /proc/<pid>/stat.
type ProcStat struct {
	State        byte   // field 3: R, S, D, Z, X, ...
	PPid         int    // field 4
	UTime, STime uint64 // fields 14, 15: clock ticks (USER_HZ)
	Start        uint64 // field 22: clock ticks since boot
}

// ParseStat parses /proc/<pid>/stat. The command name (field 2) is in
// parentheses and may itself hold spaces and parentheses, so fields are
// counted after the last ')'.
func ParseStat(b []byte) (ProcStat, error) {
	var s ProcStat
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, fmt.Errorf("stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state).
	if len(f) < 20 {
		return s, fmt.Errorf("stat: %d fields after the command name, want at least 20", len(f))
	}
	s.State = f[0][0]
	var err error
	num := func(k int) uint64 {
		if err != nil {
			return 0
		}
		var v uint64
		if v, err = strconv.ParseUint(f[k], 10, 64); err != nil {
			err = fmt.Errorf("stat: field %d %q: %v", k+3, f[k], err)
		}
		return v
	}
	s.PPid = int(num(1))
	s.UTime, s.STime, s.Start = num(11), num(12), num(19)
	return s, err
}

// Stat reads /proc/<pid>/stat.
func Stat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	s, err := ParseStat(b)
	if err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	return s, nil
}

// Alive reports whether pid still runs (a zombie does not) and, unless start
// is 0, is the process that started at start: enough to tell a recorded
// process from an unrelated one that got the same pid later.
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, err := Stat(pid)
	if err != nil || s.State == 'Z' || s.State == 'X' {
		return false
	}
	return start == 0 || s.Start == start
}

// ReadStatus reads /proc/<pid>/status ("self" for this process).
func ReadStatus(pid string) ([]byte, error) { return os.ReadFile("/proc/" + pid + "/status") }

// StatusValue returns the value of a "Key:   value" line of
// /proc/<pid>/status, trimmed.
func StatusValue(status []byte, key string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("status: no %s", key)
}

// StatusKB returns the value, in kB, of a "Key:   1234 kB" line of
// /proc/<pid>/status (VmHWM is the peak resident set, VmRSS the current).
func StatusKB(status []byte, key string) (int64, error) {
	v, err := StatusValue(status, key)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(v)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("status: %s: unexpected value %q", key, v)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

// MachineCPU is the first ("cpu") line of /proc/stat, in clock ticks.
type MachineCPU struct {
	Busy  uint64 // everything but idle and iowait
	IRQ   uint64 // irq + softirq (part of Busy)
	Total uint64
}

// ParseMachineCPU parses the first ("cpu") line of /proc/stat.
func ParseMachineCPU(stat []byte) (MachineCPU, error) {
	var m MachineCPU
	line, _, _ := bytes.Cut(stat, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 8 || f[0] != "cpu" {
		return m, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice]: guest
	// time is already counted in user, so only the first eight are summed.
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("/proc/stat: %q: %v", s, err)
		}
		m.Total += v
		if i != 3 && i != 4 {
			m.Busy += v
		}
		if i == 5 || i == 6 {
			m.IRQ += v
		}
	}
	return m, nil
}

// ReadMachineCPU reads the machine's CPU counters.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	return ParseMachineCPU(b)
}
