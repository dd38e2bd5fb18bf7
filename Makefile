# conntrace: `make demo` runs the main job, `make test` passes the tests.
# Both install what they need on a fresh Debian machine (as root, or with sudo).

SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/conntrace
# Debian packages the build and the tests need: libpcap for capture and BPF,
# tshark and tcpdump as independent cross-checks, nginx and nghttp2 as real peers,
# wrk and ab (apache2-utils) as real load, ss (iproute2) to see sockets close,
# chromium to render the HTML report as a person sees it, nftables for audit,
# curl and python3 as real clients, python3-pip for DuckDB (the tests read the
# Parquet output back with its Python module).
DEB_PACKAGES := libpcap-dev tshark tcpdump nginx-light nghttp2-client wrk apache2-utils iproute2 chromium nftables curl python3 python3-pip time
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build deps test demo lint bench fixtures fuzz clean

all: build

# Install only what is missing, non-interactively.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install -q duckdb || python3 -m pip install -q --break-system-packages duckdb

build: deps
	$(CARGO) build --release --locked

test: deps
	$(CARGO) test --locked -- --test-threads=2

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

demo: build
	./scripts/demo.sh $(BIN)

# Remake the captures, then tshark's answers about them (fixtures/tshark/).
fixtures: build
	./fixtures/make.sh
	rm -f fixtures/tshark/*.txt
	CONNTRACE_TSHARK_REFRESH=1 $(CARGO) test --locked --test integration -- --test-threads=2

bench: deps
	./scripts/bench-replay.sh

# Each fuzz target for FUZZ_SECONDS (default 60) on nightly; see fuzz/README.md.
FUZZ_SECONDS ?= 60
fuzz: deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO=$(CARGO) ./scripts/fuzz.sh

clean:
	$(CARGO) clean
