"""One typed settings object, read from the environment once per cold start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything Mailroom reads from its environment.

    boto3 is deliberately not configured here: every client honours
    ``AWS_ENDPOINT_URL`` by itself, so that one variable decides whether we talk
    to AWS, LocalStack or moto.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    database_url: str = "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom"
    # A Lambda container serves one request at a time, so one pooled connection
    # is enough there; the threaded local runner raises it.
    db_pool_size: int = Field(default=1, ge=1)
    db_max_overflow: int = Field(default=2, ge=0)
    redis_url: str = "redis://127.0.0.1:6379/0"

    aws_region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    queue_url: str = ""

    templates_dir: Path = Path("templates")

    default_from: str = "Mailroom <noreply@example.com>"
    # Bodies beyond this are refused with 413 before they are parsed.
    max_request_bytes: int = Field(default=256 * 1024, ge=1024)
    max_recipients: int = Field(default=50, ge=1)
    # Total sends tried for one message before it ends `failed`; the queue's
    # maxReceiveCount in template.yaml is set above it.
    max_send_attempts: int = Field(default=5, ge=1)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)

    # argon2id parameters for API secrets. The defaults are OWASP's minimum
    # (19 MiB, 2 passes, 1 lane); the validators refuse anything weaker.
    argon2_time_cost: int = Field(default=2, ge=2)
    argon2_memory_cost_kib: int = Field(default=19 * 1024, ge=19 * 1024)
    argon2_parallelism: int = Field(default=1, ge=1)

    # SHA-256 (hex) of the operators' bearer token for /admin routes. Only the
    # hash is configured: the token is 32+ random bytes, so a fast hash is
    # enough (nothing to brute-force) and the plain token never sits in Lambda
    # configuration. Unset means every admin route answers 401.
    admin_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import time)."""
    return Settings()
