// Package reports renders a run folder's results model for people: for now
// the one-screen summary table printed at the end of a run.
package reports
