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
// The package is built on golang.org/x/net/http2 and the standard library
// only, and imports nothing from the test framework.
package hbone
