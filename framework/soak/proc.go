package soak

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"blastradius.dev/blastradius/internal/procfs"
)

// ProcStats is what /proc says about one process.
type ProcStats struct {
	FDs      int   // entries in /proc/PID/fd
	RSSBytes int64 // VmRSS
	Threads  int   // OS threads (Threads:), for context: Go parks idle ones
}

// ReadProc reads a process's open descriptors and resident memory from
// /proc. It needs the same credentials as the process (or root), which the
// soak has: every pod process is its child in the sandbox.
func ReadProc(pid int) (ProcStats, error) {
	var st ProcStats
	if pid <= 0 {
		return st, fmt.Errorf("no process (pid %d)", pid)
	}
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return st, err
	}
	// Readdirnames in batches: a leaking process can hold thousands, and
	// the count is all we need.
	for {
		names, err := d.Readdirnames(1024)
		st.FDs += len(names)
		if errors.Is(err, io.EOF) || (err == nil && len(names) == 0) {
			break
		}
		if err != nil {
			d.Close()
			return st, err
		}
	}
	d.Close()
	b, err := procfs.ReadStatus(strconv.Itoa(pid))
	if err != nil {
		return st, err
	}
	rssKB, err := procfs.StatusKB(b, "VmRSS")
	if err != nil {
		// A zombie has no VmRSS line: it is gone as far as a leak goes.
		return st, fmt.Errorf("/proc/%d/%v (exited?)", pid, err)
	}
	st.RSSBytes = rssKB * 1024
	if v, err := procfs.StatusValue(b, "Threads"); err == nil {
		st.Threads, _ = strconv.Atoi(v)
	}
	return st, nil
}

// scrapeClient fetches /metrics. No keep-alive: a pooled connection would
// be one more descriptor in the process being measured.
var scrapeClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// Goroutines reads go_goroutines from a Prometheus text endpoint.
func Goroutines(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return ParseGoroutines(io.LimitReader(resp.Body, 4<<20))
}

// ParseGoroutines finds the go_goroutines sample in Prometheus text.
func ParseGoroutines(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "go_goroutines")
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if rest[0] == '{' {
			i := strings.IndexByte(rest, '}')
			if i < 0 {
				continue
			}
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return 0, fmt.Errorf("go_goroutines %q: %w", f[0], err)
		}
		return int(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no go_goroutines in /metrics")
}
