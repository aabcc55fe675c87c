// Package node is the reference node proxy (ztunnel's role) and its sidecar
// mode: it takes pods' network namespaces from the node agent, listens inside
// each (15001 outbound, 15006 inbound plaintext, 15008 HBONE), resolves
// destinations from the last discovery snapshot it accepted, and carries
// connections over HBONE with the source workload's identity.
//
// It keeps configuration and certificates in memory only: restarted while the
// control plane is down, it has nothing, and it says so on /ready.
package node
