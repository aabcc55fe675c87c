// Package events is the on-disk record of every request a load agent made: one
// JSON line per request or stream transition, appended to a per-flow file the
// moment it happens, so a run killed half-way still has everything it measured.
//
// The writer and the reader are the contract between the load agents (which run
// inside pod namespaces, in other processes) and the measurement.
package events
