package bench

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"blastradius.dev/blastradius/framework/events"
	"blastradius.dev/blastradius/internal/procfs"
)

// ClockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports here).
const ClockTicks = 100

// Latency summarises the latency load of one mode over the measured window.
type Latency struct {
	OfferedQPS    float64 `json:"offeredQps"`
	Connections   int     `json:"connections"`
	WindowSeconds float64 `json:"windowSeconds"`
	Requests      int     `json:"requests"`     // started in the window
	OK            int     `json:"ok"`           // of which succeeded
	Errors        int     `json:"errors"`       // of which failed
	WarmupErrors  int     `json:"warmupErrors"` // failures during the warm-up (not in Errors)
	// ErrorClasses counts the window's failures by class.
	ErrorClasses map[events.Class]int `json:"errorClasses,omitempty"`
	AchievedRPS  float64              `json:"achievedRps"` // Requests / WindowSeconds
	// Percentiles of successful requests (nearest rank), in milliseconds.
	P50Ms  float64 `json:"p50Ms"`
	P90Ms  float64 `json:"p90Ms"`
	P99Ms  float64 `json:"p99Ms"`
	P999Ms float64 `json:"p999Ms"`
	MaxMs  float64 `json:"maxMs"`
	MeanMs float64 `json:"meanMs"`
}

// SummarizeLatency reduces a flow's events to the requests that started in
// [start, end): warm-up requests before start and anything after end (a
// stopping agent finishes what is in flight) are left out.
func SummarizeLatency(evs []events.Event, start, end time.Time) Latency {
	ws, we := start.UnixNano(), end.UnixNano()
	l := Latency{WindowSeconds: end.Sub(start).Seconds()}
	var lat []int64
	var sum float64
	for _, e := range evs {
		if e.Kind != events.KindRequest {
			continue
		}
		if e.Start < ws {
			if !e.OK() {
				l.WarmupErrors++
			}
			continue
		}
		if e.Start >= we {
			continue
		}
		l.Requests++
		if !e.OK() {
			l.Errors++
			if l.ErrorClasses == nil {
				l.ErrorClasses = map[events.Class]int{}
			}
			l.ErrorClasses[e.Class]++
			continue
		}
		l.OK++
		lat = append(lat, e.Latency)
		sum += float64(e.Latency)
	}
	if l.WindowSeconds > 0 {
		l.AchievedRPS = round(float64(l.Requests)/l.WindowSeconds, 1)
	}
	if len(lat) == 0 {
		return l
	}
	slices.Sort(lat)
	l.P50Ms = ms(Percentile(lat, 50))
	l.P90Ms = ms(Percentile(lat, 90))
	l.P99Ms = ms(Percentile(lat, 99))
	l.P999Ms = ms(Percentile(lat, 99.9))
	l.MaxMs = ms(lat[len(lat)-1])
	l.MeanMs = round(sum/float64(len(lat))/1e6, 4)
	return l
}

// Percentile is the nearest-rank p-th percentile of sorted values: the
// smallest value with at least p % of the values at or below it, so always a
// value that was observed. It is 0 for no values.
func Percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps float error from pushing an exact rank one up
	// (99.9/100*1000 is 999.0000000000001).
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func ms(ns int64) float64 { return round(float64(ns)/1e6, 4) }

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// procSample is one reading of a process's CPU and memory.
type procSample struct {
	pid   int
	ticks uint64
	hwmKB int64
	rssKB int64
	err   error
}

func sampleProc(pid int) procSample {
	s := procSample{pid: pid}
	if pid <= 0 {
		s.err = fmt.Errorf("not running")
		return s
	}
	st, err := procfs.Stat(pid)
	if err != nil {
		s.err = err
		return s
	}
	s.ticks = st.UTime + st.STime
	status, err := procfs.ReadStatus(strconv.Itoa(pid))
	if err != nil {
		s.err = err
		return s
	}
	if s.hwmKB, err = procfs.StatusKB(status, "VmHWM"); err != nil {
		s.err = err
		return s
	}
	s.rssKB, s.err = procfs.StatusKB(status, "VmRSS")
	return s
}

// MachineCPU is the machine's CPU counters (procfs).
type MachineCPU = procfs.MachineCPU

// readMachineCPU reads the whole machine's CPU counters; zero on error.
func readMachineCPU() MachineCPU {
	m, _ := procfs.ReadMachineCPU()
	return m
}
