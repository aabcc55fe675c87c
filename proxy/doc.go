// Package proxy is the reference ambient data plane, written in Go so the
// embedded cluster has a mesh whose failures behave like the real one:
//
//	xds/          discovery model and streaming API (versions, ACK/NACK)
//	ca/           SPIFFE CA and the proxies' in-memory certificate manager
//	controlplane/ the control plane process (discovery + CA)
//	hbone/        HTTP/2 CONNECT over mutual TLS 1.3
//	inpod/        node agent <-> node proxy protocol (netns fds over SCM_RIGHTS), redirect rules
//	netnsx/       sockets inside pod network namespaces
//	node/         the node proxy, its sidecar mode and the waypoint
//
// It imports nothing from framework/.
package proxy
