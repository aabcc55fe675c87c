// Package dataplane installs the reference data plane (proxy/) on the
// embedded cluster: the control plane as a pod, and either a node proxy per
// node fed by a node agent over the in-pod protocol (ambient), or a proxy
// inside every application pod (sidecar). It writes the registry the control
// plane serves, following the endpoint controller.
package dataplane
