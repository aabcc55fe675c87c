#!/usr/bin/env bash
# Builds the Kubernetes binaries the tests run (a real etcd and kube-apiserver
# through controller-runtime's envtest, and the node-side binaries the local
# cluster runs) from source, plus controller-gen, and generates the Chaos Mesh CRDs
# from the chaos-mesh api types the main module uses. Called by
# `make k8s-test-bins`; everything lands in $1. Nothing is downloaded but Go
# modules: the pinned versions live in this folder's go.mod files.
#
# Usage: tools/k8s/build.sh DIR [test|all]
#   test (default): etcd, kube-apiserver, controller-gen and the CRDs, what
#        `make test` needs (kube-apiserver is most of the build time);
#   all: also kube-controller-manager, kube-scheduler, kubelet and
#        kube-proxy, what the local cluster (make local-k8s-up) runs.
set -euo pipefail

out=${1:?usage: build.sh DIR [test|all]}
set_=${2:-test}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
go=${GO:-go}
mkdir -p "$out"
out=$(cd "$out" && pwd)

say() { printf 'k8s-test-bins: %s\n' "$*"; }
since() { echo "$(($(date +%s) - $1))s"; }

modver() { (cd "$1" && "$go" list -m -f '{{.Version}}' "$2"); }

k8s=$(modver "$here" k8s.io/kubernetes)
etcd=$(modver "$here/etcd" go.etcd.io/etcd/server/v3)
ctools=$(modver "$here" sigs.k8s.io/controller-tools)
chaos=$(modver "$root" github.com/chaos-mesh/chaos-mesh/api)
gov=$("$go" env GOVERSION)

case $set_ in
test) kube=(kube-apiserver) ;;
all) kube=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy) ;;
*)
	echo "build.sh: set $set_ unknown (test, all)" >&2
	exit 2
	;;
esac
bins=("${kube[@]}" etcd controller-gen)

# The stamp names every input version: a bump of any of them (or of the Go
# toolchain, which changes every binary) rebuilds, anything else is a no-op.
stamp="kubernetes $k8s
etcd $etcd
controller-tools $ctools
chaos-mesh-api $chaos
go $gov"

complete=true
for b in "${bins[@]}"; do
	[[ -x $out/$b ]] || complete=false
done
ls "$out"/crds/*.yaml >/dev/null 2>&1 || complete=false
if $complete && [[ -f $out/.stamp && $(cat "$out/.stamp") == "$stamp" ]]; then
	say "up to date in $out (${bins[*]}: kubernetes $k8s, etcd $etcd, controller-tools $ctools)"
	exit 0
fi
# A different version of anything: rebuild every binary of the set. The
# same versions: build only what is missing (test, then all).
if [[ ! -f $out/.stamp || $(cat "$out/.stamp") != "$stamp" ]]; then
	rm -f "$out/.stamp" "${bins[@]/#/$out/}"
fi

t0=$(date +%s)
say "building kubernetes $k8s, etcd $etcd, controller-tools $ctools with $gov into $out"

t=$(date +%s)
say "downloading modules"
(cd "$here" && "$go" mod download)
(cd "$here/etcd" && "$go" mod download)
say "modules ready ($(since "$t"))"

# Static binaries, built the way Kubernetes' release builds them
# (hack/lib/golang.sh): no cgo, stripped, trimmed paths, its build tags, and
# the version stamped in so `kube-apiserver --version` and the API server's
# /version say v1.37.2 rather than v0.0.0-master.
export CGO_ENABLED=0
vpkgs=(k8s.io/client-go/pkg/version k8s.io/component-base/version)
minor=${k8s#v*.}
minor=${minor%%.*}
major=${k8s#v}
major=${major%%.*}
ldflags="-s -w"
for p in "${vpkgs[@]}"; do
	ldflags+=" -X $p.gitVersion=$k8s -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done

n=${#bins[@]}
i=0
for b in "${kube[@]}"; do
	i=$((i + 1))
	if [[ -x $out/$b ]]; then
		say "[$i/$n] $b: already built"
		continue
	fi
	t=$(date +%s)
	say "[$i/$n] $b"
	(cd "$here" && "$go" build -trimpath -tags selinux,notest,grpcnotrace -ldflags "all=$ldflags" \
		-o "$out/$b" "k8s.io/kubernetes/cmd/$b")
	say "[$i/$n] $b done ($(since "$t"))"
done

i=$((i + 1))
t=$(date +%s)
say "[$i/$n] etcd"
(cd "$here/etcd" && "$go" build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
say "[$i/$n] etcd done ($(since "$t"))"

i=$((i + 1))
t=$(date +%s)
say "[$i/$n] controller-gen"
(cd "$here" && "$go" build -trimpath -ldflags "-s -w" -o "$out/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen)
say "[$i/$n] controller-gen done ($(since "$t"))"

# The CRDs come from the api types the main module compiles against, so the
# server validates exactly the fields chaos.go sets. controller-gen loads the
# package through `go list` in the main module, which resolves the version
# pinned in its go.mod. The whole v1alpha1 package (every kind, PodChaos and
# NetworkChaos among them) goes through as is; genericwebhook has no types.
# No descriptions (maxDescLen=0): they do not take part in validation, and
# with them the Workflow and WorkflowNode CRDs are over a megabyte each, near
# etcd's request limit and slow to install for every test run.
t=$(date +%s)
say "generating Chaos Mesh CRDs from github.com/chaos-mesh/chaos-mesh/api $chaos"
rm -rf "$out/crds"
mkdir -p "$out/crds"
(cd "$root" && "$out/controller-gen" crd:maxDescLen=0 \
	paths=github.com/chaos-mesh/chaos-mesh/api/v1alpha1 output:crd:dir="$out/crds")
say "$(ls "$out/crds" | wc -l) CRDs in $out/crds ($(since "$t"))"

printf '%s\n' "$stamp" >"$out/.stamp"
say "done in $(since "$t0")"
