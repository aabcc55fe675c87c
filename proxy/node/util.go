package node

import (
	"bytes"
	"crypto/x509"
)

type x509Pool = x509.CertPool

func emptyPool() *x509.CertPool { return x509.NewCertPool() }

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
