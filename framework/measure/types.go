package measure

import (
	"time"

	"blastradius.dev/blastradius/framework/events"
)

// ClassMissing labels requests that were expected but never recorded: the
// agent was dead or stalled, so no outcome exists. It is not an events.Class
// value an agent can write, which keeps "we saw it fail" apart from "we saw
// nothing".
const ClassMissing events.Class = "missing"

// ClassSlow labels requests that succeeded, but later than the flow's stall
// threshold: a late answer is a disruption even though nothing failed. Like
// ClassMissing it is measurement's own label, never written by an agent: the
// agent records the latency, measurement decides what is late.
const ClassSlow events.Class = "slow"

// DefaultStallFloor is the lowest stall threshold a flow can get
// (docs/verdict.md "Late answers"): above the latency a two-core machine
// with one core taken by a CPU hog gives a healthy request through two
// proxies (55 ms at most, measured), below the 200 ms minimum TCP
// retransmission timeout that one lost packet adds to a request, and below
// the shortest hole the tool places to one bucket.
const DefaultStallFloor = 100 * time.Millisecond

// DefaultBucket is the timeline resolution when Options.Bucket is zero. It is
// fine enough to show a 100ms black hole as one bucket.
const DefaultBucket = 100 * time.Millisecond

// FlowMeta describes one flow: who talks to whom, how, and at what rate.
type FlowMeta struct {
	ID         string  `json:"id"`
	Client     string  `json:"client"`     // client pod name
	ClientNode string  `json:"clientNode"` // node of the client pod
	Server     string  `json:"server"`     // server pod; for a service flow, the first pod behind it
	ServerNode string  `json:"serverNode"` // node of the server pod
	Target     string  `json:"target"`     // ip:port the client dials
	Via        string  `json:"via"`        // "svc" or "pod"
	Profile    string  `json:"profile"`    // "http-keepalive", "http-newconn", "tcp-stream"
	QPS        float64 `json:"qps"`        // scheduled request rate; <= 0 disables gap detection
	Control    bool    `json:"control"`    // the control flow no fault touches
}

// Window is when load was scheduled to run. Events outside it are start-up
// and tear-down noise and are not measured.
type Window struct{ Start, End time.Time }

// Fault is the fault injected during a trial. A nil *Fault means none.
type Fault struct {
	Name    string
	Inject  time.Time
	Recover time.Time // zero: no recovery inside the window
}

// Options tunes the analysis.
type Options struct {
	Bucket time.Duration // timeline bucket; DefaultBucket when <= 0
	// Timeout is the agents' per-request timeout (0: unknown). It caps the
	// stall threshold (a request that slow has already failed) and gives a
	// stream's per-connection probe interval.
	Timeout time.Duration
	// StallFloor is the lowest stall threshold; DefaultStallFloor when <= 0.
	StallFloor time.Duration
}

func (o Options) stallFloor() time.Duration {
	if o.StallFloor <= 0 {
		return DefaultStallFloor
	}
	return o.StallFloor
}

func (o Options) bucket() time.Duration {
	if o.Bucket <= 0 {
		return DefaultBucket
	}
	return o.Bucket
}

// OutageInterval is one stretch of time in which the flow did not work:
// requests failed, went missing, or were answered later than the flow's stall
// threshold.
type OutageInterval struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Seconds  float64   `json:"seconds"`
	Failures int       `json:"failures"` // failed requests, plus expected-but-missing ones
	// Failed and Missing split Failures: requests seen failing, and requests
	// expected at the flow's rate but never recorded.
	Failed  int `json:"failed"`
	Missing int `json:"missing"`
	// LastFailed is when the last request seen failing in the interval
	// started (absent when none failed): after it the interval held only
	// late answers and missing requests. A multiplexed tunnel that comes
	// back after a hole answers what it held up late, all at once; the
	// interval then runs on past its last failure.
	LastFailed *time.Time `json:"lastFailed,omitempty"`
	// Slow counts requests inside the interval that succeeded late (above
	// the flow's stall threshold); SlowLatency summarizes their latency.
	Slow        int             `json:"slow"`
	SlowLatency *LatencySummary `json:"slowLatency,omitempty"`
	// ByClass counts the interval's requests by failure class, plus
	// ClassSlow and ClassMissing.
	ByClass map[events.Class]int `json:"byClass"`
	Class   events.Class         `json:"class"` // dominant class, possibly ClassSlow or ClassMissing
	// Evidence is what the network and the proxies counted over the
	// interval (filled in by the runner where it samples them).
	Evidence any `json:"evidence,omitempty"`
}

// Bucket is one slice of the flow's timeline.
type Bucket struct {
	Offset        time.Duration        `json:"offset"` // from Window.Start; nanoseconds in JSON
	Requests      int                  `json:"requests"`
	OK            int                  `json:"ok"`
	Failed        map[events.Class]int `json:"failed,omitempty"`
	Slow          int                  `json:"slow,omitempty"` // of OK, answered above the stall threshold
	MaxLatencyMs  float64              `json:"maxLatencyMs"`   // successful requests only
	MeanLatencyMs float64              `json:"meanLatencyMs"`  // successful requests only
}

// LatencySummary summarizes the latency of successful requests. Failed ones
// are left out on purpose: a timeout's latency is the client's deadline, not
// anything the mesh did.
type LatencySummary struct {
	Count int     `json:"count"`
	P50Ms float64 `json:"p50Ms"`
	P90Ms float64 `json:"p90Ms"`
	P99Ms float64 `json:"p99Ms"`
	MaxMs float64 `json:"maxMs"`
}

// LatencyByPhase splits latency around the fault.
type LatencyByPhase struct {
	Before LatencySummary `json:"before"` // started before Fault.Inject (everything when there is no fault)
	During LatencySummary `json:"during"` // started in [Inject, Recover)
	After  LatencySummary `json:"after"`  // started at or after Recover
}

// StreamSummary counts long-lived stream breaks and how long reconnecting took.
type StreamSummary struct {
	Broken              int       `json:"broken"`              // breaks inside the window
	Reconnected         int       `json:"reconnected"`         // breaks that were followed by a reconnect
	Unrecovered         int       `json:"unrecovered"`         // breaks never followed by a reconnect
	ReconnectSeconds    []float64 `json:"reconnectSeconds"`    // one per reconnect, in break order
	MaxReconnectSeconds float64   `json:"maxReconnectSeconds"` // max of ReconnectSeconds
	// Stalls are messages echoed later than the stall threshold on a
	// connection that stayed open: the stream hung without breaking. Each
	// lasts from the message's send to its echo.
	Stalls          int     `json:"stalls"`
	StallSeconds    float64 `json:"stallSeconds"`    // total
	MaxStallSeconds float64 `json:"maxStallSeconds"` // longest
}

// FlowSummary is everything measured about one flow in one trial.
type FlowSummary struct {
	Flow     FlowMeta             `json:"flow"`
	Requests int                  `json:"requests"`
	OK       int                  `json:"ok"`
	Failed   int                  `json:"failed"`
	ByClass  map[events.Class]int `json:"byClass"` // failed requests only
	// Slow counts requests that succeeded above StallThresholdMs (they are
	// in OK too).
	Slow    int              `json:"slow"`
	Outages []OutageInterval `json:"outages"`
	// DisruptionSeconds sums the outages, late answers included.
	DisruptionSeconds float64 `json:"disruptionSeconds"`
	// FailedDisruptionSeconds is the same sum with late answers counted as
	// successes: the figure runs made before late answers were measured
	// report as disruptionSeconds, kept so their baselines stay comparable.
	FailedDisruptionSeconds float64 `json:"failedDisruptionSeconds"`
	// StallThresholdMs is the latency above which a successful request is
	// late (docs/verdict.md "Late answers"), derived from the flow's own
	// latency before the fault.
	StallThresholdMs float64 `json:"stallThresholdMs"`
	// RequestIntervalMs is the flow's resolution: the time between two of
	// its requests at the scheduled rate. ProbeIntervalMs is, for a stream
	// flow, how often each of its connections is probed.
	RequestIntervalMs float64 `json:"requestIntervalMs"`
	ProbeIntervalMs   float64 `json:"probeIntervalMs,omitempty"`
	// CoarserThanBucket says the flow sent fewer than one request per
	// timeline bucket: its outages cannot be placed to one bucket.
	CoarserThanBucket bool           `json:"coarserThanBucket,omitempty"`
	Latency           LatencyByPhase `json:"latency"`
	Streams           StreamSummary  `json:"streams"`
	Timeline          []Bucket       `json:"timeline"`
	Affected          bool           `json:"affected"` // an outage overlaps the fault period
}

// BlastRadius is what a fault reached: sorted, deduplicated names.
type BlastRadius struct {
	Flows []string `json:"flows"`
	Pods  []string `json:"pods"`
	Nodes []string `json:"nodes"`
}

// Trial is the measurement of every flow in one trial.
type Trial struct {
	Flows        []FlowSummary `json:"flows"`
	Radius       BlastRadius   `json:"radius"`
	Noisy        bool          `json:"noisy"` // a control flow was disrupted: the result may not be the fault's doing
	NoisyReasons []string      `json:"noisyReasons"`
}
