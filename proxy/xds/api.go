package xds

import (
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/encoding"
)

// The gRPC service. There is no protoc in this tree, so the messages are
// plain Go structs carried by a JSON codec and the service descriptor is
// written by hand; the wire shape mirrors xDS (version, nonce, ACK/NACK) so
// the control-plane behaviour under chaos is the one real meshes have.
const (
	ServiceName             = "blastradius.xds.Discovery"
	StreamMethod            = "/" + ServiceName + "/Stream"
	CreateCertificateMethod = "/" + ServiceName + "/CreateCertificate"
)

// DiscoveryRequest is sent by a proxy: first to subscribe, then once per
// DiscoveryResponse to ACK or NACK it.
type DiscoveryRequest struct {
	Node          string `json:"node"`
	VersionInfo   string `json:"versionInfo,omitempty"`   // last accepted version (= ACK of ResponseNonce when ErrorDetail is empty)
	ResponseNonce string `json:"responseNonce,omitempty"` // nonce of the response this request answers
	ErrorDetail   string `json:"errorDetail,omitempty"`   // non-empty = NACK of ResponseNonce, with the reason
}

// DiscoveryResponse carries one whole snapshot; there are no incremental
// updates, the state is small and whole-state pushes make NACK semantics
// trivial (reject = keep the previous snapshot).
type DiscoveryResponse struct {
	Version  string   `json:"version"`
	Nonce    string   `json:"nonce"`
	Snapshot Snapshot `json:"snapshot"`
}

// CertificateRequest asks the control plane's CA to sign CSR (PKCS#10 DER)
// for Identity (a SPIFFE ID).
type CertificateRequest struct {
	CSR      []byte `json:"csr"`
	Identity string `json:"identity"`
}

// CertificateResponse is the issued chain (leaf first) and the CA root, so a
// proxy learns a rotated root together with the first certificate under it.
type CertificateResponse struct {
	CertChainPEM []byte `json:"certChainPEM"`
	RootPEM      []byte `json:"rootPEM"`
}

// CodecName is the gRPC content-subtype ("application/grpc+blastradius-json").
// A private name, not "json", so this codec cannot clash with (or be
// replaced by) another package registering a generic JSON codec.
const CodecName = "blastradius-json"

// Codec is the JSON gRPC codec used by the discovery service.
type Codec struct{}

// Name implements encoding.Codec.
func (Codec) Name() string { return CodecName }

// Marshal implements encoding.Codec.
func (Codec) Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("xds: json marshal %T: %w", v, err)
	}
	return b, nil
}

// Unmarshal implements encoding.Codec.
func (Codec) Unmarshal(data []byte, v any) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("xds: json unmarshal %T: %w", v, err)
	}
	return nil
}

func init() {
	// The server picks codecs from this registry by content-subtype; the
	// client forces the codec per call (see Client), so both ends agree
	// without any server option.
	encoding.RegisterCodec(Codec{})
}
