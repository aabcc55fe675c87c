package scenario

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// cpuSampler records whole-machine CPU use, because a disruption measured on
// a starved machine is not a finding: the agents, the servers and the runner
// share the same cores.
type cpuSampler struct {
	interval time.Duration
	mu       sync.Mutex
	busy     []float64
}

func readCPU() (busy, total uint64, err error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, fmt.Errorf("/proc/stat: empty")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line")
	}
	for i, f := range fields[1:] {
		var v uint64
		fmt.Sscan(f, &v)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

func (s *cpuSampler) run(ctx context.Context) {
	b0, t0, err := readCPU()
	if err != nil {
		return
	}
	tk := time.NewTicker(s.interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		b1, t1, err := readCPU()
		if err != nil || t1 == t0 {
			continue
		}
		s.mu.Lock()
		s.busy = append(s.busy, float64(b1-b0)/float64(t1-t0))
		s.mu.Unlock()
		b0, t0 = b1, t1
	}
}

// summary: saturated means two consecutive samples at ≥ 95 % busy.
func (s *cpuSampler) summary() (busy []float64, mean, max float64, saturated bool) {
	s.mu.Lock()
	busy = append([]float64(nil), s.busy...)
	s.mu.Unlock()
	for i, b := range busy {
		mean += b
		if b > max {
			max = b
		}
		if i > 0 && b >= 0.95 && busy[i-1] >= 0.95 {
			saturated = true
		}
	}
	if len(busy) > 0 {
		mean /= float64(len(busy))
	}
	return
}
