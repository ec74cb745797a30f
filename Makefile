# Agent OS — see README.md. Every target installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: help bootstrap run up services services-down services-status lint format test \
        test-unit test-integration bench bench-outbox bench-lifecycle bench-api bench-scale bench-operator bench-runs bench-gateway k8s-tools proto-containerd \
        proto-api crds chart-files kustomize chart-test image console clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

bootstrap: ## Install uv and the Python environment (.venv) from uv.lock
	@command -v uv >/dev/null 2>&1 || [ -x "$(UV)" ] || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet --python python3

# The web console's bundle is committed (adr/0018-console.md): rebuild it after changing
# console/src; tests/e2e/test_console.py checks that the committed one is this build's output.
console: ## Build the web console (console/: npm ci + esbuild) into controlplane/api/console/static
	cd console && npm ci --no-audit --no-fund --silent && npm run --silent build

run: bootstrap ## Agent OS on embedded defaults (SQLite, embedded NATS) + the example agents and their runs, at :8080
	UV=$(UV) hack/run.sh

up: bootstrap services ## The full local stack: real services, Prometheus + Agent OS on PostgreSQL and NATS
	@set -a; . .services/env; set +a; \
	  echo "Prometheus (rules of deploy/prometheus loaded, scraping serve on :$${AGENTOS_PORT:-8080}): $$AGENTOS_PROMETHEUS_URL"
	set -a; . .services/env; set +a; AGENTOS_GATEWAY_HOST=127.0.0.1,10.89.0.1 \
	  AGENTOS_GATEWAY_URL=http://10.89.0.1:8091 $(UV) run --frozen agentos serve

services: ## Install (when missing) and start the real services; settings in .services/env
	hack/services.sh up

services-down: ## Stop the services started by `make services`
	hack/services.sh down

services-status:
	hack/services.sh status

image: ## The control-plane image, by buildah (no Docker engine), as an OCI archive; into containerd when services run
	@if [ -s .services/env ]; then \
	  set -a; . .services/env; set +a; hack/build-image.sh --import; \
	else hack/build-image.sh; fi

k8s-tools: ## Build kube-apiserver, kubectl, kwok and helm from their Go modules (cached)
	hack/build-k8s-tools.sh

lint: bootstrap ## ruff (lint + format check), mypy --strict (control plane, operator, SDK), the import contracts
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy controlplane operators sdk/python/agentos_sdk
	$(UV) run --frozen lint-imports

format: bootstrap
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

test: bootstrap services lint ## Install, start the real services, lint, run the whole suite
	set -a; . .services/env; set +a; $(UV) run --frozen pytest -v -ra $(PYTEST_ARGS)

test-unit: bootstrap
	$(UV) run --frozen pytest -ra tests/unit $(PYTEST_ARGS)

test-integration: bootstrap services
	set -a; . .services/env; set +a; $(UV) run --frozen pytest -ra tests/integration tests/e2e $(PYTEST_ARGS)

bench: bench-outbox bench-lifecycle bench-api bench-scale bench-operator bench-runs bench-gateway ## Every benchmark (one JSON line per figure)

bench-outbox: bootstrap services ## Relay vs raw JetStream publish; commit-to-published latency
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.outbox

bench-lifecycle: bootstrap services ## Create→Ready vs ctr (runc, gVisor), 200 runc agents, simulated 10k, warm-pool claim→Ready vs cold
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.lifecycle --with-simulated
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.warm_pool
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.suspend

bench-operator: bootstrap services ## 1,000 Agents via the operator on 100 KWOK nodes vs via REST
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.operator

bench-gateway: bootstrap services ## Model proxy overhead at 200 requests/s: the test-double upstream direct vs through the gateway
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.gateway

bench-api: bootstrap services ## REST GET and create saturation vs a bare FastAPI PK SELECT (X); GET p95 at 0.5 X
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.api

bench-scale: bootstrap services ## list, get, watch-from-now, relay queries at 1k vs 100k agents (1M outbox rows)
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.scale

bench-runs: bootstrap services ## Runs: create→handler latency vs raw JetStream, 50 agents' runs/s, kill -9 recovery
	set -a; . .services/env; set +a; $(UV) run --frozen python -m bench.runs

proto-containerd: bootstrap ## Regenerate controlplane/runtimes/containerd/api stubs from its proto/
	$(UV) run --frozen python controlplane/runtimes/containerd/api/proto/generate.py

crds: bootstrap ## Regenerate deploy/crds/ from the Agent model (controlplane/domain/agents/crd.py)
	PYTHONPATH=. $(UV) run --frozen python hack/gen-crd.py
	$(MAKE) --no-print-directory chart-files

# The chart must hold its own copies (Helm reads nothing outside the chart directory);
# tests/integration/test_helm_chart.py fails when they differ from deploy/.
chart-files: ## Copy the CRD, Prometheus rules and Grafana dashboards of deploy/ into charts/agentos
	cp deploy/crds/agents.agentos.io.yaml charts/agentos/crds/
	rm -f charts/agentos/files/prometheus/*.rules.yml charts/agentos/files/grafana/*.json
	cp deploy/prometheus/rules/*.rules.yml charts/agentos/files/prometheus/
	cp deploy/grafana/*.json charts/agentos/files/grafana/

kustomize: bootstrap chart-files ## Regenerate deploy/kustomize/base from charts/agentos (helm template)
	AGENTOS_HELM=$$(hack/build-k8s-tools.sh)/helm $(UV) run --frozen python hack/gen-kustomize.py

chart-test: bootstrap services ## Only the chart's tests: helm lint, template, server-side dry-run, kustomize, README
	set -a; . .services/env; set +a; $(UV) run --frozen pytest -ra tests/integration/test_helm_chart.py $(PYTEST_ARGS)

proto-api: bootstrap ## Regenerate controlplane/api/grpc/gen from proto/agentos/ (the gRPC API)
	$(UV) run --frozen python proto/generate.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
