// Package soak runs the embedded ambient cluster under load for a long time,
// injecting a fault at a fixed interval, and watches every data plane process
// (node proxies, the control plane, waypoints) for resource leaks: open file
// descriptors, goroutines and resident memory, sampled every few seconds.
//
// One cluster lives for the whole soak: leaks are about long-lived processes,
// so unlike a trial (framework/scenario) nothing is brought up again between
// faults. The node proxy of node-1 is never restarted, so at least one series
// covers the whole run; every restarted process starts a new series (its PID
// changes), and the trend rule (Analyze) only judges series that lived through
// both of its windows.
//
// Samples are appended to soak.jsonl as they are taken, one JSON line each
// with one write, so a soak that is killed keeps every sample it took;
// soak.json, the summary and verdict, is written at the end (also after an
// interrupt). docs/reliability.md ("Soak") describes the rule and the files.
package soak
