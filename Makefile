# pibridge — `make run` for the demo, `make test` for everything.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# No HTTP/2 in net/http: the panel is a few small files and WebSockets
# upgrade over HTTP/1.1 anyway, and leaving it out takes 377 KB off the
# binary and ~0.4 MiB off the idle RSS. HTTPS still works.
TAGS     := nethttpomithttp2
BIN      := bin
DIST     := dist
RASPI    := deploy/raspi
ARCHS    := armv6 armv7 arm64
# Tarballs carry this date on every file, so that one commit gives one
# checksum: the last commit's time.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# Debian packages the tests drive for real (see README "Tests").
TEST_DEPS := mosquitto:mosquitto chromium:chromium qemu-arm-static:qemu-user-static qemu-aarch64-static:qemu-user-static systemd-analyze:systemd
# The kernel GPIO rig (gpio/kerneltest): QEMU, and what builds gpio-sim for
# Debian's arm64 kernel from its arm64 packages (a path where a package
# installs no command).
TEST_DEPS += qemu-system-aarch64:qemu-system-arm aarch64-linux-gnu-gcc-12:gcc-12-aarch64-linux-gnu \
  /usr/lib/linux-kbuild-6.1/scripts:linux-kbuild-6.1 make:make

.PHONY: all build run test test-deps test-kernel vet cross pi-zero pi pi64 dist dist-pack deploy bench bench-deps clean

ifneq ($(filter deploy,$(MAKECMDGOALS)),)
ifeq ($(PI),)
$(error usage: make deploy PI=user@host [ARCH=armv6|armv7|arm64] [DRY_RUN=1])
endif
endif

all: build

# cgo off, like the Pi builds below: net and os/user then use their pure
# Go code, and the bridge does not map libc and the dynamic loader
# (1.5 MB more resident on amd64).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/bridge ./cmd/bridge

# The demo: simulated board, embedded broker on 127.0.0.1:1883,
# panel on http://127.0.0.1:8080.
run: build
	./$(BIN)/bridge

# Static, cgo-free builds for the Pi: armv6 (Zero, 1), armv7 (2, 3, 4 on
# 32-bit OS), arm64 (3, 4, 5 on 64-bit OS).
cross: $(BIN)/bridge-armv6 $(BIN)/bridge-armv7 $(BIN)/bridge-arm64

$(BIN)/bridge-armv6: FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=6 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $@ ./cmd/bridge
$(BIN)/bridge-armv7: FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $@ ./cmd/bridge
$(BIN)/bridge-arm64: FORCE
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $@ ./cmd/bridge
FORCE:

# One Pi each: Zero and 1 (armv6); 2, 3, 4 on a 32-bit OS (armv7); 3, 4, 5
# on a 64-bit OS (arm64).
pi-zero: $(BIN)/bridge-armv6
pi: $(BIN)/bridge-armv7
pi64: $(BIN)/bridge-arm64

# dist/pibridge-VERSION-linux-ARCH.tar.gz for each Pi build: the binary,
# the systemd unit, the example config, install.sh and uninstall.sh,
# README.md and LICENSE; dist/SHA256SUMS over them. Reproducible: sorted,
# owned by root, dated SOURCE_DATE_EPOCH, gzip without a timestamp.
dist: cross
	@$(MAKE) --no-print-directory dist-pack

# dist-pack packs what is in $(BIN) without building (dist builds first).
dist-pack:
	@set -e; mkdir -p $(DIST); rm -f $(DIST)/pibridge-*.tar.gz $(DIST)/SHA256SUMS; \
	tarballs=; \
	for arch in $(ARCHS); do \
	  name=pibridge-$(VERSION)-linux-$$arch; stage=$(DIST)/$$name; \
	  rm -rf $$stage; install -d -m 0755 $$stage; \
	  install -m 0755 $(BIN)/bridge-$$arch $$stage/bridge; \
	  install -m 0755 $(RASPI)/install.sh $(RASPI)/uninstall.sh $$stage/; \
	  install -m 0644 $(RASPI)/pibridge.service $(RASPI)/config.example.yaml README.md LICENSE $$stage/; \
	  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) \
	    -C $(DIST) -cf - $$name | gzip -9n > $$stage.tar.gz; \
	  rm -rf $$stage; tarballs="$$tarballs $$name.tar.gz"; \
	done; \
	cd $(DIST) && sha256sum $$tarballs > SHA256SUMS && cat SHA256SUMS

# make deploy PI=user@host: copy the build for that Pi over scp, install
# and restart it over ssh (deploy/raspi/deploy.sh). ARCH= picks the build
# (default: the Pi's uname -m); DRY_RUN=1 prints the commands only.
deploy: $(if $(DRY_RUN),,$(if $(ARCH),$(BIN)/bridge-$(ARCH),cross))
	@PI='$(PI)' ARCH='$(ARCH)' BIN='$(BIN)' DRY_RUN='$(DRY_RUN)' $(RASPI)/deploy.sh

# Installs what the tests need when it is missing: apt-get as root, sudo
# otherwise; without either it stops and says what to install.
test-deps:
	@missing=""; for pair in $(TEST_DEPS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || [ -e $$cmd ] || missing="$$missing $$pkg"; \
	done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	arm64=$$(dpkg --print-foreign-architectures 2>/dev/null | grep -qx arm64 || echo no); \
	if [ -n "$$(echo $$missing | tr -d ' ')" ] || [ -n "$$arm64" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "make test needs: $$missing$${arm64:+(and the arm64 architecture for the kernel rig) }— install them with: dpkg --add-architecture arm64 && apt-get update && apt-get install -y $$missing" >&2; exit 1; fi; \
	  [ -z "$$arm64" ] || { echo "adding the arm64 architecture (the kernel rig downloads Debian's arm64 kernel)"; $$SUDO dpkg --add-architecture arm64; }; \
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
	# Memory and allocation counts mean nothing under the race detector,
	# so those tests skip there and run here.
	$(GO) test -count=1 -run 'Footprint|Allocations' ./ws

# The kernel GPIO rig alone: bridge-arm64 on Debian's arm64 kernel with
# gpio-sim under qemu-system-aarch64 (see README "Tests"). Its cache lives in
# $$XDG_CACHE_HOME/pibridge/kernel-rig (~/.cache/…), built on first use.
test-kernel: test-deps $(BIN)/bridge-arm64
	PIBRIDGE_CROSS_DIR=$(CURDIR)/$(BIN) $(GO) test -count=1 -v -timeout 10m ./gpio/kerneltest/

# Benchmarks: the real binary as a child process on loopback,
# pinned apart from the load generator with taskset, beside its peers
# (Node-RED, mosquitto, mochi) in the same run. Not part of `make test`;
# figures in BENCHMARKS.md. make bench BENCH_FLAGS='-scenario idle'. It builds the
# Pi binaries first: the idle table reports their sizes.
BENCH_FLAGS ?= -idle 60s -samples 100000
# Debian packages the benchmarks drive (command:package); Node-RED comes
# from npm, pinned, into a scratch directory under $(BIN) (gitignored).
BENCH_DEPS   := mosquitto:mosquitto taskset:util-linux node:nodejs npm:npm
# NODE_RED is kept in step with nodeREDVersion in bench/peers.go.
NODE_RED     := 4.1.8
NODE_RED_DIR := $(BIN)/bench-peers/node-red
bench: build cross bench-deps
	$(GO) run ./bench -bridge $(BIN)/bridge -nodered $(NODE_RED_DIR) $(BENCH_FLAGS)

bench-deps:
	@missing=""; for pair in $(BENCH_DEPS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$(echo $$missing | tr -d ' ')" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "make bench needs:$$missing — install them with: apt-get install -y$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
	    { echo "could not install:$$missing (make bench needs them)" >&2; exit 1; }; \
	fi
	@if ! grep -qs '"version": "$(NODE_RED)"' $(NODE_RED_DIR)/node_modules/node-red/package.json; then \
	  echo "installing node-red@$(NODE_RED) into $(NODE_RED_DIR)"; mkdir -p $(NODE_RED_DIR); \
	  npm install --prefix $(NODE_RED_DIR) --no-audit --no-fund --omit=dev --loglevel=error node-red@$(NODE_RED) >/dev/null || \
	    { echo "could not install node-red@$(NODE_RED) from the npm registry into $(NODE_RED_DIR); or run make bench BENCH_FLAGS='-peers mosquitto,mochi'" >&2; exit 1; }; \
	fi

# The fault suite: the real binary through mosquitto SIGKILLs,
# its own SIGKILLs, slowloris and never-reading clients, an interlock
# storm, malformed input and a 30 min soak; one table per fault, non-zero
# exit when one misses. Not part of `make test`. Short run:
# make faults FAULTS_FLAGS='-only 1,2 -kills 3 -crashes 3 -soak 1m'.
FAULTS_DEPS  := mosquitto:mosquitto
FAULTS_FLAGS ?=
.PHONY: faults faults-deps
faults: faults-deps build
	$(GO) run ./faults -bridge $(BIN)/bridge $(FAULTS_FLAGS)

# Installs mosquitto when it is missing, as test-deps does.
faults-deps:
	@missing=""; for pair in $(FAULTS_DEPS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$(echo $$missing | tr -d ' ')" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "make faults needs:$$missing — install it with: apt-get install -y$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
	    { echo "could not install:$$missing — install it with: apt-get install -y$$missing" >&2; exit 1; }; \
	fi

# Gateway mode on a real broker cluster: 3 NATS nodes on loopback
# (JetStream and the MQTT listener on each), 50 bridge processes, 2
# gateways; node, bridge and gateway SIGKILLs (README "Many boards").
# Not part of `make test`; figures in BENCHMARKS.md. Short run:
# make fleet FLEET_FLAGS='-bridges 9 -commands 4'.
FLEET_DEPS  := nats-server:nats-server
FLEET_FLAGS ?=
.PHONY: fleet fleet-deps
fleet: fleet-deps build
	$(GO) run ./fleet -bridge $(BIN)/bridge $(FLEET_FLAGS)

# Installs nats-server when it is missing, as test-deps does.
fleet-deps:
	@missing=""; for pair in $(FLEET_DEPS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$(echo $$missing | tr -d ' ')" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "make fleet needs:$$missing — install it with: apt-get install -y$$missing" >&2; exit 1; fi; \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null || \
	    { echo "could not install:$$missing — install it with: apt-get install -y$$missing" >&2; exit 1; }; \
	fi

clean:
	rm -rf $(BIN) dist
