package xds

import "sync"

// published is what a discovery client shows of itself, the same for the
// reference control plane's client and istiod's: the accepted snapshot,
// whether a stream is open, the last NACK, and the channel of changes. Both
// clients embed it; its mu also guards their own fields.
type published struct {
	updates chan Snapshot

	mu        sync.Mutex
	cur       *Snapshot
	connected bool
	lastNack  string
}

func newPublished() published { return published{updates: make(chan Snapshot, 1)} }

// Current returns the last accepted snapshot, if any.
func (p *published) Current() (*Snapshot, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur, p.cur != nil
}

// Updates delivers accepted snapshots whose content changed. It holds only
// the latest: a slow reader skips intermediate versions, which is fine
// because each snapshot is the whole state.
func (p *published) Updates() <-chan Snapshot { return p.updates }

// Connected reports whether a discovery stream is currently open.
func (p *published) Connected() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connected
}

// LastNack returns the reason of the most recent NACK sent, "" if none.
func (p *published) LastNack() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastNack
}

func (p *published) setConnected(v bool) {
	p.mu.Lock()
	p.connected = v
	p.mu.Unlock()
}

// push offers snap on Updates, replacing an unread older one.
func (p *published) push(snap Snapshot) {
	select {
	case p.updates <- snap:
	default:
		select { // drop the stale unread one, keep the latest
		case <-p.updates:
		default:
		}
		select {
		case p.updates <- snap:
		default:
		}
	}
}
