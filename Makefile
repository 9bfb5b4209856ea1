# Two commands a new machine needs: `make dev` runs Mailroom locally,
# `make test` runs every check. Each sets up what it needs first.

PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAM_STAMP := $(SAM_VENV)/.installed
SAM_VERSION := 1.170.0
# LocalStack on the host needs Python 3.13 (it imports warnings.deprecated) and
# a venv of its own (its pins clash with ours); pyenv's 3.13 where there is one.
LOCALSTACK_VENV := .venv-localstack
LOCALSTACK_STAMP := $(LOCALSTACK_VENV)/.installed
LOCALSTACK_PYTHON ?= python3.13
LOCALSTACK_PYENV := $(shell pyenv versions --bare 2>/dev/null | grep -E '^3\.1[3-9]' | head -n 1)
# The SQS/SNS part of the integration tests, run against LocalStack too.
LOCALSTACK_TESTS := tests/integration/test_localstack.py tests/integration/test_pipeline.py \
	tests/integration/test_reconciler.py tests/integration/test_sam_local_events.py

.PHONY: dev test lint unit integration e2e openapi bench clean sam-validate sam-build chaos chaos-ci \
	sam-env dev-localstack deploy-local integration-localstack

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

$(LOCALSTACK_STAMP):
	test -x $(LOCALSTACK_VENV)/bin/python || \
		PYENV_VERSION=$(LOCALSTACK_PYENV) $(LOCALSTACK_PYTHON) -m venv $(LOCALSTACK_VENV)
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCALSTACK_VENV)/bin/python -m pip install --quiet -r requirements-localstack.txt
	touch $@

dev: $(STAMP)
	$(PY) -m devstack

# LocalStack (the one answering on AWS_ENDPOINT_URL or :4566, else one started
# on this host), the template's queues and topics deployed to it as a
# CloudFormation stack, the functions in-process against it.
dev-localstack: $(STAMP) $(LOCALSTACK_STAMP)
	PYTHONPATH=shared:. $(PY) -m devstack.localstack

# The whole template, functions included, to a LocalStack that has Docker
# (compose.yml's): samconfig.toml [local], parameters from .local/local-params.
deploy-local: $(SAM_STAMP)
	test -f .local/local-params || { echo "write .local/local-params first (README, Deploying to LocalStack)"; exit 1; }
	AWS_ENDPOINT_URL=$${AWS_ENDPOINT_URL:-http://127.0.0.1:4566} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
		.ci/sam.sh build && AWS_ENDPOINT_URL=$${AWS_ENDPOINT_URL:-http://127.0.0.1:4566} \
		AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test .ci/sam.sh deploy --config-env local \
		--parameter-overrides "$$(cat .local/local-params)"

integration-localstack: $(STAMP) $(LOCALSTACK_STAMP)
	MAILROOM_TEST_AWS=localstack $(PY) -m pytest -q $(LOCALSTACK_TESTS)

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
