// Package interop holds the tests that run the node
// proxy's HBONE against Istio's own Go HBONE, through the echo server and
// client built from the pinned istio.io/istio by `make istio-bins`.
package interop
