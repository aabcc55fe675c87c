package evidence

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Evidence is what a set of sources counted over one interval, to sit next
// to an outage interval in run.json. Every count is an increase over the
// interval (Deltas), summed over Sources; zeros are left out of the JSON.
type Evidence struct {
	// Sources are the sources whose samples span the interval; Missing
	// those asked for that have no file or too few samples to tell.
	Sources []string `json:"sources"`
	Missing []string `json:"missing,omitempty"`

	// Kernel TCP counters of the pod namespaces among Sources (in ambient
	// mode the node proxy's sockets to and from a pod live in the pod's
	// namespace, so they count there). InSegs says whether anything
	// arrived at all; RetransSegs, Timeouts and LossProbes whether the
	// sockets were still trying.
	TCPInSegs         int64 `json:"tcpInSegs,omitempty"`
	TCPOutSegs        int64 `json:"tcpOutSegs,omitempty"`
	TCPRetransSegs    int64 `json:"tcpRetransSegs,omitempty"`
	TCPTimeouts       int64 `json:"tcpTimeouts,omitempty"`
	TCPLossProbes     int64 `json:"tcpLossProbes,omitempty"`
	TCPSynRetrans     int64 `json:"tcpSynRetrans,omitempty"`
	TCPAttemptFails   int64 `json:"tcpAttemptFails,omitempty"`
	TCPEstabResets    int64 `json:"tcpEstabResets,omitempty"`
	TCPOutRsts        int64 `json:"tcpOutRsts,omitempty"`
	TCPAbortOnTimeout int64 `json:"tcpAbortOnTimeout,omitempty"`

	// Proxy counters of the proxies among Sources. HBONE connections and
	// streams are by direction (inbound, outbound); failures by reason,
	// both directions together (BySource keeps them apart).
	HBONEConnectionsOpened map[string]int64 `json:"hboneConnectionsOpened,omitempty"`
	HBONEConnectionsClosed map[string]int64 `json:"hboneConnectionsClosed,omitempty"`
	HBONEStreamsOpened     map[string]int64 `json:"hboneStreamsOpened,omitempty"`
	HBONEFailures          map[string]int64 `json:"hboneFailures,omitempty"`
	ProxyFailures          map[string]int64 `json:"proxyFailures,omitempty"`

	// FailedSamples counts samples inside the interval that could not be
	// taken: for a proxy, scrapes its admin port did not answer in time
	// (crashed, restarting, or starved).
	FailedSamples int64 `json:"failedSamples,omitempty"`

	// BySource has, per source, the non-zero counters summed above under
	// their file keys (docs/results.md), plus failedSamples: which side
	// retransmitted, which proxy failed.
	BySource map[string]map[string]int64 `json:"bySource,omitempty"`
}

// Folder reads one trial's evidence folder, each source's file once.
type Folder struct {
	dir string

	mu      sync.Mutex
	samples map[string][]Sample
	errs    map[string]error
}

// Open returns a reader of the evidence folder dir (<trial>/evidence). It
// reads nothing yet.
func Open(dir string) *Folder {
	return &Folder{dir: dir, samples: map[string][]Sample{}, errs: map[string]error{}}
}

// Manifest reads the folder's sources.json.
func (f *Folder) Manifest() (*Manifest, error) { return ReadManifest(f.dir) }

// Samples returns one source's samples (read on first use). A missing file
// is os.ErrNotExist; a malformed line is an error, with the samples before
// it.
func (f *Folder) Samples(source string) ([]Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.samples[source]; ok {
		return s, f.errs[source]
	}
	s, err := ReadFile(filepath.Join(f.dir, source+".jsonl"))
	f.samples[source], f.errs[source] = s, err
	return s, err
}

// Evidence sums what sources counted over [from, to]. A source it cannot
// read, or whose samples do not span any of the interval, is listed in
// Missing. It returns nil when none of the sources had samples.
func (f *Folder) Evidence(from, to time.Time, sources []string) *Evidence {
	ev := &Evidence{Sources: []string{}}
	for _, src := range sources {
		samples, err := f.Samples(src)
		if err != nil && len(samples) == 0 {
			ev.Missing = append(ev.Missing, src)
			continue
		}
		d, spanned := deltas(samples, from, to)
		var failed int64
		for _, s := range samples {
			if s.Err != "" && !s.Time.Before(from) && !s.Time.After(to) {
				failed++
			}
		}
		if !spanned && failed == 0 {
			ev.Missing = append(ev.Missing, src)
			continue
		}
		ev.Sources = append(ev.Sources, src)
		mine := map[string]int64{}
		for k, v := range d {
			if n := int64(math.Round(v)); n != 0 && ev.add(k, n) {
				mine[k] = n
			}
		}
		if failed > 0 {
			ev.FailedSamples += failed
			mine["failedSamples"] = failed
		}
		if len(mine) > 0 {
			if ev.BySource == nil {
				ev.BySource = map[string]map[string]int64{}
			}
			ev.BySource[src] = mine
		}
	}
	if len(ev.Sources) == 0 {
		return nil
	}
	return ev
}

// add counts one counter's increase into its field; false for a counter
// Evidence does not carry.
func (ev *Evidence) add(key string, n int64) bool {
	if p := ev.tcpField(key); p != nil {
		*p += n
		return true
	}
	name, labels := SplitKey(key)
	var m *map[string]int64
	var by string
	switch name {
	case "hbone_connections_total":
		m, by = &ev.HBONEConnectionsOpened, labels["direction"]
	case "hbone_connections_closed_total":
		m, by = &ev.HBONEConnectionsClosed, labels["direction"]
	case "hbone_streams_total":
		m, by = &ev.HBONEStreamsOpened, labels["direction"]
	case "hbone_failures_total":
		m, by = &ev.HBONEFailures, labels["reason"]
	case "proxy_failures_total":
		m, by = &ev.ProxyFailures, labels["reason"]
	default:
		return false
	}
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[by] += n
	return true
}

func (ev *Evidence) tcpField(key string) *int64 {
	switch key {
	case "TcpInSegs":
		return &ev.TCPInSegs
	case "TcpOutSegs":
		return &ev.TCPOutSegs
	case "TcpRetransSegs":
		return &ev.TCPRetransSegs
	case "TcpExtTCPTimeouts":
		return &ev.TCPTimeouts
	case "TcpExtTCPLossProbes":
		return &ev.TCPLossProbes
	case "TcpExtTCPSynRetrans":
		return &ev.TCPSynRetrans
	case "TcpAttemptFails":
		return &ev.TCPAttemptFails
	case "TcpEstabResets":
		return &ev.TCPEstabResets
	case "TcpOutRsts":
		return &ev.TCPOutRsts
	case "TcpExtTCPAbortOnTimeout":
		return &ev.TCPAbortOnTimeout
	}
	return nil
}

// Collect is Open(dir).Evidence(from, to, sources), for a single interval.
// It returns nil when the folder does not exist or no source had samples.
func Collect(dir string, from, to time.Time, sources []string) *Evidence {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return Open(dir).Evidence(from, to, sources)
}
