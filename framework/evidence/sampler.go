package evidence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"blastradius.dev/blastradius/internal/atomicjson"
)

// Source kinds.
const (
	KindNetns   = "netns"   // a network namespace's kernel TCP counters
	KindMetrics = "metrics" // a proxy's /metrics counters
)

// DefaultInterval is the sampling period when Config.Interval is zero: the
// timeline's bucket, so an outage of one bucket spans at least one sample.
const DefaultInterval = 100 * time.Millisecond

// ManifestFile names the list of sources in the evidence folder.
const ManifestFile = "sources.json"

// Source is one thing sampled, and what it belongs to.
type Source struct {
	Name string `json:"name"` // its file is <name>.jsonl
	Kind string `json:"kind"` // KindNetns or KindMetrics
	Pod  string `json:"pod,omitempty"`
	Node string `json:"node,omitempty"`
	// Role is the caller's word for it (for a pod: client, server, ...; for
	// a proxy: node-proxy, sidecar, waypoint).
	Role string `json:"role,omitempty"`
}

// Namespace is a network namespace to sample, held by descriptor. The
// descriptor is only used during Start; the sampler keeps its own hold.
type Namespace struct {
	Source
	FD int
}

// Proxy is a /metrics endpoint to scrape.
type Proxy struct {
	Source
	URL string
	// Dial, when set, makes the scrape's connection (whatever the URL's
	// host), for instance from inside the proxy's own pod namespace over
	// loopback, so that the scrape works while the pod's network is cut and
	// its own packets never count as the pod's retransmissions.
	Dial func(ctx context.Context) (net.Conn, error)
}

// Config is what to sample, how often, and where to write.
type Config struct {
	Dir        string        // the evidence folder (created)
	Interval   time.Duration // 0: DefaultInterval
	Namespaces []Namespace
	Proxies    []Proxy
	// ScrapeTimeout bounds each scrape (0, or not shorter than the
	// interval: half the interval). A scrape that runs out records a
	// failed sample; the next one still starts on schedule.
	ScrapeTimeout time.Duration
	Logf          func(format string, args ...any)
}

// Manifest is sources.json: every source and how it was sampled.
type Manifest struct {
	IntervalMs      float64  `json:"intervalMs"`
	ScrapeTimeoutMs float64  `json:"scrapeTimeoutMs"`
	Sources         []Source `json:"sources"`
}

// Sampler samples until its context ends or Stop.
type Sampler struct {
	cfg      Config
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once

	ns       []*nsReader
	nsOut    []*writer
	scrapers []*scraper
	prOut    []*writer
}

// Start opens every source and its file, writes sources.json, takes a first
// sample of everything at once and then one every interval, in the
// background, until ctx ends or Stop is called. A namespace or file that
// cannot be opened fails Start (with everything released); a proxy that does
// not answer is not an error: its failed samples are recorded.
func Start(ctx context.Context, cfg Config) (_ *Sampler, err error) {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.ScrapeTimeout <= 0 || cfg.ScrapeTimeout >= cfg.Interval {
		cfg.ScrapeTimeout = cfg.Interval / 2
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	m := Manifest{IntervalMs: ms(cfg.Interval), ScrapeTimeoutMs: ms(cfg.ScrapeTimeout), Sources: []Source{}}
	seen := map[string]bool{}
	add := func(src *Source, kind string) error {
		src.Kind = kind
		if src.Name == "" || src.Name[0] == '.' || strings.ContainsAny(src.Name, `/\`) {
			return fmt.Errorf("evidence: source name %q cannot name a file", src.Name)
		}
		if seen[src.Name] {
			return fmt.Errorf("evidence: source %q twice", src.Name)
		}
		seen[src.Name] = true
		m.Sources = append(m.Sources, *src)
		return nil
	}
	for i := range cfg.Namespaces {
		if err := add(&cfg.Namespaces[i].Source, KindNetns); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Proxies {
		if err := add(&cfg.Proxies[i].Source, KindMetrics); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	s := &Sampler{cfg: cfg}
	defer func() {
		if err != nil {
			s.release()
		}
	}()
	for _, n := range cfg.Namespaces {
		r, err := openNS(n.FD)
		if err != nil {
			return nil, fmt.Errorf("evidence: %s: %w", n.Name, err)
		}
		s.ns = append(s.ns, r)
		w, err := createWriter(filepath.Join(cfg.Dir, n.Name+".jsonl"))
		if err != nil {
			return nil, fmt.Errorf("evidence: %s: %w", n.Name, err)
		}
		s.nsOut = append(s.nsOut, w)
	}
	for _, p := range cfg.Proxies {
		s.scrapers = append(s.scrapers, newScraper(p))
		w, err := createWriter(filepath.Join(cfg.Dir, p.Name+".jsonl"))
		if err != nil {
			return nil, fmt.Errorf("evidence: %s: %w", p.Name, err)
		}
		s.prOut = append(s.prOut, w)
	}
	if err := atomicjson.Write(filepath.Join(cfg.Dir, ManifestFile), m); err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	if len(s.ns) > 0 {
		s.wg.Go(func() { s.every(ctx, func() { s.sampleNamespaces(time.Now()) }) })
	}
	for i := range s.scrapers {
		s.wg.Go(func() { s.every(ctx, func() { s.sampleProxy(ctx, i) }) })
	}
	return s, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// every runs fn at once and then on every tick. A ticker drops ticks its
// receiver was too slow for, so a late round skips samples instead of
// shifting the schedule or piling rounds up.
func (s *Sampler) every(ctx context.Context, fn func()) {
	tk := time.NewTicker(s.cfg.Interval)
	defer tk.Stop()
	for {
		fn()
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// sampleNamespaces takes one round over every namespace, one after the
// other on one goroutine: a read is two pread(2)s of a few KB, tens of
// microseconds (docs/results.md gives the cost), so reading them in
// parallel would gain nothing worth a goroutine per namespace.
func (s *Sampler) sampleNamespaces(now time.Time) {
	for i, r := range s.ns {
		c, err := r.read()
		smp := Sample{Time: now, Counters: c}
		if err != nil {
			smp = Sample{Time: now, Err: err.Error()}
		}
		s.record(s.cfg.Namespaces[i].Name, s.nsOut[i], smp)
	}
}

// sampleProxy scrapes one proxy. The sample's time is the middle of the
// scrape: the proxy read its counters somewhere in between.
func (s *Sampler) sampleProxy(ctx context.Context, i int) {
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, s.cfg.ScrapeTimeout)
	c, err := s.scrapers[i].scrape(sctx)
	cancel()
	t := start.Add(time.Since(start) / 2)
	if err != nil && ctx.Err() != nil {
		return // stopping: the failure is ours, not the proxy's
	}
	smp := Sample{Time: t, Counters: c}
	if err != nil {
		smp = Sample{Time: t, Err: scrapeError(err)}
	}
	s.record(s.cfg.Proxies[i].Name, s.prOut[i], smp)
}

// record writes a sample; a write error (disk full) is logged, once per
// source, and sampling goes on.
func (s *Sampler) record(name string, w *writer, smp Sample) {
	if err := w.write(smp); err != nil && !w.failed {
		w.failed = true
		s.cfg.Logf("evidence: %s: %v", name, err)
	}
}

// scrapeError is a short reason for a failed scrape: the URL, which the
// source already names, is left out.
func scrapeError(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), os.IsTimeout(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "reset"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// Stop ends sampling, waits for a sample being taken to be written, and
// closes everything. Safe to call twice; the files stay readable.
func (s *Sampler) Stop() {
	s.stopOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
		}
		s.wg.Wait()
		s.release()
	})
}

func (s *Sampler) release() {
	for _, r := range s.ns {
		r.close()
	}
	for _, sc := range s.scrapers {
		sc.close()
	}
	for _, w := range append(append([]*writer(nil), s.nsOut...), s.prOut...) {
		_ = w.close()
	}
}

// ReadManifest reads sources.json from an evidence folder.
func ReadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	return &m, nil
}
