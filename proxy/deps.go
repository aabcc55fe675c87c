package proxy

import (
	_ "golang.org/x/net/http2"
	_ "google.golang.org/grpc"
)
