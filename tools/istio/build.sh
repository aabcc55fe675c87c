#!/usr/bin/env bash
# Builds Istio's control plane (pilot-discovery, i.e. istiod), its node agent
# (istio-cni and install-cni) and the echo server and client of its tests from
# the istio.io/istio version pinned in this folder's go.mod, which must be the
# one the main module takes its message types (zdsapi) from. Called by
# `make istio-bins` (all) and `make istio-test-bins` (test: istiod and the
# echo apps, what `make test` runs); everything lands in $1. Nothing is
# downloaded but Go modules.
#
# Usage: tools/istio/build.sh DIR [test|all]
set -euo pipefail

out=${1:?usage: build.sh DIR [test|all]}
set_=${2:-all}
case $set_ in
test | all) ;;
*)
	echo "build.sh: unknown set $set_ (want test or all)" >&2
	exit 2
	;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
go=${GO:-go}
mkdir -p "$out"
out=$(cd "$out" && pwd)

say() { printf 'istio-bins: %s\n' "$*"; }
since() { echo "$(($(date +%s) - $1))s"; }
modver() { (cd "$1" && "$go" list -m -f '{{.Version}}' "$2"); }

istio=$(modver "$here" istio.io/istio)
main=$(modver "$root" istio.io/istio)
if [[ $istio != "$main" ]]; then
	echo "build.sh: tools/istio pins istio.io/istio $istio but the main module $main; pin one version in both" >&2
	exit 2
fi
gov=$("$go" env GOVERSION)

# name=package=build tags, the tags Istio's own release builds use for each
# (vtprotobuf: the generated fast marshalers; disable_pgv: no protoc-gen-validate
# code; the node agent's set drops what it never runs).
test_bins=(
	pilot-discovery=istio.io/istio/pilot/cmd/pilot-discovery=vtprotobuf,disable_pgv
	echo-server=istio.io/istio/pkg/test/echo/cmd/server=vtprotobuf,disable_pgv
	echo-client=istio.io/istio/pkg/test/echo/cmd/client=vtprotobuf,disable_pgv
)
all_bins=(
	"${test_bins[@]}"
	istio-cni=istio.io/istio/cni/cmd/istio-cni=agent,disable_pgv,grpcnotrace,retrynotrace
	install-cni=istio.io/istio/cni/cmd/install-cni=agent,disable_pgv,grpcnotrace,retrynotrace
)
if [[ $set_ == all ]]; then
	bins=("${all_bins[@]}")
else
	bins=("${test_bins[@]}")
fi

stamp="istio $istio
go $gov"
complete=true
for b in "${bins[@]}"; do
	[[ -x $out/${b%%=*} ]] || complete=false
done
if $complete && [[ -f $out/.stamp && $(cat "$out/.stamp") == "$stamp" && -d $out/charts ]]; then
	say "up to date in $out (istio $istio, $set_)"
	exit 0
fi
if [[ ! -f $out/.stamp || $(cat "$out/.stamp") != "$stamp" ]]; then
	# Another version's binaries: none of them may be taken for this one's.
	for b in "${all_bins[@]}"; do rm -f "$out/${b%%=*}"; done
	rm -f "$out/.stamp"
fi

t0=$(date +%s)
say "building istio $istio ($set_) with $gov into $out"
t=$(date +%s)
say "downloading modules"
(cd "$here" && "$go" mod download)
say "modules ready ($(since "$t"))"

# Static, stripped, trimmed, as Istio's release builds them, with the
# version stamped in so
# istiod's /version and its logs name the module version rather than
# "unknown".
export CGO_ENABLED=0
ldflags="-s -w -X istio.io/istio/pkg/version.buildVersion=$istio -X istio.io/istio/pkg/version.buildStatus=Clean"
n=${#bins[@]}
i=0
for b in "${bins[@]}"; do
	i=$((i + 1))
	name=${b%%=*}
	rest=${b#*=}
	pkg=${rest%%=*}
	tags=${rest#*=}
	if [[ -x $out/$name ]]; then
		say "[$i/$n] $name: already built"
		continue
	fi
	t=$(date +%s)
	say "[$i/$n] $name"
	(cd "$here" && "$go" build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/$name" "$pkg")
	say "[$i/$n] $name done ($(since "$t"))"
done

# The charts come from the same module: copied so that the render has no
# dependency on the module cache's layout.
t=$(date +%s)
dir=$(cd "$here" && "$go" list -m -f '{{.Dir}}' istio.io/istio)
rm -rf "$out/charts"
cp -r "$dir/manifests/charts" "$out/charts"
chmod -R u+w "$out/charts"
say "charts copied ($(since "$t"))"

printf '%s\n' "$stamp" >"$out/.stamp"
say "done in $(since "$t0")"
