# Two commands a new machine needs: `make dev` runs Mailroom locally,
# `make test` runs every check. Each sets up what it needs first.

PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAM_STAMP := $(SAM_VENV)/.installed
SAM_VERSION := 1.170.0

.PHONY: dev test lint unit integration e2e openapi bench clean sam-validate sam-build chaos chaos-ci \
	sam-env dev-localstack deploy-local

# pyproject.toml too: it declares the mailroomctl command that `pip install -e .` puts in the venv.
$(STAMP): requirements-dev.txt layers/dependencies/requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -e .
	touch $@

# SAM CLI pins its own boto3, so it lives in a venv of its own (STACK-NOTES).
$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_VERSION)
	touch $@

dev: $(STAMP)
	$(PY) -m devstack

test: $(STAMP) $(SAM_STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(wildcard shared functions devstack mailroomctl hosting tests bench chaos)

unit: $(STAMP)
	$(PY) -m pytest tests/unit

# Runs every bench/*.py and appends its figures to docs/benchmarks.md.
bench: $(STAMP)
	$(PY) bench/run_all.py

# The chaos run (issue 7, docs/architecture.md "Reliability"): its own
# PostgreSQL, Redis and moto; exits 1 on a lost message or an unexplained duplicate.
chaos: $(STAMP)
	PYTHONPATH=shared:. timeout 1200 $(PY) -m chaos.run --profile full

chaos-ci: $(STAMP)
	PYTHONPATH=shared:. timeout 600 $(PY) -m chaos.run --profile ci

openapi: $(STAMP)
	PYTHONPATH=shared $(PY) -m mailroom.entrypoints.openapi_document > docs/openapi.json

sam-validate: $(SAM_STAMP)
	.ci/sam.sh validate --lint

sam-build: $(SAM_STAMP)
	.ci/sam.sh build

# .local/env.json for `sam local invoke --env-vars` and stamped events under
# .local/events/, from the running `make dev` stack (devstack/sam_local.py).
sam-env: $(STAMP)
	PYTHONPATH=shared:. $(PY) -m devstack.sam_local

clean:
	rm -rf .aws-sam .mypy_cache .ruff_cache .pytest_cache
