"""Secrets given as Secrets Manager / Parameter Store references (issue 22, "Deployable")."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from mailroom.config import Settings
from mailroom.secret_references import SecretReferenceError

TOKEN_HASH = "a" * 64


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


def test_a_secrets_manager_reference_is_read_in_place_of_the_value(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the database URL in Secrets Manager and only its name in the environment
    url = "postgresql+pg8000://mailroom:s3cret@db.internal:5432/mailroom"
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name="mailroom-prod/database-url", SecretString=url)
    monkeypatch.setenv("DATABASE_URL", "secretsmanager:mailroom-prod/database-url")
    # WHEN the settings are read
    settings = Settings()
    # THEN the setting holds the secret, not the reference
    assert settings.database_url == url


def test_a_parameter_store_reference_is_read_decrypted(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the admin token hash as a SecureString parameter
    boto3.client("ssm").put_parameter(
        Name="/mailroom-prod/admin-token-sha256", Value=TOKEN_HASH, Type="SecureString"
    )
    monkeypatch.setenv("ADMIN_TOKEN_SHA256", "ssm:/mailroom-prod/admin-token-sha256")
    # WHEN the settings are read
    settings = Settings()
    # THEN the decrypted value passes the setting's own validation
    assert settings.admin_token_sha256 == TOKEN_HASH


def test_plain_values_stay_plain_and_other_settings_are_never_resolved(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a plain secret, and a non-secret setting that merely looks like a reference
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("DEFAULT_FROM", "ssm:not-a-reference")
    # WHEN the settings are read
    settings = Settings()
    # THEN both are taken as written
    assert settings.redis_url == "redis://127.0.0.1:6379/3"
    assert settings.default_from == "ssm:not-a-reference"


def test_a_missing_secret_is_named_in_the_error(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a reference to a secret that does not exist
    monkeypatch.setenv("SMTP_PASSWORD", "secretsmanager:mailroom-prod/nothing-here")
    # WHEN the settings are read THEN the error names the reference
    with pytest.raises(SecretReferenceError, match="mailroom-prod/nothing-here"):
        Settings()
