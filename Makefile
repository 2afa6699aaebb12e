# pibridge — `make run` for the demo, `make test` for everything.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BIN      := bin
# Debian packages the tests drive for real (see README "Tests").
TEST_DEPS := mosquitto:mosquitto chromium:chromium qemu-arm-static:qemu-user-static qemu-aarch64-static:qemu-user-static

.PHONY: all build run test test-deps vet cross clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/bridge ./cmd/bridge

# The demo: simulated board, embedded broker on 127.0.0.1:1883,
# panel on http://127.0.0.1:8080.
run: build
	./$(BIN)/bridge

# Static, cgo-free builds for the Pi: armv6 (Zero, 1), armv7 (2, 3, 4 on
# 32-bit OS), arm64 (3, 4, 5 on 64-bit OS).
cross: $(BIN)/bridge-armv6 $(BIN)/bridge-armv7 $(BIN)/bridge-arm64

$(BIN)/bridge-armv6: FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/bridge
$(BIN)/bridge-armv7: FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/bridge
$(BIN)/bridge-arm64: FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/bridge
FORCE:

# Installs what the tests need when it is missing: apt-get as root, sudo
# otherwise; without either it stops and says what to install.
test-deps:
	@missing=""; for pair in $(TEST_DEPS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$$(echo $$missing | tr -d ' ')" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "make test needs: $$missing— install them with: apt-get install -y $$missing" >&2; exit 1; fi; \
	  echo "installing $$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
	    { echo "could not install: $$missing" >&2; exit 1; }; \
	fi
	$(GO) mod download

vet:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$bad" ]; then echo "gofmt needed: $$bad" >&2; exit 1; fi
	$(GO) vet ./...

# Everything: unit, integration (real mosquitto, embedded broker, real
# WebSocket clients), fuzz seed corpora, and the ARM binaries under qemu.
test: test-deps vet cross
	PIBRIDGE_CROSS_DIR=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 12m ./...

clean:
	rm -rf $(BIN) dist
