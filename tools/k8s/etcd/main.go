// Command etcd is the etcd server the test API server stores its objects in,
// built from source at the version pinned in go.mod (envtest finds it as
// $KUBEBUILDER_ASSETS/etcd). It is its own module because k8s.io/kubernetes
// requires a newer etcd server in its go.mod, which would win over the pin
// in a module shared with it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
