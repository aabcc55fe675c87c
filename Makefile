# blastradius — see README.md.
GO      ?= go
BIN     := bin/blastradius
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
OUT     ?= results/$(shell date -u +%Y%m%d-%H%M%S)

.PHONY: build images e2e test vet fmt bench clean fuzz

# bin/blastradius is the CLI; bin/blastradius-pod is the slim build the
# embedded cluster's pods run (no Kubernetes client libraries: half the memory).
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/blastradius
	$(GO) build -tags nokube -ldflags "-X main.version=$(VERSION)" -o $(BIN)-pod ./cmd/blastradius

# The image the Kubernetes manifests run (blastradius:$(VERSION), what
# `run --provider kind` expects): FROM scratch, the slim binary at /blastradius.
# Static (CGO_ENABLED=0): scratch has no libc. Written as a docker-archive
# tarball without a Docker engine; load it with kind's image-archive loader or
# `ctr -n k8s.io images import` (framework/cluster/kube/image.go does both).
IMAGE ?= blastradius:$(VERSION)
images:
	CGO_ENABLED=0 $(GO) build -tags nokube -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN)-pod ./cmd/blastradius
	$(GO) run ./tools/image -binary $(BIN)-pod -tag $(IMAGE) -out bin/blastradius-image.tar

# The default fault matrix in every data plane mode: one line per trial,
# then the verdict table; run writes report.html into the results folder.
# PROVIDER=netns (default): the embedded cluster. PROVIDER=local-k8s: a local
# 3-node Kubernetes built here (root; the run brings it up and takes it down;
# docs/local-k8s.md). PROVIDER=kind: a kind cluster (Docker).
# MESH=istio (local-k8s, kind): the meshed modes on Istio's ambient mesh
# (istiod and istio-cni built here, `make istio-images`; ztunnel: the
# tool's stand-in on local-k8s, upstream's on kind), installed for the run
# and removed after; MESH=reference,istio puts both side by side. The
# fault suite, which checks the reference data plane, runs with the
# reference mesh only. docs/istio.md.
PROVIDER ?= netns
E2E_MODES ?= none,sidecar,ambient
MESH ?= reference
e2e: build
ifeq ($(PROVIDER),netns)
	$(BIN) run --provider netns --mesh $(MESH) --mode $(E2E_MODES) --scenario matrix --out $(OUT)
else ifeq ($(PROVIDER),local-k8s)
	$(MAKE) local-k8s-deps images k8s-bins $(if $(findstring istio,$(MESH)),istio-images)
	$(BIN) cluster up --provider local-k8s --nodes 3 --dir $(LOCAL_K8S_DIR) --bin-dir $(K8S_BIN_DIR) --load-image bin/blastradius-image.tar
	s=0; \
	$(BIN) run --provider local-k8s --reuse --local-k8s-dir $(LOCAL_K8S_DIR) --mesh $(MESH) --mode $(E2E_MODES) --scenario matrix --out $(OUT) || s=1; \
	if [ "$(MESH)" = reference ]; then \
		PROVIDER=local-k8s KUBECONFIG=$(CURDIR)/$(LOCAL_K8S_DIR)/kubeconfig BLASTRADIUS_IMAGE=$(IMAGE) $(GO) test -count=1 -timeout 40m ./suites/faults/ || s=1; \
	fi; \
	$(BIN) cluster down --provider local-k8s --dir $(LOCAL_K8S_DIR) || s=1; \
	exit $$s
else ifeq ($(PROVIDER),kind)
	$(MAKE) images
	$(BIN) run --provider kind --mesh $(MESH) --mode $(E2E_MODES) --scenario matrix --out $(OUT)
else
	@echo "PROVIDER=$(PROVIDER) unknown (netns, local-k8s, kind)"; exit 2
endif

# Every test: unit, namespace and end-to-end suites, one package at a time (-p 1):
# the end-to-end timings must not share the two cores with other packages. Ginkgo
# suites run whole scenarios; each wait inside has its own deadline. The
# tests against a real API server and a real istiod need the binaries of
# `make k8s-test-bins` and `make istio-test-bins` (.ci/run builds them), and
# fail without them rather than skip; the node proxy's run against istiod
# needs root. Test binaries are linked without DWARF: -p 1 links them one at
# a time, and a quarter of each link is debug information nothing reads.
test: vet
	KUBEBUILDER_ASSETS=$(K8S_BIN_DIR) BLASTRADIUS_REQUIRE_K8S=1 \
		BLASTRADIUS_ISTIO_BINS=$(ISTIO_BIN_DIR) BLASTRADIUS_REQUIRE_ISTIO=1 \
		$(GO) test -count=1 -p 1 -timeout 25m -ldflags='-s -w' ./...

# The real etcd and kube-apiserver (and the node-side binaries) the
# Kubernetes provider's tests run, built from source by tools/k8s (modules of
# their own, so this go.mod never pulls in k8s.io/kubernetes), with the Chaos
# Mesh CRDs generated from the api types in go.mod. A no-op when the stamp in
# the folder names the same versions. `make test` points envtest at the folder
# and fails, rather than skips, the tests that need it. docs/kubernetes.md.
K8S_VERSION ?= $(shell sed -n 's|^require k8s.io/kubernetes \(v[^ ]*\).*|\1|p' tools/k8s/go.mod)
K8S_BIN_DIR ?= $(CURDIR)/.cache/k8s/$(K8S_VERSION)
.PHONY: k8s-test-bins k8s-bins
k8s-test-bins:
	GO=$(GO) tools/k8s/build.sh $(K8S_BIN_DIR) test

# k8s-test-bins plus the node side (controller-manager, scheduler, kubelet,
# kube-proxy) the local cluster runs.
k8s-bins:
	GO=$(GO) tools/k8s/build.sh $(K8S_BIN_DIR) all

# Istio's control plane (istiod), node agent (istio-cni) and echo apps, and
# its charts, built from the istio.io/istio version pinned in tools/istio
# (the one the main module takes its message types from). A no-op when the
# stamp in the folder names the same versions. istio-test-bins is the part
# `make test` runs (istiod and the echo apps). docs/istio.md.
ISTIO_BIN_DIR ?= $(CURDIR)/.cache/istio
.PHONY: istio-bins istio-test-bins
istio-bins:
	GO=$(GO) tools/istio/build.sh $(ISTIO_BIN_DIR) all
istio-test-bins:
	GO=$(GO) tools/istio/build.sh $(ISTIO_BIN_DIR) test

# Container images of istiod (pilot), the node agent (install-cni, with
# iptables and nftables from Debian packages) and the echo apps, built from
# istio-bins without Docker: docker-archive tarballs in
# $(ISTIO_BIN_DIR)/images, tagged blastradius.local/istio/<name>:<istio
# version>, indexed in images.json. A no-op when the stamp there names the
# same inputs. docs/istio.md.
.PHONY: istio-images
istio-images: istio-bins
	GO=$(GO) tools/istio/images.sh $(ISTIO_BIN_DIR)

# Only the tests against real Istio (part of `make test`): the node proxy
# against a real istiod and its HBONE against Istio's. docs/istio.md.
.PHONY: test-istio
test-istio: istio-test-bins k8s-test-bins
	KUBEBUILDER_ASSETS=$(K8S_BIN_DIR) BLASTRADIUS_REQUIRE_K8S=1 BLASTRADIUS_ISTIO_BINS=$(ISTIO_BIN_DIR) BLASTRADIUS_REQUIRE_ISTIO=1 \
		$(GO) test -count=1 -p 1 -timeout 15m ./framework/istio/...

# A local multi-node Kubernetes cluster for the Kubernetes providers where
# kind cannot run (root; no container engine or registry): the control plane
# as host processes, each node a network namespace with its own containerd,
# kubelet and kube-proxy. up prints the kubeconfig for `blastradius run
# --provider kubeconfig`; down removes everything up created, even after a
# killed up. docs/local-k8s.md.
LOCAL_K8S_DIR   ?= .cache/local-k8s
LOCAL_K8S_NODES ?= 3
.PHONY: local-k8s-up local-k8s-down
local-k8s-up: build k8s-bins
	$(BIN) cluster up --provider local-k8s --nodes $(LOCAL_K8S_NODES) --dir $(LOCAL_K8S_DIR) --bin-dir $(K8S_BIN_DIR) $(if $(wildcard bin/blastradius-image.tar),--load-image bin/blastradius-image.tar)

# What the local cluster needs from Debian (root): containerd, runc and the
# CNI plugins; installed when missing.
.PHONY: local-k8s-deps
local-k8s-deps:
	@command -v containerd >/dev/null && command -v runc >/dev/null && test -x /usr/lib/cni/bridge -o -x /opt/cni/bin/bridge || \
		(echo "installing containerd, runc, containernetworking-plugins"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc containernetworking-plugins >/dev/null)

local-k8s-down: build
	$(BIN) cluster down --provider local-k8s --dir $(LOCAL_K8S_DIR)

vet:
	@test -z "$$(gofmt -l cmd framework proxy reports suites manifests internal)" || (gofmt -l cmd framework proxy reports suites manifests internal; echo "gofmt needed"; exit 1)
	$(GO) vet ./...

fmt:
	gofmt -w cmd framework proxy reports suites manifests internal

# The soak: one embedded ambient cluster under load for SOAK_DURATION with a
# fault every SOAK_FAULT_EVERY, every data plane process's fds, goroutines and
# RSS sampled every SOAK_SAMPLE_EVERY; exit 0 flat, 1 leak. Not part of `make
# test` (30 minutes). docs/reliability.md ("Soak").
SOAK_DURATION     ?= 30m
SOAK_FAULT_EVERY  ?= 1m
SOAK_SAMPLE_EVERY ?= 10s
SOAK_NODES        ?= 3
.PHONY: soak
soak: build
	$(BIN) soak --duration $(SOAK_DURATION) --fault-every $(SOAK_FAULT_EVERY) --sample-every $(SOAK_SAMPLE_EVERY) --nodes $(SOAK_NODES) --out results/soak-$(shell date -u +%Y%m%d-%H%M%S)

# Every native Go fuzzer, one after another, FUZZTIME each. The list is
# derived, not written down: every FuzzXxx that `go test -list` reports in a
# package whose tests declare one, so a new fuzzer is in it without an edit
# here. FUZZ=<regexp> picks fuzzers by name (FUZZ=FuzzDispatch runs one).
# FUZZPARALLEL is the worker count (go test -parallel). Not part of `make
# test`, which runs only the fuzzers' seed corpora (testdata/fuzz).
# docs/reliability.md ("Fuzzing").
FUZZTIME     ?= 1m
FUZZ         ?= .
FUZZPARALLEL ?= 2
fuzz:
	@set -e; list=""; \
	for pd in $$($(GO) list -f '{{.ImportPath}}={{.Dir}}' ./...); do \
		pkg=$${pd%%=*}; dir=$${pd#*=}; \
		grep -qs '^func Fuzz' $$dir/*_test.go || continue; \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' | grep -E -- '$(FUZZ)' || true); do \
			list="$$list $$pkg=$$f"; \
		done; \
	done; \
	[ -n "$$list" ] || { echo "fuzz: no fuzzer matches FUZZ=$(FUZZ)"; exit 1; }; \
	echo "fuzz: $$(echo $$list | wc -w) fuzzers, $(FUZZTIME) each:"; \
	for pf in $$list; do echo "  $${pf%%=*} $${pf#*=}"; done; \
	for pf in $$list; do \
		echo "== $${pf%%=*} $${pf#*=}"; \
		$(GO) test -run '^$$' -fuzz "^$${pf#*=}\$$" -fuzztime $(FUZZTIME) -parallel $(FUZZPARALLEL) $${pf%%=*}; \
	done

bench: build
	$(BIN) bench $(BENCH_FLAGS)
	$(GO) test -run '^$$' -bench . -benchtime 20x ./framework/cluster/netns ./framework/measure
	$(GO) test -run '^$$' -bench . -benchtime 2s ./framework/istio/hbonebench

clean:
	rm -rf bin
