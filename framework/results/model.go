package results

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"blastradius.dev/blastradius/framework/measure"
	"blastradius.dev/blastradius/internal/atomicjson"
)

// SchemaVersion is bumped on any incompatible change to run.json. Version 2
// counts late answers: disruptionSeconds includes requests answered above
// their flow's stall threshold (failedDisruptionSeconds keeps version 1's
// figure). This build reads versions 1 and 2.
const SchemaVersion = 2

// LateAnswersSince is the first schema version whose disruption figures
// count late answers.
const LateAnswersSince = 2

// Run statuses.
const (
	StatusRunning     = "running"
	StatusDone        = "done"
	StatusFailed      = "failed"      // an expectation did not hold
	StatusError       = "error"       // the run could not complete
	StatusInterrupted = "interrupted" // stopped by a signal
	StatusSkipped     = "skipped"     // the scenario cannot run on this provider or mode
)

// Run is run.json.
type Run struct {
	SchemaVersion int         `json:"schemaVersion"`
	ID            string      `json:"id"`
	Command       []string    `json:"command"`
	Started       time.Time   `json:"started"`
	Finished      *time.Time  `json:"finished,omitempty"`
	Status        string      `json:"status"`
	Environment   Environment `json:"environment"`
	Trials        []*Trial    `json:"trials"`
	// Matrix is the verdict per scenario (fault) and mode over its trials,
	// recomputed as trials finish.
	Matrix []MatrixCell `json:"matrix,omitempty"`
}

// Environment says where and against what the run measured.
type Environment struct {
	Provider      string  `json:"provider"`
	Mode          string  `json:"mode"`
	DataPlane     string  `json:"dataPlane"`
	Version       string  `json:"version"`
	Kernel        string  `json:"kernel"`
	CPUs          int     `json:"cpus"`
	CPUModel      string  `json:"cpuModel"`
	GoVersion     string  `json:"goVersion"`
	Rootless      bool    `json:"rootless"`
	NotReadyGrace string  `json:"notReadyGrace"`
	BucketMs      float64 `json:"bucketMs"`
	BudgetRPS     float64 `json:"budgetRps"`
	// Images are the container images a Kubernetes run's data planes ran
	// (Istio's istiod, istio-cni and ztunnel; the tool's own), by digest
	// where the image was built or loaded here.
	Images []Image `json:"images,omitempty"`
}

// Image is one container image a run used.
type Image struct {
	Role   string `json:"role"` // istiod, istio-cni, ztunnel, workloads
	Ref    string `json:"ref"`
	Digest string `json:"digest,omitempty"` // manifest digest, sha256:...
	ID     string `json:"id,omitempty"`     // config digest (the image ID)
	// StandIn says the image is the tool's own in place of the named
	// component (ztunnel where no registry is reachable).
	StandIn bool `json:"standIn,omitempty"`
}

// MeshEvidence is what showed that a trial's traffic crossed the mesh
// before load started: the pods the mesh's node agent reported as
// redirected, and the HBONE streams the node proxies counted while a probe
// flow ran on every flow's path.
type MeshEvidence struct {
	Mesh       string `json:"mesh"`
	Redirected int    `json:"redirected"`         // pods annotated as redirected (ambient)
	Injected   int    `json:"injected,omitempty"` // pods running the sidecar istiod injected (sidecar mode)
	Pods       int    `json:"pods"`               // the trial's application pods
	// ProbeStreams is the HBONE streams the node proxies opened during the
	// probe, by node (node-1...); TrialStreams during the whole trial.
	ProbeStreams map[string]float64 `json:"probeStreams"`
	TrialStreams map[string]float64 `json:"trialStreams,omitempty"`
	// Metric names the counter read (it differs between upstream ztunnel
	// and the tool's stand-in).
	Metric string `json:"metric"`
}

// Trial is one run of one scenario.
type Trial struct {
	Scenario       string    `json:"scenario"`
	Fault          string    `json:"fault,omitempty"` // fault kind, empty for none
	Mode           string    `json:"mode"`            // data plane mode: none, sidecar, ambient
	Index          int       `json:"index"`           // 1-based trial number of this scenario and mode
	Description    string    `json:"description"`
	Status         string    `json:"status"`
	Error          string    `json:"error,omitempty"`
	Started        time.Time `json:"started"`
	BringUpSeconds float64   `json:"bringUpSeconds"`
	// SetupSeconds is from the trial's start until load started: bring-up,
	// data plane deployment and every server ready.
	SetupSeconds    float64              `json:"setupSeconds,omitempty"`
	Dir             string               `json:"dir"` // relative to the run folder
	Topology        Topology             `json:"topology"`
	Flows           []FlowRef            `json:"flows"`
	Window          *Window              `json:"window,omitempty"`
	Faults          []FaultRecord        `json:"faults"`
	EndpointChanges []EndpointChange     `json:"endpointChanges,omitempty"`
	CPU             *CPU                 `json:"cpu,omitempty"`
	Summary         *measure.Trial       `json:"summary,omitempty"`
	Precision       []PrecisionCheck     `json:"precision,omitempty"`
	Expectations    []ExpectationResult  `json:"expectations,omitempty"`
	CertExpiries    map[string]time.Time `json:"certExpiries,omitempty"` // identity -> NotAfter when the control plane went down
	Noisy           bool                 `json:"noisy"`
	NoisyReasons    []string             `json:"noisyReasons,omitempty"`
	// NoControlFlow says why the trial has no control flow: its fault
	// reaches every place one could run, so noise in the harness cannot be
	// told from the fault's doing and the trial is never judged noisy by it.
	NoControlFlow string   `json:"noControlFlow,omitempty"`
	Verdict       *Verdict `json:"verdict,omitempty"`
	// RunnerPeakRSSMB is the runner process's peak resident memory at the
	// end of the trial (VmHWM): what blastradius itself needed.
	RunnerPeakRSSMB float64 `json:"runnerPeakRssMb,omitempty"`
	// Mesh is what showed the trial's traffic crossed Istio's mesh (Istio
	// modes only).
	Mesh *MeshEvidence `json:"mesh,omitempty"`
}

// Verdict is what a fault reached, computed from the measured flows.
type Verdict struct {
	// Value: no-impact (no flow affected), contained (every affected flow
	// has an endpoint or a traversed proxy on a faulted node), cluster-wide
	// (some other flow affected); for a control-plane fault
	// no-data-plane-impact replaces no-impact.
	Value      string   `json:"value"`
	FaultNodes []string `json:"faultNodes"` // the nodes the fault was aimed at
	Affected   int      `json:"affected"`   // flows affected
	Total      int      `json:"total"`      // flows measured
	// Beyond lists affected flows with no end and no proxy on a fault node.
	Beyond            []string `json:"beyond,omitempty"`
	DisruptionSeconds float64  `json:"disruptionSeconds"` // sum over flows, late answers included
	FailedRequests    int      `json:"failedRequests"`    // failed plus expected-but-missing requests
	// SlowRequests counts requests answered above their flow's stall
	// threshold; FailedDisruptionSeconds is DisruptionSeconds counting
	// failed and missing requests only, as runs before late answers were
	// measured did.
	SlowRequests            int     `json:"slowRequests"`
	FailedDisruptionSeconds float64 `json:"failedDisruptionSeconds"`
	BrokenStreams           int     `json:"brokenStreams"`
	StalledStreams          int     `json:"stalledStreams"` // stream stalls (late echoes on open connections)
	// Isolated lists flows with a single failure in the fault period, not
	// counted as affected (see docs/verdict.md).
	Isolated []string `json:"isolated,omitempty"`
}

// Stats summarizes one figure over the trials of a cell.
type Stats struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P95  float64 `json:"p95"`
	// Max is the worst trial's value: one bad handoff in thirty is what
	// a claim like "no new connection is ever dropped" must show.
	Max float64 `json:"max"`
	// CILow and CIHigh bound the mean at 95 % confidence (Student's t);
	// equal to the mean with one trial.
	CILow  float64 `json:"ciLow"`
	CIHigh float64 `json:"ciHigh"`
}

// MatrixCell is one fault (scenario) in one mode over its trials.
type MatrixCell struct {
	Scenario string `json:"scenario"`
	Fault    string `json:"fault,omitempty"`
	Mode     string `json:"mode"`
	Trials   int    `json:"trials"` // trials measured
	// Skipped says why the scenario could not run in this mode.
	Skipped string `json:"skipped,omitempty"`
	// Errors counts trials that could not be carried out.
	Errors int `json:"errors,omitempty"`
	// Verdict is the worst over the trials; Verdicts counts each.
	Verdict           string         `json:"verdict,omitempty"`
	Verdicts          map[string]int `json:"verdicts,omitempty"`
	Affected          Stats          `json:"affected"`
	Total             int            `json:"total"`
	DisruptionSeconds Stats          `json:"disruptionSeconds"`
	FailedRequests    Stats          `json:"failedRequests"`
	BrokenStreams     Stats          `json:"brokenStreams"`
	// Late answers: see Verdict.
	SlowRequests            Stats `json:"slowRequests"`
	FailedDisruptionSeconds Stats `json:"failedDisruptionSeconds"`
	StalledStreams          Stats `json:"stalledStreams"`
	Noisy                   int   `json:"noisy,omitempty"`  // trials flagged noisy
	Failed                  int   `json:"failed,omitempty"` // trials with a failed expectation
}

// Topology is the cluster a trial ran on.
type Topology struct {
	Nodes    []string  `json:"nodes"`
	Pods     []PodInfo `json:"pods"`
	Services []SvcInfo `json:"services"`
}

// PodInfo places a pod.
type PodInfo struct {
	Name string `json:"name"`
	Node string `json:"node"`
	IP   string `json:"ip"`
	Role string `json:"role"`
}

// SvcInfo is a service VIP.
type SvcInfo struct {
	Name string   `json:"name"`
	VIP  string   `json:"vip"`
	Port int      `json:"port"`
	Pods []string `json:"pods"`
}

// FlowRef is a flow and where its events are.
type FlowRef struct {
	measure.FlowMeta
	Events string `json:"events"` // relative to the run folder
}

// Window is when load was scheduled.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// FaultRecord is a fault as it happened.
type FaultRecord struct {
	Kind    string     `json:"kind"`
	Target  string     `json:"target"`
	Inject  time.Time  `json:"inject"`
	Recover *time.Time `json:"recover,omitempty"`
	Detail  string     `json:"detail,omitempty"`
	// Wire is, for a black hole over a whole client pod, when the pod's
	// TCP connections with each peer carried new data both ways again after
	// the hole, from a packet tap in the pod's namespace: the hole's end as
	// the pod's flows met it on the wire, which TCP back-off can put after
	// the network came back.
	Wire []WireResume `json:"wire,omitempty"`
}

// WireResume is when a black-holed pod's connections with one peer moved
// again (evidence.Tap.Resumed). Which connection carries which flow is not
// visible from outside (HBONE multiplexes flows over TLS), so it is a range:
// from the first connection to come back to the last.
type WireResume struct {
	Peer string `json:"peer"` // pod name, or its IP when no pod has it
	// Resumed is the first instant after the hole when some connection
	// with the peer had carried new data both ways; Last when the last one
	// to come back did. Absent when none did before Until.
	Resumed *time.Time `json:"resumed,omitempty"`
	Last    *time.Time `json:"last,omitempty"`
	// Until is when the tap stopped looking (the next hole, or the end of
	// load). Stuck connections had carried data before the hole and had not
	// come back by then.
	Until       time.Time `json:"until"`
	Connections int       `json:"connections"`
	Stuck       int       `json:"stuck,omitempty"`
	// TapDrops is how many packets the tap lost during this hole's window
	// (its reader fell behind): with drops, the answer may be late.
	TapDrops int `json:"tapDrops,omitempty"`
}

// EndpointChange is a service's endpoints changing during the trial.
type EndpointChange struct {
	At        time.Time `json:"at"`
	Service   string    `json:"service"`
	Endpoints []string  `json:"endpoints"`
}

// CPU is the machine's CPU use sampled during the trial.
type CPU struct {
	IntervalMs float64   `json:"intervalMs"`
	Busy       []float64 `json:"busy"` // fraction 0..1 per interval, all CPUs
	Mean       float64   `json:"mean"`
	Max        float64   `json:"max"`
	Saturated  bool      `json:"saturated"`
}

// PrecisionCheck compares a ground-truth black hole with what was measured
// on one flow in it: a hole that drops a whole client pod gives one check per
// flow of that client.
type PrecisionCheck struct {
	Flow string `json:"flow"`
	// Hole is the black hole's fault record target: the flow, or
	// "pod/<client>"; HoleStart is when the hole opened (its Inject).
	Hole            string    `json:"hole"`
	HoleStart       time.Time `json:"holeStart"`
	TruthSeconds    float64   `json:"truthSeconds"`
	MeasuredSeconds float64   `json:"measuredSeconds"` // the overlapping outages' seconds, summed
	ErrorSeconds    float64   `json:"errorSeconds"`    // measured minus truth
	// StartErrorSeconds is the first overlapping outage's start minus the
	// hole's start; EndErrorSeconds the last one's end minus the hole's end.
	// Both are absent when no outage overlaps the hole.
	StartErrorSeconds *float64 `json:"startErrorSeconds,omitempty"`
	EndErrorSeconds   *float64 `json:"endErrorSeconds,omitempty"`
	// LateEndExplained says why an outage that ended more than a bucket
	// after the hole is still the hole's: the client pod's namespace was
	// retransmitting after the network came back (a connection waiting out
	// its retransmission back-off), with the counts seen.
	LateEndExplained string `json:"lateEndExplained,omitempty"`
	// BackoffUntil is set when the trial's evidence shows the flow's
	// connections backing off after the hole (retransmissions, a
	// retransmission timeout lost in the hole, the node proxy re-dialling):
	// until then (the hole's length plus 200 ms after it) an outage of
	// the flow is the hole's, not an outage outside it.
	BackoffUntil *time.Time `json:"backoffUntil,omitempty"`
	// WireEnd and WireLastEnd are when the first and the last of the
	// client pod's connections with the flow's server moved again after the
	// hole (FaultRecord.Wire), when the tap saw it; WireLastEnd is the tap's
	// window end if a connection was still stuck then. The flow's own end
	// lies between the hole's end and WireLastEnd: its requests may ride any
	// of those connections. WireEndErrorSeconds is the measured end's
	// distance to that range (0 inside it, negative before it).
	WireEnd             *time.Time `json:"wireEnd,omitempty"`
	WireLastEnd         *time.Time `json:"wireLastEnd,omitempty"`
	WireEndErrorSeconds *float64   `json:"wireEndErrorSeconds,omitempty"`
	// BacklogSeconds is set when the flow's outage ran on more than a
	// bucket past WireLastEnd though no request sent after it failed (late
	// answers, and timeouts of requests sent into the hole): how long the
	// data plane took to work off the requests the hole had queued in its
	// tunnels. It is measured disruption (in the
	// outage), and not an error of the hole's end: WireEndErrorSeconds and
	// the total are then judged without it.
	BacklogSeconds *float64 `json:"backlogSeconds,omitempty"`
	// Within: the start within one timeline bucket of the hole's, and the
	// end and the total within one bucket of the hole's, or, when the tap
	// saw the connections come back later, of the range the wire allows;
	// with no tap, a late end explained by retransmissions no longer than
	// the back-off allows (docs/scenarios.md "Black holes").
	Within bool `json:"within"`
}

// ExpectationResult is one named expectation of a scenario.
type ExpectationResult struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail,omitempty"`
	// Informational: the expectation states how the tool's reference data
	// plane is built to behave; on another mesh (Istio) it is what that
	// mesh is held against and reported, and a miss is a finding about
	// that mesh, not a failed trial.
	Informational bool `json:"informational,omitempty"`
}

// Failed reports whether the expectation fails its trial.
func (e ExpectationResult) Failed() bool { return !e.Pass && !e.Informational }

// Save writes run.json into dir atomically: a reader (or a kill) never sees
// a half-written file.
func Save(dir string, r *Run) error {
	return atomicjson.Write(filepath.Join(dir, "run.json"), r)
}

// Load reads run.json from a run folder.
func Load(dir string) (*Run, error) {
	b, err := os.ReadFile(filepath.Join(dir, "run.json"))
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "run.json"), err)
	}
	if r.SchemaVersion < 1 || r.SchemaVersion > SchemaVersion {
		return nil, fmt.Errorf("%s: schema version %d, this build reads 1 to %d", dir, r.SchemaVersion, SchemaVersion)
	}
	return &r, nil
}
