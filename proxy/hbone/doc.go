// Package hbone is the reference data plane's HBONE tunnel: HTTP/2 CONNECT
// over mutual TLS 1.3 (ALPN "h2"), as Istio ambient's ztunnel speaks on port
// 15008. Both ends present SPIFFE identities (spiffe://<td>/ns/<ns>/sa/<sa>)
// in the certificate's URI SAN.
//
// A Dialer opens CONNECT streams, pooling one TLS connection per (source
// identity, HBONE endpoint) so that many streams share it; a Server accepts
// them, authorizes each against the verified peer identity and hands the
// stream to Forward. Streams are net.Conns with deadlines and half-close.
//
// The HTTP/2 layer (h2.go, stream.go) is a lean implementation specialised
// for CONNECT tunnels, built on golang.org/x/net/http2's Framer and hpack: one
// reader goroutine per connection, writes made by the streams' own goroutines
// and coalesced into as few TLS records and system calls as possible, large
// windows. x/net's general-purpose Transport and Server hand every frame
// between several goroutines and write each frame with its own system call,
// which made the tunnel several times more expensive in CPU and latency.
// The package uses the standard library and golang.org/x/net only, and
// imports nothing from the test framework.
package hbone
