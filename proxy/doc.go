// Package proxy will hold the reference ambient data plane: control plane and
// CA, node proxy with in-pod redirection and HBONE, sidecar mode and waypoint.
// It imports nothing from framework/. Until it lands, only mode "none" runs
// (blastradius run --mode none); the CLI refuses the other modes with a clear
// error rather than pretending.
package proxy
