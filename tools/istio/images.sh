#!/usr/bin/env bash
# Builds the container images of Istio's control plane (pilot: istiod) and
# node agent (install-cni: install-cni and the istio-cni plugin, with the
# iptables and nftables tools istio-cni runs in pods' network namespaces), and
# of its echo apps, from the binaries `make istio-bins` put in DIR, without
# Docker: docker-archive tarballs (what `docker save` writes, what
# `ctr -n k8s.io images import` and kind's image-archive loader take) in
# DIR/images, written by tools/image, with DIR/images/images.json naming each
# image's reference, archive, image ID and manifest digest. Called by
# `make istio-images`.
#
# The install-cni image's packet-filter tools, their shared libraries and the
# dynamic loader come from Debian packages (`apt-get download`, cached in
# DIR/debs; nothing is installed on the host): iptables and nftables and what
# they depend on. Every image is checked by running its programs in a chroot
# of the archive's own file system (as root; skipped otherwise).
#
# Reproducible: the same binaries, packages and SOURCE_DATE_EPOCH give the
# same digests. A stamp naming every input makes a second run a no-op.
#
# Usage: tools/istio/images.sh DIR
set -euo pipefail

dir=${1:?usage: images.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
go=${GO:-go}
umask 022
export LC_ALL=C

say() { printf 'istio-images: %s\n' "$*"; }
die() {
	printf 'images.sh: %s\n' "$*" >&2
	exit 1
}
since() { echo "$(($(date +%s) - $1))s"; }
modver() { (cd "$1" && "$go" list -m -f '{{.Version}}' "$2"); }

[[ -d $dir ]] || die "$dir is not a directory: run make istio-bins"
dir=$(cd "$dir" && pwd)
images=$dir/images
debs=$dir/debs
bins=(pilot-discovery install-cni istio-cni echo-server echo-client)
for b in "${bins[@]}"; do
	[[ -x $dir/$b ]] || die "$dir/$b is missing: run make istio-bins"
done
for c in apt-cache apt-get dpkg dpkg-deb sha256sum tar; do
	command -v "$c" >/dev/null || die "$c not found: the install-cni image takes iptables and nftables from Debian packages"
done

# The tag is the Istio version the binaries are built from (build.sh checks
# the main module pins the same one).
tag=$(modver "$here" istio.io/istio) || die "cannot read the istio.io/istio version pinned in tools/istio"
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "istio.io/istio version $tag is not a valid image tag"
hub=blastradius.local/istio
# The packages must be of the binaries' architecture (Debian and Go name
# amd64 and arm64 alike).
arch=$("$go" env GOARCH)
debarch=$(dpkg --print-architecture)
[[ $arch == "$debarch" ]] || die "the binaries are $arch but this host's packages $debarch"
env_path=PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Istio's own install-cni image's PATH and working directory.
cni_path=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/cni/bin
ca=/etc/ssl/certs/ca-certificates.crt

t0=$(date +%s)
# The packages: iptables and nftables with their dependencies, recursively
# (libc6 and the loader among them), as the package lists say; virtual
# packages (<name>) are left out, the real ones providing them are listed.
resolve() {
	apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
		--no-breaks --no-replaces --no-enhances iptables nftables 2>/dev/null |
		grep -v '^[ <]' | sort -u
}
if ! apt-cache show iptables nftables libc6 >/dev/null 2>&1; then
	say "no package lists for iptables and nftables: apt-get update"
	apt-get update -qq || die "apt-get update failed"
fi
# deb_files and deb_sums: the .deb file names and SHA-256 sums of the
# candidate versions (apt-get download --print-uris, from the lists: no
# network).
resolve_debs() {
	local pkgs uris url file size sum
	pkgs=$(resolve) || die "apt-cache depends iptables nftables failed"
	for p in iptables nftables libc6; do
		grep -qx "$p" <<<"$pkgs" || die "the dependencies of iptables and nftables do not include $p"
	done
	# shellcheck disable=SC2086
	uris=$(apt-get download -o APT::Sandbox::User=root --print-uris $pkgs 2>&1) ||
		die "apt-get download --print-uris: $(grep -m1 '^E:' <<<"$uris" || echo failed)"
	deb_files=() deb_sums=()
	while read -r url file size sum; do
		[[ $file == *.deb && $sum == SHA256:* ]] || die "unexpected apt-get --print-uris line: $url $file $size $sum"
		deb_files+=("$file") deb_sums+=("${sum#SHA256:}")
	done < <(grep "^'" <<<"$uris")
	[[ ${#deb_files[@]} -eq $(wc -l <<<"$pkgs") ]] ||
		die "apt-get download --print-uris gave ${#deb_files[@]} packages for $(wc -l <<<"$pkgs")"
}
resolve_debs

# Everything the images are made of, for the stamp.
gov=$("$go" env GOVERSION)
ggcr=$(modver "$root" github.com/google/go-containerregistry)
inputs() {
	printf 'tag %s\narch %s\nSOURCE_DATE_EPOCH %s\n%s\ngo-containerregistry %s\n' "$tag" "$arch" "${SOURCE_DATE_EPOCH:-}" "$gov" "$ggcr"
	for i in "${!deb_files[@]}"; do printf '%s  debs/%s\n' "${deb_sums[$i]}" "${deb_files[$i]}"; done
	(cd "$dir" && sha256sum "${bins[@]}")
	(cd "$root" && sha256sum tools/image/main.go tools/istio/images.sh)
	if [[ -f $ca ]]; then sha256sum "$ca"; fi
}
stamp=$(inputs)
archives=(pilot.tar install-cni.tar echo.tar)
complete=true
for a in "${archives[@]}" images.json; do [[ -f $images/$a ]] || complete=false; done
if $complete && [[ -f $images/.stamp && $(cat "$images/.stamp") == "$stamp" ]]; then
	say "up to date in $images (istio $tag)"
	exit 0
fi

say "building images of istio $tag into $images"
mkdir -p "$images" "$debs"
rm -rf "$images"/.work.* "$images/.stamp" "$images/images.json"
for a in "${archives[@]}"; do rm -f "$images/$a"; done
work=$(mktemp -d "$images/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The packages, downloaded once: a cached file is used when its SHA-256 is
# the lists'; files of other versions are removed. A download that fails
# (lists older than the mirror) is retried once after apt-get update.
fetch_debs() {
	local missing=() i
	for i in "${!deb_files[@]}"; do
		f=$debs/${deb_files[$i]}
		if [[ -f $f ]] && sha256sum --status -c <<<"${deb_sums[$i]}  $f"; then continue; fi
		rm -f "$f"
		missing+=("${deb_files[$i]%%_*}")
	done
	[[ ${#missing[@]} -gt 0 ]] || return 0
	say "downloading ${#missing[@]} of ${#deb_files[@]} Debian packages into $debs"
	(cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "${missing[@]}") >"$work/apt.log" 2>&1 || return 1
	for i in "${!deb_files[@]}"; do
		f=$debs/${deb_files[$i]}
		sha256sum --status -c <<<"${deb_sums[$i]}  $f" 2>/dev/null || return 1
	done
}
t=$(date +%s)
if ! fetch_debs; then
	say "download failed ($(grep -m1 '^E:' "$work/apt.log" || echo "checksum mismatch")): apt-get update and retry"
	apt-get update -qq || die "apt-get update failed"
	resolve_debs
	fetch_debs || die "apt-get download failed: $(grep -m1 '^E:' "$work/apt.log" || echo "a package's SHA-256 is not the lists'")"
	stamp=$(inputs)
fi
for f in "$debs"/*.deb; do
	keep=false
	for g in "${deb_files[@]}"; do [[ ${f##*/} == "$g" ]] && keep=true; done
	$keep || rm -f "$f"
done
say "${#deb_files[@]} Debian packages ready ($(since "$t")): $(printf '%s ' "${deb_files[@]%%_*}")"

t=$(date +%s)
(cd "$root" && "$go" build -o "$work/image" ./tools/image) || die "go build ./tools/image failed"
say "tools/image built ($(since "$t"))"

# base ROOT: what every image has: an empty /tmp (1777), /run, and a user
# database with root, istio-proxy (1337, istiod's user), application (1338,
# the echo apps') and nobody, files-only name lookups.
base() {
	local r=$1
	mkdir -p "$r/tmp" "$r/run" "$r/var" "$r/etc"
	chmod 1777 "$r/tmp"
	ln -s /run "$r/var/run"
	cat >"$r/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/sbin/nologin
		istio-proxy:x:1337:1337:istio-proxy:/nonexistent:/sbin/nologin
		application:x:1338:1338:application:/nonexistent:/sbin/nologin
		nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
	EOF
	cat >"$r/etc/group" <<-'EOF'
		root:x:0:
		istio-proxy:x:1337:
		application:x:1338:
		nogroup:x:65534:
	EOF
	# istio-cni bind-mounts /dev/null over this file while it runs iptables
	# in a pod's namespace: it has to exist.
	cat >"$r/etc/nsswitch.conf" <<-'EOF'
		passwd: files
		group: files
		hosts: files dns
		networks: files
		protocols: files
		services: files
		ethers: files
		rpc: files
	EOF
	chmod 0644 "$r/etc/passwd" "$r/etc/group" "$r/etc/nsswitch.conf"
}

# put ROOT SRC DST [MODE]: a file into the tree.
put() {
	mkdir -p "$1$(dirname "$3")"
	install -m "${4:-0755}" "$2" "$1$3"
}

# build N NAME REF FLAGS...: tools/image with FLAGS; writes DIR/images/NAME.tar and its
# index entry.
build() {
	local n=$1 name=$2 ref=$3 out
	shift 3
	out=$("$work/image" -root "$work/$name" -arch "$arch" -tag "$ref" -out "$images/$name.tar" -index "$images/images.json" "$@" 2>&1) ||
		die "$name: $out"
	say "[$n/3] $out"
}

# extract NAME: the archive's own file system (its one layer) into
# $work/check-NAME, for the checks.
extract() {
	local a=$images/$1.tar x=$work/check-$1 m layer
	mkdir -p "$x"
	m=$(tar -xOf "$a" manifest.json) || die "$1: no manifest.json in $a"
	layer=$(sed -n 's/.*"Layers":\["\([^"]*\)"\].*/\1/p' <<<"$m")
	[[ -n $layer ]] || die "$1: $a does not have one layer"
	tar -xOf "$a" "$layer" | tar -xz --numeric-owner -C "$x" || die "$1: cannot extract the layer of $a"
}

# check NAME WHAT -- command: runs command in a chroot of the archive's file
# system, fails with its first line of output.
check() {
	local name=$1 what=$2 out
	shift 2
	out=$("$@" 2>&1 </dev/null) || die "$name image: $what failed: $(head -n1 <<<"$out")"
	printf '%s\n' "$out"
}
checking=true
if [[ $(id -u) != 0 ]]; then
	checking=false
	say "not root: the images' programs are not run in a chroot (no check)"
fi

# 1. pilot: istiod. Istio's chart runs it with args and no command, as
# non-root (runAsNonRoot, read-only root file system), hence the numeric
# user, Istio's own (1337).
t=$(date +%s)
r=$work/pilot
base "$r"
put "$r" "$dir/pilot-discovery" /usr/local/bin/pilot-discovery
mkdir -p "$r/etc/istio" "$r/var/lib/istio"
if [[ -f $ca ]]; then
	put "$r" "$ca" "$ca" 0644
else
	say "[1/3] no $ca on this host: the pilot image has no CA bundle"
fi
build 1 pilot "$hub/pilot:$tag" -entrypoint /usr/local/bin/pilot-discovery -env "$env_path" -user 1337:1337
if $checking; then
	extract pilot
	# (Without /proc in the chroot it also logs that it cannot size its
	# memory limit: only its version line is shown.)
	v=$(check pilot "pilot-discovery version" chroot --userspec=1337:1337 "$work/check-pilot" /usr/local/bin/pilot-discovery version -s)
	say "[1/3] checked: pilot-discovery version -s as 1337: $(grep -m1 'version' <<<"$v")"
fi
rm -rf "$work/pilot" "$work/check-pilot"
say "[1/3] pilot done ($(since "$t"))"

# 2. install-cni: the node agent, the plugin it copies to the host, and the
# packet-filter tools from Debian.
t=$(date +%s)
r=$work/install-cni
mkdir -p "$r"
for f in "${deb_files[@]}"; do
	dpkg-deb -x "$debs/$f" "$r" || die "dpkg-deb -x $f failed"
done
# Debian's merged /usr: /bin, /sbin, /lib and /lib64 are links into /usr
# (the packages still ship some files under /lib, /lib64: moved there).
for d in bin sbin lib lib64; do
	if [[ -d $r/$d && ! -L $r/$d ]]; then
		mkdir -p "$r/usr/$d"
		while IFS= read -r -d '' f; do
			if [[ -e $r/usr/$d/$f || -L $r/usr/$d/$f ]]; then
				die "install-cni: the packages ship both /$d/${f#./} and /usr/$d/${f#./}"
			fi
		done < <(cd "$r/$d" && find . -mindepth 1 ! -type d -print0)
		cp -a "$r/$d/." "$r/usr/$d/"
		rm -rf "${r:?}/$d"
	fi
	mkdir -p "$r/usr/$d"
	ln -s "usr/$d" "$r/$d"
done
# What the iptables package's postinst does with update-alternatives, which
# dpkg-deb -x does not run: the unsuffixed names through /etc/alternatives,
# to the nf_tables variants (Debian's default, as in Istio's own image);
# iptables-legacy* and iptables-nft* are in the package itself.
mkdir -p "$r/etc/alternatives"
for v in iptables ip6tables arptables ebtables; do
	for s in "" -restore -save; do
		[[ -e $r/usr/sbin/$v-nft$s ]] || die "install-cni: the iptables package has no /usr/sbin/$v-nft$s"
		ln -s "/usr/sbin/$v-nft$s" "$r/etc/alternatives/$v$s"
		ln -s "/etc/alternatives/$v$s" "$r/usr/sbin/$v$s"
	done
done
# Documentation, locales, systemd units and iconv modules: nothing in the
# image reads them.
rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/info" "$r/usr/share/lintian" \
	"$r/usr/share/locale" "$r/usr/lib/systemd" "$r"/usr/lib/*-linux-gnu/gconv
base "$r"
put "$r" "$dir/install-cni" /usr/local/bin/install-cni
put "$r" "$dir/istio-cni" /opt/cni/bin/istio-cni
build 2 install-cni "$hub/install-cni:$tag" -entrypoint /usr/local/bin/install-cni -env "$cni_path" -workdir /opt/cni/bin
if $checking; then
	extract install-cni
	x=$work/check-install-cni
	# Every name Istio's iptables code may run (it picks iptables-legacy or
	# iptables-nft by running their -save; the unsuffixed ones are the last
	# resort), each through the loader and libraries of the image only.
	for v in iptables ip6tables; do
		for k in "" -legacy -nft; do
			for s in "" -save -restore; do
				check install-cni "$v$k$s --version" chroot "$x" "/usr/sbin/$v$k$s" --version >/dev/null
			done
		done
	done
	v=$(check install-cni "iptables-nft-save --version" chroot "$x" /usr/sbin/iptables-nft-save --version)
	v="$v; $(check install-cni "iptables-legacy --version" chroot "$x" /usr/sbin/iptables-legacy --version)"
	v="$v; $(check install-cni "nft --version" chroot "$x" /usr/sbin/nft --version)"
	say "[2/3] checked: iptables, ip6tables, each -legacy and -nft, each -save and -restore (18 names) and nft run --version in a chroot of the image: $v"
	# Rules through the extensions iptables loads at run time (owner,
	# REDIRECT, mark, CONNMARK), in network and mount namespaces of their
	# own (the -save of iptables-legacy reads /proc/net, as in a container).
	if unshare -n -m true 2>/dev/null; then
		rules=$(check install-cni "adding rules in a new network namespace" unshare -n -m sh -euc '
			x=$1
			mkdir -p "$x/proc"
			mount -t proc proc "$x/proc"
			chroot "$x" /usr/sbin/iptables -t nat -A OUTPUT -p tcp -m owner --uid-owner 1337 -j REDIRECT --to-ports 15001
			chroot "$x" /usr/sbin/ip6tables -t nat -A OUTPUT -p tcp -m owner --uid-owner 1337 -j REDIRECT --to-ports 15001
			chroot "$x" /usr/sbin/iptables-legacy -t mangle -A PREROUTING -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff
			printf "*filter\n:ISTIO_TEST - [0:0]\n-A ISTIO_TEST -p 255 -j DROP\nCOMMIT\n" | chroot "$x" /usr/sbin/iptables-nft-restore
			chroot "$x" /usr/sbin/iptables-save
			chroot "$x" /usr/sbin/ip6tables-save
			chroot "$x" /usr/sbin/iptables-legacy-save
			chroot "$x" /usr/sbin/nft --json list tables
		' sh "$x")
		[[ $(grep -cF -- '-A OUTPUT -p tcp -m owner --uid-owner 1337 -j REDIRECT --to-ports 15001' <<<"$rules") == 2 ]] ||
			die "install-cni image: iptables-save and ip6tables-save in a new network namespace do not both list the REDIRECT rule added"
		for want in '-A PREROUTING -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff' \
			'-A ISTIO_TEST -p 255 -j DROP' '"nftables": [{"metainfo"'; do
			grep -qF -- "$want" <<<"$rules" || die "install-cni image: the rules in a new network namespace lack: $want"
		done
		say "[2/3] checked: iptables (nf_tables and legacy), ip6tables, iptables-nft-restore, the -saves and nft --json add and list rules in a new network namespace"
	else
		say "[2/3] no new network and mount namespace here (unshare -n -m): rules not tried"
	fi
	v=$(check install-cni "istio-cni VERSION" env CNI_COMMAND=VERSION chroot "$x" /opt/cni/bin/istio-cni)
	check install-cni "install-cni --help" chroot "$x" /usr/local/bin/install-cni --help >/dev/null
	say "[2/3] checked: install-cni --help; istio-cni (CNI_COMMAND=VERSION): $v"
fi
rm -rf "$work/install-cni" "$work/check-install-cni"
say "[2/3] install-cni done ($(since "$t"))"

# 3. echo: Istio's test apps, the server the entrypoint, as Istio's image
# runs them (user 1338).
t=$(date +%s)
r=$work/echo
base "$r"
put "$r" "$dir/echo-server" /usr/local/bin/server
put "$r" "$dir/echo-client" /usr/local/bin/client
build 3 echo "$hub/echo:$tag" -entrypoint /usr/local/bin/server -env "$env_path" -user 1338:1338
if $checking; then
	extract echo
	check echo "server --help" chroot --userspec=1338:1338 "$work/check-echo" /usr/local/bin/server --help >/dev/null
	check echo "client --help" chroot --userspec=1338:1338 "$work/check-echo" /usr/local/bin/client --help >/dev/null
	say "[3/3] checked: server --help and client --help as 1338"
fi
rm -rf "$work/echo" "$work/check-echo"
say "[3/3] echo done ($(since "$t"))"

printf '%s\n' "$stamp" >"$images/.stamp"
say "done in $(since "$t0"): $images/images.json"
