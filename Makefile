# pacer: `make run` runs the demo, `make test` runs every check CI runs.
GO          ?= go
BIN         := bin/lb
VERSION     := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run test test-deps vet fmt fmt-check lint bench clean

all: build

## build: compile bin/lb
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/lb

## run: build and run `lb demo` (a simulated Marathon with demo apps)
run: build
	./$(BIN) demo

## test: install what the tests need, then vet, gofmt, staticcheck, every test with -race,
##       and the allocation tests once more without it
test: test-deps vet fmt-check lint
	$(GO) test -race -count=1 -timeout 12m ./...
	@# The data plane again with more Ps than cores: more pollers, and wakeups
	@# that cross them (a lost one, fixed in b87252e, showed only so); and
	@# with plain system calls where the pollers batch through io_uring.
	PACER_IO_URING=false $(GO) test -race -count=1 -cpu 4 -timeout 5m ./internal/fastconn ./proxy/...
	@# Allocation counts, again without -race: under it sync.Pool drops items on purpose.
	$(GO) test -count=1 -run 'Allocat' ./...

## test-deps: install the Debian packages the tests use (apt-get, when root)
test-deps:
	@scripts/test-deps.sh

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

lint:
	$(GO) run $(STATICCHECK) ./...

## bench: the long side-by-side benchmarks (HAProxy, nginx, NSD); see bench/RESULTS.md
bench: build
	@bench/run.sh

clean:
	rm -rf bin bench/out
