# The two commands of the README: `make demo` and `make test`. Each installs what it
# needs (a virtualenv with the package; Debian tools when running as root: system-deps).
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench eval eval-all system-deps xdp xdp-objs clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# Debian tools the tests use as real peers and independent checkers (tshark reads our
# pcaps; tcpdump, socat, nc, nftables and iproute2 for the TAP/namespace tests in
# tests/net; redis-cli, redis-benchmark and redis-server as the kv server's real clients
# and reference, tests/apps; nginx as the load balancer's backends, wrk, ab and curl as
# its clients, apps/lb.py; haproxy as the second kernel-stack proxy of benchmarks/apps.py
# and `acceltcp eval table5`), what the real-network benchmark builds (gcc + libc
# headers for its C load client, benchmarks/rr_client.c), and the XDP dataplane's
# toolchain (clang -target bpf, llvm, libbpf's bpf_helpers.h, bpftool to make vmlinux.h
# and to load the objects; src/acceltcp/nic/xdp). Installs only what is missing, as root.
SYSTEM_DEPS := tshark:tshark tcpdump:tcpdump socat:socat nc:netcat-openbsd nft:nftables \
               ip:iproute2 nstat:iproute2 cc:gcc \
               /usr/include/stdio.h:libc6-dev \
               redis-cli:redis-tools redis-benchmark:redis-tools redis-server:redis-server \
               nginx:nginx haproxy:haproxy wrk:wrk ab:apache2-utils curl:curl \
               clang:clang llc:llvm /usr/include/bpf/bpf_helpers.h:libbpf-dev \
               bpftool:bpftool

system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
		missing=""; \
		for dep in $(SYSTEM_DEPS); do \
			what=$${dep%%:*}; pkg=$${dep#*:}; \
			case $$what in \
				/*) [ -e "$$what" ] || missing="$$missing $$pkg" ;; \
				*) command -v "$$what" >/dev/null 2>&1 || missing="$$missing $$pkg" ;; \
			esac; \
		done; \
		if [ -n "$$missing" ]; then \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				$$missing >/dev/null; \
		fi; \
	fi

# The XDP dataplane's BPF objects (docs/xdp.md): vmlinux.h from the running kernel's BTF,
# then each src/acceltcp/nic/xdp/*.bpf.c -> build/xdp/*.bpf.o. Generated, never committed.
# Without the toolchain or the kernel's BTF, `xdp` says what is missing and builds nothing
# (the Python NIC placements need none of it; loading XDP then names what is missing).
XDP_SRC  := src/acceltcp/nic/xdp
XDP_OUT  := build/xdp
XDP_OBJS := $(patsubst $(XDP_SRC)/%.bpf.c,$(XDP_OUT)/%.bpf.o,$(wildcard $(XDP_SRC)/*.bpf.c))
BPF_CFLAGS := -O2 -g -target bpf -mcpu=v3 -Wall -Werror -I$(XDP_OUT) -I$(XDP_SRC)

$(XDP_OUT)/vmlinux.h:
	@mkdir -p $(XDP_OUT)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(XDP_OUT)/%.bpf.o: $(XDP_SRC)/%.bpf.c $(wildcard $(XDP_SRC)/*.h) $(XDP_OUT)/vmlinux.h
	clang $(BPF_CFLAGS) -c $< -o $@.tmp && mv $@.tmp $@

xdp: system-deps
	@missing=""; \
	for t in clang bpftool; do command -v $$t >/dev/null 2>&1 || missing="$$missing $$t"; done; \
	[ -e /usr/include/bpf/bpf_helpers.h ] || missing="$$missing libbpf-dev"; \
	[ -e /sys/kernel/btf/vmlinux ] || missing="$$missing /sys/kernel/btf/vmlinux"; \
	if [ -n "$$missing" ]; then echo "xdp: not built, missing:$$missing"; \
	else $(MAKE) --no-print-directory xdp-objs; fi

xdp-objs: $(XDP_OBJS)
	@:

demo: $(STAMP) xdp
	$(VENV)/bin/acceltcp demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: $(STAMP) system-deps xdp lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/acceltcp bench

# The paper's evaluation in the simulator (docs/eval.md): regenerates docs/eval/.
eval: $(STAMP)
	$(VENV)/bin/acceltcp eval --out docs/eval

# every experiment, the real-network ones included (root): the committed report
eval-all: $(STAMP) xdp
	$(VENV)/bin/acceltcp eval all --nic both --out docs/eval

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
