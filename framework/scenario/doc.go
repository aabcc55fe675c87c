// Package scenario runs trials: it brings up a cluster, deploys workloads,
// starts load on every node pair plus a control flow, injects the scenario's
// fault at a recorded instant, measures, checks the scenario's expectations and
// keeps run.json current the whole time.
package scenario
