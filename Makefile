# sluice — build, test and benchmark.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
STATICCHECK ?= v0.8.2
IMAGE   ?= ghcr.io/sluice-ai/sluice
TAG     ?= dev
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
# grpcnotrace leaves out gRPC's golang.org/x/net/trace (a debug page sluice never
# serves). It imports html/template, whose reflection-driven execution stops the
# linker from dropping unused methods: the binary is a third smaller without it.
TAGS    ?= grpcnotrace
LDFLAGS := -s -w -X github.com/sluice-ai/sluice/internal/buildinfo.Version=$(VERSION) -X github.com/sluice-ai/sluice/internal/buildinfo.Commit=$(COMMIT)

.PHONY: build image run test bench bench-compare bench-scenarios bench-kvroute fuzz fmt

## build: the sluice binary in bin/
build:
	$(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/sluice ./cmd/sluice

## run: build bin/sluice and run it in the foreground with CONFIG (the quickstart); sluice itself is make's child (exec), so SIGTERM or Ctrl-C reaches the gateway and it drains and stops its replicas
CONFIG ?= examples/quickstart.yaml
run: build
	exec ./bin/sluice serve -c $(CONFIG)

## image: bin/sluice-image.tar, the image $(IMAGE):$(TAG) (what deploy/ runs) for `docker load` / `podman load`; no Docker daemon or base image needed
image:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o bin/linux-$(IMAGE_ARCH)/sluice ./cmd/sluice
	$(GO) run ./scripts/image -binary bin/linux-$(IMAGE_ARCH)/sluice -arch $(IMAGE_ARCH) \
	  -version $(VERSION) -revision $(shell git rev-parse HEAD 2>/dev/null || echo unknown) \
	  -created $(shell git log -1 --format=%ct 2>/dev/null || echo 0) -tag $(IMAGE):$(TAG) -o bin/sluice-image.tar

## test: vet, staticcheck and the whole test suite with the race detector (installs or builds what tests need)
test:
	./scripts/test-deps.sh
	./scripts/kube-test-assets.sh >/dev/null
	./scripts/otelcol-test-assets.sh >/dev/null
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...
	$(GO) test -race -timeout 30m ./...

## bench: Go micro-benchmarks of the hot paths
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 ./internal/... | tee bench.txt

## fuzz: run each fuzz target for a while (FUZZTIME=30s)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./internal/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench-compare: sluice against HAProxy, NGINX and Caddy on this machine (installs them; docs/benchmarks.md)
BENCH_FLAGS ?= -wait-load 2.5 -wait-max 3m
bench-compare:
	$(GO) run ./bench/compare $(BENCH_FLAGS)

## bench-scenarios: overload, replica kill, priorities and autoscaler-vs-fixed-pool scenarios (bench/results/scenarios.md)
bench-scenarios:
	$(GO) run ./bench/scenarios

## bench-kvroute: kv_aware against the other balancers on the Mooncake trace, 3 gateways sharing the index, a low-reuse control (bench/results/kvroute.md)
bench-kvroute:
	$(GO) run ./bench/kvroute

fmt:
	gofmt -w $$(git ls-files '*.go')

## pgo: cmd/sluice/default.pgo, the profile `go build` optimizes sluice with: CPU profiles of a plain and of a streamed request through the gateway (internal/gateway benchmarks, built without PGO), merged (docs/benchmarks.md)
.PHONY: pgo
pgo:
	mkdir -p bin/pgo
	$(GO) test -c -pgo=off -o bin/pgo/gateway.test ./internal/gateway/
	cd bin/pgo && ./gateway.test -test.run '^$$' -test.bench 'BenchmarkProxyOverhead/sluice$$' -test.benchtime 60000x -test.cpuprofile plain.out
	cd bin/pgo && ./gateway.test -test.run '^$$' -test.bench 'BenchmarkProxyStream/sluice$$' -test.benchtime 12000x -test.cpuprofile stream.out
	$(GO) tool pprof -proto bin/pgo/gateway.test bin/pgo/plain.out bin/pgo/stream.out > cmd/sluice/default.pgo
