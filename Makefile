# The Makefile is the interface: the same verbs locally and in CI.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := etcd-server etcd-client busybox isc-dhcp-client dhcpcd-base kea-admin \
	kea-dhcp4-server isc-dhcp-relay iproute2 python3-venv python3-dev procps \
	docker.io docker-compose debootstrap util-linux
PROTO_OUT := hubspoke/api

.PHONY: help deps dev lint typecheck test test-unit test-integration test-system test-containers proto proto-check demo bench bench-scale chaos soak simulate simulate-mutants fuzz clean

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: ## install the Debian packages the tests and demo use (root)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# the Debian packages may start system services; nothing of ours relies on them
	@for s in kea-dhcp4-server etcd isc-dhcp-relay docker containerd; do \
		command -v systemctl >/dev/null && systemctl is-active -q $$s 2>/dev/null && systemctl stop $$s || true; done

$(VENV)/.stamp: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

dev: deps $(VENV)/.stamp ## Debian packages and the pinned virtual environment

proto: $(VENV)/.stamp ## regenerate Python code from proto/
	$(PY) scripts/genproto.py

proto-check: $(VENV)/.stamp ## regenerate and fail on drift
	$(PY) scripts/genproto.py --check

lint: $(VENV)/.stamp ## ruff lint and format check
	$(VENV)/bin/ruff check hubspoke hub spoke tests bench scripts
	$(VENV)/bin/ruff format --check hubspoke hub spoke tests bench scripts

typecheck: $(VENV)/.stamp ## mypy --strict on our code
	$(VENV)/bin/mypy

test-unit: dev
	$(VENV)/bin/pytest -q tests/unit

test-integration: dev
	$(VENV)/bin/pytest -q tests/integration

test-system: dev
	$(VENV)/bin/pytest -q tests/system

test-containers: dev ## the image and the compose stack on a real dockerd of our own
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/containers

test: dev proto-check lint typecheck ## every tier: unit, integration (real etcd), system (namespaces, real clients), containers
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

demo: dev ## etcd and a spoke in a namespace, three real clients, bindings read back from etcd
	$(PY) -m scripts.demo

bench: dev ## perfdhcp against the spoke, Kea and a Kea HA pair (see bench/README.md)
	$(PY) -m bench.run

COUNTS ?= 0,100000,1000000
bench-scale: dev ## a spoke started over COUNTS stored bindings (0,100000,1000000): start time, memory, loop lag
	$(PY) -m bench.scale --counts $(COUNTS)

SEEDS ?= 1-20000
JOBS ?= 2
HORIZON ?= 200
simulate: $(VENV)/.stamp ## the cluster simulation over many seeds (SEEDS=1-20000 JOBS=2 HORIZON=200)
	$(PY) -m tests.sim --seeds $(SEEDS) --jobs $(JOBS) --horizon $(HORIZON) --quiet

simulate-mutants: $(VENV)/.stamp ## put issue 11's defects back one by one: the simulation must catch each
	$(PY) -m tests.sim.mutants --jobs $(JOBS)

FUZZ_EXAMPLES ?= 50000
fuzz: $(VENV)/.stamp ## decode + engine + exchange + encode on random and mutated datagrams, FUZZ_EXAMPLES (50000) runs; `test` runs 300
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VENV)/bin/pytest -q -p no:cacheprovider tests/unit/dhcp/test_fuzz.py

chaos: dev ## fault injection under load: hubspoke vs a Kea HA pair
	$(PY) -m bench.chaos

MINUTES ?= 30
soak: dev ## the cluster under load for MINUTES (30), a random fault every 30-90 s (SEED=n replays one); not in `test`
	$(PY) -m bench.soak --minutes $(MINUTES) $(if $(SEED),--seed $(SEED)) $(if $(SOAK_OUT),--out $(SOAK_OUT))

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
