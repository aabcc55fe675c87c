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
}

func (o Options) bucket() time.Duration {
	if o.Bucket <= 0 {
		return DefaultBucket
	}
	return o.Bucket
}

// OutageInterval is one stretch of time in which the flow did not work.
type OutageInterval struct {
	Start    time.Time            `json:"start"`
	End      time.Time            `json:"end"`
	Seconds  float64              `json:"seconds"`
	Failures int                  `json:"failures"` // failed requests, plus expected-but-missing ones
	ByClass  map[events.Class]int `json:"byClass"`
	Class    events.Class         `json:"class"` // dominant class, possibly ClassMissing
}

// Bucket is one slice of the flow's timeline.
type Bucket struct {
	Offset        time.Duration        `json:"offset"` // from Window.Start; nanoseconds in JSON
	Requests      int                  `json:"requests"`
	OK            int                  `json:"ok"`
	Failed        map[events.Class]int `json:"failed,omitempty"`
	MaxLatencyMs  float64              `json:"maxLatencyMs"`  // successful requests only
	MeanLatencyMs float64              `json:"meanLatencyMs"` // successful requests only
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
}

// FlowSummary is everything measured about one flow in one trial.
type FlowSummary struct {
	Flow              FlowMeta             `json:"flow"`
	Requests          int                  `json:"requests"`
	OK                int                  `json:"ok"`
	Failed            int                  `json:"failed"`
	ByClass           map[events.Class]int `json:"byClass"` // failed requests only
	Outages           []OutageInterval     `json:"outages"`
	DisruptionSeconds float64              `json:"disruptionSeconds"`
	Latency           LatencyByPhase       `json:"latency"`
	Streams           StreamSummary        `json:"streams"`
	Timeline          []Bucket             `json:"timeline"`
	Affected          bool                 `json:"affected"` // an outage overlaps the fault period
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
