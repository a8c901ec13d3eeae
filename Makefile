# stasis: one static Go binary.
GO      ?= go
export CGO_ENABLED = 0

.PHONY: build demo test bench clean

build:
	$(GO) build -trimpath -o bin/stasis ./cmd/stasis

# Build, then checkpoint and restore a sample program (needs root).
demo:
	./examples/demo.sh

# Every test: unit, fuzz seeds and end-to-end (needs root, gcc, crit).
test:
	$(GO) vet ./...
	$(GO) test -count=1 -parallel 4 -timeout 30m ./...

bench: build
	$(GO) run ./bench

clean:
	rm -rf bin
