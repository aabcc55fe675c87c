// Package evidence records what the network and the proxies were doing while
// load ran, so that an outage can be explained after the fact: "no segment
// arrived at all" (the network was down) reads differently from "segments
// arrived, but the pooled HBONE connection kept retransmitting" (the network
// was back and the proxy was not).
//
// A Sampler reads, every Interval, the kernel's TCP counters of each pod's
// network namespace and the counters of each proxy's /metrics, and appends
// each sample as one JSON line to <trial>/evidence/<source>.jsonl the moment
// it is taken, so a run killed half-way keeps them. Deltas turns samples into
// counter increases over an interval, and Folder.Evidence sums them over a
// set of sources into the compact Evidence that run.json carries next to an
// outage interval.
//
// The package knows nothing about scenarios: the runner decides which pods
// and proxies are sources and what they are called (sources.json records
// it for the reader).
package evidence
