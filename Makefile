# The two commands of the README: `make demo` and `make test`. Each installs what it
# needs (a virtualenv with the package; Debian tools when running as root: system-deps).
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# Debian tools the tests use as real peers and independent checkers (tshark reads our
# pcaps; tcpdump, socat, nc, nftables and iproute2 for the TAP/namespace tests in
# tests/net; redis-cli, redis-benchmark and redis-server as the kv server's real clients
# and reference, tests/apps; nginx as the load balancer's backends, wrk, ab and curl as
# its clients, apps/lb.py), and what the real-network benchmark builds (gcc + libc
# headers for its C load client, benchmarks/rr_client.c). Installs only what is
# missing, as root.
SYSTEM_DEPS := tshark:tshark tcpdump:tcpdump socat:socat nc:netcat-openbsd nft:nftables \
               ip:iproute2 nstat:iproute2 cc:gcc \
               /usr/include/stdio.h:libc6-dev \
               redis-cli:redis-tools redis-benchmark:redis-tools redis-server:redis-server \
               nginx:nginx wrk:wrk ab:apache2-utils curl:curl

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

demo: $(STAMP)
	$(VENV)/bin/acceltcp demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: $(STAMP) system-deps lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/acceltcp bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
