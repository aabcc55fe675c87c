package procfs

import (
	"os"
	"strconv"
	"testing"
)

func TestParseStat(t *testing.T) {
	// A real line, with a command name holding a space and a parenthesis.
	stat := "4242 (bl) astradius x) S 17 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 12345 1234567 890 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	s, err := ParseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if s.State != 'S' || s.PPid != 17 || s.UTime+s.STime != 325 || s.Start != 12345 {
		t.Errorf("parsed %+v, want state S, ppid 17, 325 ticks, start 12345", s)
	}
	for _, bad := range []string{"", "4242 bl S 1", "1 (x) S 1 2 3", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s 0 0 0 0 0 0 0 0 0"} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestStatusKB(t *testing.T) {
	status := []byte("Name:\tblastradius\nVmPeak:\t 1300000 kB\nVmHWM:\t   25124 kB\nVmRSS:\t   24000 kB\nThreads:\t12\n")
	if v, err := StatusKB(status, "VmHWM"); err != nil || v != 25124 {
		t.Errorf("VmHWM = %d, %v; want 25124", v, err)
	}
	if v, err := StatusKB(status, "VmRSS"); err != nil || v != 24000 {
		t.Errorf("VmRSS = %d, %v; want 24000", v, err)
	}
	if v, err := StatusValue(status, "Threads"); err != nil || v != "12" {
		t.Errorf("Threads = %q, %v; want 12", v, err)
	}
	if _, err := StatusKB(status, "VmSwap"); err == nil {
		t.Error("missing key: no error")
	}
	if _, err := StatusKB([]byte("VmHWM:\tlots\n"), "VmHWM"); err == nil {
		t.Error("malformed value: no error")
	}
}

func TestParseMachineCPU(t *testing.T) {
	stat := "cpu  100 5 50 800 20 3 2 0 40 0\ncpu0 1 2 3 4 5 6 7 8\n"
	m, err := ParseMachineCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	// busy: user+nice+system+irq+softirq+steal = 160; total adds idle and iowait; guest is in user already.
	if m.Busy != 160 || m.Total != 980 || m.IRQ != 5 {
		t.Errorf("busy/total/irq = %d/%d/%d, want 160/980/5", m.Busy, m.Total, m.IRQ)
	}
	if _, err := ParseMachineCPU([]byte("intr 1 2 3\n")); err == nil {
		t.Error("no cpu line: no error")
	}
}

// The real /proc of this process reads: alive, its own parent, memory.
func TestSelf(t *testing.T) {
	s, err := Stat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.PPid != os.Getppid() || !Alive(os.Getpid(), s.Start) || Alive(os.Getpid(), s.Start+1) {
		t.Errorf("self: %+v (parent %d)", s, os.Getppid())
	}
	b, err := ReadStatus(strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := StatusKB(b, "VmHWM"); err != nil || v <= 0 {
		t.Errorf("VmHWM %d, %v", v, err)
	}
	if m, err := ReadMachineCPU(); err != nil || m.Total == 0 {
		t.Errorf("machine CPU %+v, %v", m, err)
	}
}
