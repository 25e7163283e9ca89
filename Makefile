# One entry point for set-up, tests, benchmarks and the demo. Every target installs what it
# needs into .venv (ignored by git) the first time, and reuses it afterwards.

# The first interpreter on PATH that runs and is 3.11+ (pyenv shims may exist but not run).
PYTHON ?= $(shell for p in python3 python3.11 python3.12 python3.13; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

GEN := node/gen
PROTOS := $(wildcard proto/blacklist/v1/*.proto)
PROTO_STAMP := $(GEN)/.stamp

.PHONY: install proto test lint typecheck unit tools bench bench-compare compare-tools demo up down clean mutate scale-up scale-down balancer-tools reader simulate bench-readme

$(STAMP): pyproject.toml blacklist/_speedups.c
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required and none was found on PATH" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(PROTO_STAMP)

# Python stubs from proto/ with the pinned grpcio-tools, into node/gen (not committed).
# protoc names modules after the proto package (blacklist.v1), which would shadow the
# library, so the generated imports are rewritten to live under node.gen.
$(PROTO_STAMP): $(STAMP) $(PROTOS)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=$(GEN) --pyi_out=$(GEN) \
		--grpc_python_out=$(GEN) $(PROTOS)
	sed -i 's/^from blacklist\.v1 import/from node.gen.blacklist.v1 import/' \
		$(GEN)/blacklist/v1/*.py $(GEN)/blacklist/v1/*.pyi
	touch $(GEN)/__init__.py $(GEN)/blacklist/__init__.py $(GEN)/blacklist/v1/__init__.py
	touch $(PROTO_STAMP)

proto:
	rm -f $(PROTO_STAMP)
	$(MAKE) $(PROTO_STAMP)

lint: install
	$(BIN)/ruff check blacklist node tests bench
	$(BIN)/ruff format --check blacklist node tests bench

typecheck: install
	$(BIN)/mypy

# promtool and prometheus (Debian's prometheus package): tests/test_prometheus.py runs the
# alert rules' unit tests and a real Prometheus against a federation, and fails without them.
# chromium (Debian's): tests/test_status_page.py loads the node's status page in a real browser.
# openssl (Debian's OpenSSL 3): tests/test_sm2_interop.py checks SM2 signatures both ways.
tools: compare-tools balancer-tools
	command -v openssl >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl)
	command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# h2load, redis-server and redis-benchmark (Debian's nghttp2-client, redis-server): for
# `make bench-compare` and its tiny end-to-end run in tests/test_compare.py.
compare-tools:
	command -v h2load >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client)
	command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools)

unit: install tools reader
	$(BIN)/pytest -q tests

# The offline filter's reference reader in C (issue #16): one file, the system compiler, no
# dependencies; tests/test_offline_filter_c.py runs it beside the Python reader.
CC ?= cc
reader: reader/offline_filter
reader/offline_filter: reader/offline_filter.c
	$(CC) -std=c99 -O2 -Wall -Wextra -pedantic -o $@ $<

# The benchmark files also run here once, tiny and untimed, so that they cannot rot.
test: lint typecheck unit
	BENCH_SCALE=20000 $(BIN)/pytest -q bench --benchmark-disable -p no:cacheprovider

# Mutation run over the acceptance, trust, ingest and check rules (issue #11; configured in
# pyproject.toml's [tool.mutmut]); not part of `make test`. Work and results stay in mutants/
# (a rerun resumes); MUTANTS narrows it, e.g. MUTANTS='blacklist.sync.accept*'. PYTHONPATH
# is cleared so that the tests import the mutated copy, not this checkout.
MUTANTS ?=
mutate: install
	test -x $(BIN)/mutmut || $(BIN)/python -m pip install -q -e '.[dev,bench,mutate]'
	env -u PYTHONPATH $(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results

# h2load (Debian's nghttp2-client) drives the node from outside its process (bench/test_node.py);
# without it those benchmarks skip, naming it.
bench: install
	command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client)
	$(BIN)/pytest bench --benchmark-only --benchmark-json=bench/results/latest.json \
		--benchmark-columns=min,median,mean,rounds -q
	$(BIN)/python -m bench.report bench/results/latest.json

# README.md's benchmark table from the result files its rows' commands write
# (bench/results/readme-*.json; bench/readme_table.py names each row's command).
bench-readme: install
	$(BIN)/python -m bench.report --readme

# The node beside an empty grpc.aio handler, Redis (started here on loopback, no
# persistence, stopped afterwards), a raw TCP echo, a Python set and a DER delta CRL, in one
# run: bench/results/compare.md and compare.png (issue #6). 10M: BENCH_SCALE=10000000.
BENCH_SCALE ?= 1000000
bench-compare: install compare-tools
	$(BIN)/python -m bench.compare --scale $(BENCH_SCALE)

# The national federation simulated in one process with the library's sync core (issue #18,
# blacklist/sim/): a small topology in seconds, all 371 nodes with FULL=1 (about half an hour).
# Writes bench/results/simulation.md and simulation.png; the last line is `national: p99 ...`.
# The fault-injection seeds run in `make test` (tests/test_sim_faults.py; SIM_SEEDS=N for more).
FULL ?=
simulate: install
	$(BIN)/python -m blacklist.sim $(if $(FULL),--full)

# The national scenario (issue #4): six nodes as separate processes, revoked at Guangzhou,
# refused in Beijing; everything stopped at the end.
demo: install
	$(BIN)/python -m node demo

# The same federation left running in the background (state, logs and data in .federation/),
# until `make down`.
up: install
	$(BIN)/python -m node up

# Read replicas behind HAProxy (issue #18, node/local/scale.py, deploy/haproxy.cfg.in): an upstream
# city node, SCALE_REPLICAS replicas following it and HAProxy in front, left running (state,
# logs and data in .scale/) until `make scale-down`.
SCALE_REPLICAS ?= 2
scale-up: install balancer-tools
	$(BIN)/python -m node scale-up --replicas $(SCALE_REPLICAS)

scale-down:
	@test -x $(BIN)/python || { echo "no $(VENV): nothing was started by make scale-up"; exit 0; }
	$(BIN)/python -m node scale-down

# haproxy (Debian's): the balancer of `make scale-up` and tests/test_balancer.py.
balancer-tools:
	command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy)

down:
	@test -x $(BIN)/python || { echo "no $(VENV): nothing was started by make up"; exit 0; }
	$(BIN)/python -m node down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis reader/offline_filter
