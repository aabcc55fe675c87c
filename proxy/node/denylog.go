package node

import (
	"sync"
	"time"
)

// DenyLogInterval is how long a (peer, destination) pair's later policy
// denials are only counted after one was logged. A client that retries a
// denied connection in a loop would otherwise write one line per attempt —
// thousands a second at the suite's load — burying everything else, while
// one line per pair per interval still names every denied peer at once.
const DenyLogInterval = time.Minute

// denyPrune bounds the pairs remembered: past it, pairs whose interval has
// ended are forgotten (their next denial is logged at once anyway), so a
// peer cycling through destinations cannot grow the map without bound.
const denyPrune = 4096

// denyLog logs authorization policy denials once per (peer, destination) and
// interval. The first denial of a pair is logged immediately with the peer's
// identity; the ones that follow within the interval are counted, and the
// count is reported on the pair's next logged line. The total is always in
// the policy_denials metric.
type denyLog struct {
	interval time.Duration
	now      func() time.Time // nil: time.Now
	logf     func(format string, args ...any)

	mu    sync.Mutex
	pairs map[denyKey]*denyEntry
}

type denyKey struct{ peer, dst string }

type denyEntry struct {
	logged     time.Time // when the pair was last logged
	suppressed int       // denials since then that were only counted
}

// deny records one denied connection from peer (a SPIFFE ID, or "" for a
// plaintext peer, described by from) to dst.
func (d *denyLog) deny(peer, from, dst, why string) {
	if d.logf == nil {
		return
	}
	now := time.Now()
	if d.now != nil {
		now = d.now()
	}
	interval := d.interval
	if interval <= 0 {
		interval = DenyLogInterval
	}
	d.mu.Lock()
	if d.pairs == nil {
		d.pairs = map[denyKey]*denyEntry{}
	}
	k := denyKey{peer, dst}
	e := d.pairs[k]
	if e != nil && now.Sub(e.logged) < interval {
		e.suppressed++
		d.mu.Unlock()
		return
	}
	suppressed := 0
	if e != nil {
		suppressed = e.suppressed
	}
	if e == nil && len(d.pairs) >= denyPrune {
		for pk, pe := range d.pairs {
			if now.Sub(pe.logged) >= interval {
				delete(d.pairs, pk)
			}
		}
	}
	d.pairs[k] = &denyEntry{logged: now}
	d.mu.Unlock()

	who := peer
	if who == "" {
		who = "unauthenticated peer"
	}
	if from != "" {
		who += " (" + from + ")"
	}
	if suppressed > 0 {
		d.logf("policy denied %s -> %s: %s; %d more denials of this pair in the last %s were not logged", who, dst, why, suppressed, now.Sub(e.logged).Round(time.Second))
		return
	}
	d.logf("policy denied %s -> %s: %s; further denials of this pair are logged at most once per %s", who, dst, why, interval)
}
