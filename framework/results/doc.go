// Package results is the on-disk model of a run: one folder, a run.json that
// is rewritten atomically at every step (so a killed run still has a readable
// record of what it measured), and the per-flow event files the agents append
// to directly. Reports read this model and nothing else.
package results
