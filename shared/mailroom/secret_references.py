"""Secrets given as references: ``secretsmanager:NAME`` or ``ssm:NAME`` instead of the value.

A deployed stack passes a reference in the same parameter that takes the plain
value locally (template.yaml, "Deployable"), so the secret never sits in the
Lambda configuration. It is read once per cold start through Powertools'
parameters utility, which caches it (POWERTOOLS_PARAMETERS_MAX_AGE, 5 s by
default, is the cache's age limit; the settings object itself lives as long
as the container). Plain values are returned unchanged and import nothing, so
a local run or a stack without references pays no boto3 import at cold start.
"""

from __future__ import annotations

SECRETS_MANAGER_PREFIX = "secretsmanager:"
PARAMETER_STORE_PREFIX = "ssm:"


class SecretReferenceError(Exception):
    """A referenced secret cannot be read; the message names it, never its value."""


def is_reference(value: str) -> bool:
    return value.startswith((SECRETS_MANAGER_PREFIX, PARAMETER_STORE_PREFIX))


def resolve(value: str) -> str:
    """The secret ``value`` refers to, or ``value`` itself when it is no reference."""
    if value.startswith(SECRETS_MANAGER_PREFIX):
        name = value.removeprefix(SECRETS_MANAGER_PREFIX)
        return _fetch("secretsmanager", name)
    if value.startswith(PARAMETER_STORE_PREFIX):
        name = value.removeprefix(PARAMETER_STORE_PREFIX)
        return _fetch("ssm", name)
    return value


def _fetch(store: str, name: str) -> str:
    # Imported only when a reference is configured (see the module docstring).
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    if not name:
        raise SecretReferenceError(f"{store}: reference without a name")
    try:
        fetched = (
            parameters.get_secret(name)
            if store == "secretsmanager"
            else parameters.get_parameter(name, decrypt=True)
        )
    except GetParameterError as error:
        raise SecretReferenceError(f"cannot read {store} {name!r}: {error}") from error
    if isinstance(fetched, bytes):
        return fetched.decode("utf-8")
    if not isinstance(fetched, str):
        raise SecretReferenceError(f"{store} {name!r} does not hold a string")
    return fetched
