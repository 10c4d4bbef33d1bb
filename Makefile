# mlgitops: `make up` runs the whole pipeline locally, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Static checkers (actionlint, hadolint, kubernetes-validate, checkov, yamllint, python-hcl2) for
# tests/delivery. A venv of their own: checkov's hcl2 fork would shadow python-hcl2 in .venv.
# tests/delivery also runs two system tools pip cannot install: kubectl (kubectl kustomize) and
# terraform (fmt -check); `make tools` says when one is missing (the tests skip, or fail in CI).
.PHONY: tools
TOOLS_VENV := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed

# MLflow 2.x (requirements-mlflow2.txt) for the tests against the oldest server we support; a venv
# of its own, since .venv pins MLflow 3.
.PHONY: mlflow2
MLFLOW2_VENV := .venv-mlflow2
MLFLOW2_STAMP := $(MLFLOW2_VENV)/.installed

.PHONY: help locale install up test test-unit lint fmt models schema bench bench-cost bench-plan soak lock clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## Create .venv/ and install everything (pinned by constraints.txt)

models: $(STAMP)  ## Build the example ONNX models that models.yaml points at
	$(PY) examples/make_models.py

up: $(STAMP) models  ## The whole pipeline locally: MLflow + reconciler + sidecar + server on :$(PORT)
	$(PY) deploy/local/up.py --port $(PORT)

test: $(STAMP) $(TOOLS_STAMP) $(MLFLOW2_STAMP) models locale  ## The whole test suite (unit, integration, static checks)
	$(PY) -m pytest

# skl2onnx's default text pipelines (StringNormalizer) need en_US.UTF-8, as the server image has.
locale:
	@locale -a 2>/dev/null | grep -qix 'en_US.utf-\?8' || { \
	  echo "installing the en_US.UTF-8 locale (Debian package locales) for the text-model tests"; \
	  command -v apt-get >/dev/null || { echo "no apt-get: install the en_US.UTF-8 locale, then run make test"; exit 1; }; \
	  apt-get update -qq && apt-get install -y -qq locales >/dev/null && localedef -i en_US -f UTF-8 en_US.UTF-8; }

test-unit: $(STAMP)  ## Unit tests only (no processes)
	$(PY) -m pytest -m 'not integration'

lint: $(STAMP)  ## ruff, mypy (strict), import-linter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: $(STAMP)  ## Format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

schema: $(STAMP)  ## Regenerate reconciler/models.schema.json from the pydantic models
	$(PY) -m reconciler schema > reconciler/models.schema.json

bench: $(STAMP)  ## Server vs the Node.js gateway under wrk (keep-alive); writes docs/benchmarks.md
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get update -qq && apt-get install -y -qq wrk; }
	@command -v node >/dev/null || { echo "Node.js 20 and npm are needed for the competitor (bench/node)"; exit 1; }
	cd bench/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
	$(PY) bench/serve_bench.py

bench-cost: $(STAMP)  ## Instructions per /predict under callgrind: repeatable, to compare commits
	@command -v valgrind >/dev/null || { echo "installing valgrind (Debian package)"; apt-get update -qq && apt-get install -y -qq valgrind; }
	$(PY) bench/request_cost.py

bench-plan: $(STAMP)  ## Reconciler plan cost: 200 models x 5 versions against a local MLflow
	$(PY) bench/plan_bench.py

soak: $(STAMP)  ## Steady load with a promotion every few seconds (SOAK_ARGS="--duration 300")
	$(PY) bench/soak.py $(SOAK_ARGS)

lock: $(STAMP)  ## Refresh constraints.txt from the current venv
	{ echo "# Exact versions for reproducible installs (make install uses them as pip constraints)."; \
	  echo "# Refresh: make lock"; $(PY) -m pip freeze --exclude-editable; } > constraints.txt

clean:  ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .run

$(TOOLS_STAMP): requirements-tools.txt requirements-hcl2.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 tools'"; exit 1; }
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet -r requirements-tools.txt
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade --target $(TOOLS_VENV)/hcl2 -r requirements-hcl2.txt
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)  ## Install the static checkers for tests/delivery into .venv-tools/
	@command -v kubectl >/dev/null || echo "kubectl not found: tests/delivery renders deploy/k8s with it (https://kubernetes.io/docs/tasks/tools/)"
	@command -v terraform >/dev/null || echo "terraform not found: tests/delivery runs terraform fmt -check (https://developer.hashicorp.com/terraform/install)"

$(MLFLOW2_STAMP): requirements-mlflow2.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 mlflow2'"; exit 1; }
	test -x $(MLFLOW2_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW2_VENV)
	$(MLFLOW2_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLFLOW2_VENV)/bin/python -m pip install --quiet -r requirements-mlflow2.txt
	touch $(MLFLOW2_STAMP)

mlflow2: $(MLFLOW2_STAMP)  ## Install MLflow 2.x into .venv-mlflow2/ for the tests against an MLflow 2 server
