// Package measure turns the per-request events of one flow into disruption
// measurements: when the flow was down, for how long, how it failed, how its
// latency moved around the fault, and which pods and nodes the fault reached.
//
// The measurement works from request start times, not from when failures were
// noticed. A black hole makes every request time out seconds after it started,
// but the flow was broken from the start of the first request that got no
// answer to the start of the first one that did; that is what an outage
// interval is.
//
// Silence is measured too. When a client's node crashes its agent dies with it
// and writes nothing more, so an outage can only be seen as a gap in the
// request starts. Gaps longer than a few expected inter-request intervals
// become outages of class ClassMissing, merged with any failures they touch,
// so that "failures, then nothing" reads as one outage and not as a short
// failure followed by an unexplained hole.
//
// Everything here is a pure function of the events and the trial's schedule:
// analysis can be re-run offline from the event files a trial left behind.
package measure
