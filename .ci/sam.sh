#!/usr/bin/env bash
# Run the AWS SAM CLI from the repo's tool venv (.venv-sam, created by the
# Makefile; this script installs nothing), passing every argument through.
#
# `sam build` (without a container) needs a python3.12 on PATH, matching the
# functions' runtime. Under pyenv, `python3.12` is a shim that only resolves when
# a 3.12.x is among the selected versions, so when it does not run we add the
# newest installed 3.12.x after the current selection (python3/python keep
# pointing where they did). When python3.12 already works, nothing is changed.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
sam_bin="$repo_root/.venv-sam/bin/sam"

if [[ ! -x "$sam_bin" ]]; then
    echo "sam.sh: $sam_bin not found; create the SAM tool venv first (see the Makefile)." >&2
    exit 127
fi

if ! python3.12 --version >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
    py312="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12\.[0-9]+$' | sort -V | tail -n 1 || true)"
    if [[ -n "$py312" ]]; then
        # `pyenv version-name` prints the current selection, e.g. "3.11.7" or
        # "3.11.7:3.13.0"; "system" is a valid entry too.
        current="$(pyenv version-name 2>/dev/null || true)"
        export PYENV_VERSION="${current:+$current:}$py312"
        if ! python3.12 --version >/dev/null 2>&1; then
            echo "sam.sh: python3.12 still not runnable with PYENV_VERSION=$PYENV_VERSION" >&2
        fi
    fi
fi

exec "$sam_bin" "$@"
