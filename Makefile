# The two commands of the README: `make demo` and `make test`. Each installs what it
# needs (a virtualenv with the package; tshark from Debian when running as root).
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

# Debian tools the tests use as independent checkers (tshark reads our pcaps).
system-deps:
	@if [ "$$(id -u)" = 0 ] && ! command -v tshark >/dev/null 2>&1; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tshark >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/acceltcp demo

test: $(STAMP) system-deps
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(VENV)/bin/acceltcp bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
