# blastradius — see README.md.
GO      ?= go
BIN     := bin/blastradius
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
OUT     ?= results/$(shell date -u +%Y%m%d-%H%M%S)

.PHONY: build e2e test vet fmt bench clean

# bin/blastradius is the CLI; bin/blastradius-pod is the slim build the
# embedded cluster's pods run (no Kubernetes client libraries: half the memory).
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/blastradius
	$(GO) build -tags nokube -ldflags "-X main.version=$(VERSION)" -o $(BIN)-pod ./cmd/blastradius

# The default fault matrix on the embedded cluster, in every data plane mode:
# one line per trial, then the verdict table.
e2e: build
	$(BIN) run --provider netns --mode none,sidecar,ambient --scenario matrix --out $(OUT)

# Every test: unit, namespace and end-to-end suites, one package at a time (-p 1):
# the end-to-end timings must not share the two cores with other packages. Ginkgo
# suites run whole scenarios; each wait inside has its own deadline.
test: vet
	$(GO) test -count=1 -p 1 -timeout 25m ./...

vet:
	@test -z "$$(gofmt -l cmd framework proxy reports suites manifests internal)" || (gofmt -l cmd framework proxy reports suites manifests internal; echo "gofmt needed"; exit 1)
	$(GO) vet ./...

fmt:
	gofmt -w cmd framework proxy reports suites manifests internal

bench: build
	$(BIN) bench $(BENCH_FLAGS)
	$(GO) test -run '^$$' -bench . -benchtime 20x ./framework/cluster/netns ./framework/measure

clean:
	rm -rf bin
