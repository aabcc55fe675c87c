package scenario

import (
	"context"
	"sync"
	"time"

	"blastradius.dev/blastradius/internal/procfs"
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
	m, err := procfs.ReadMachineCPU()
	return m.Busy, m.Total, err
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

// Settling before load: bringing up hundreds of processes (and, in the
// meshed modes, the configuration pushes that follow every new endpoint)
// keeps the cores busy for seconds after every probe has passed. Load
// started then measures the start-up storm, not the fault. The runner waits,
// up to settleMax, until the machine has been below settleBusy for
// settleQuiet, and records how long it waited.
const (
	settleBusy  = 0.6
	settleQuiet = time.Second
	settleMax   = 20 * time.Second
	settleTick  = 250 * time.Millisecond
)

// settle waits for the machine to quieten; it returns the wait and the last
// busy fraction seen, and never fails the trial: after settleMax it gives up
// and the CPU sampler flags the trial if the load then starves.
func settle(ctx context.Context, logf func(string, ...any)) (time.Duration, float64) {
	start := time.Now()
	b0, t0, err := readCPU()
	if err != nil {
		return 0, 0
	}
	quietSince := time.Time{}
	last := 0.0
	lastLog := start
	tk := time.NewTicker(settleTick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return time.Since(start), last
		case <-tk.C:
		}
		b1, t1, err := readCPU()
		if err != nil || t1 == t0 {
			continue
		}
		last = float64(b1-b0) / float64(t1-t0)
		b0, t0 = b1, t1
		now := time.Now()
		switch {
		case last >= settleBusy:
			quietSince = time.Time{}
		case quietSince.IsZero():
			quietSince = now
		case now.Sub(quietSince) >= settleQuiet:
			return now.Sub(start), last
		}
		if now.Sub(start) >= settleMax {
			logf("cluster still %.0f%% busy after %s; starting load anyway", last*100, settleMax)
			return now.Sub(start), last
		}
		if now.Sub(lastLog) >= 2*time.Second {
			logf("waiting for the cluster to settle: %.0f%% busy", last*100)
			lastLog = now
		}
	}
}
