// Package hbonebench puts the node proxy's HBONE (proxy/hbone) next to
// Istio's Go HBONE (istio.io/istio/pkg/hbone, what Istio's echo apps and
// tests speak) on the same machine, in the same process, through the same
// echo target, so that a number for one can be read against the other.
//
// It holds only tests and benchmarks; see docs/performance.md for how the
// numbers are produced and what they do not say.
package hbonebench
