"""The demo API client the runner creates, and the file that remembers its credentials."""

from __future__ import annotations

import base64
import json
import secrets
import shlex
from dataclasses import MISSING, asdict, dataclass, replace
from pathlib import Path
from typing import Any

from devstack.atomic_file import write_atomically
from mailroom.bootstrap import Services
from mailroom.domain.errors import ClientNameTaken, DomainTaken, MailroomError
from mailroom.domain.sealed_secrets import SecretKeyring
from mailroom.domain.sending_domains import from_domain
from mailroom.domain.tenancy import SYSTEM_ACTOR
from mailroom.services import sending_domains
from mailroom.services.clients import authenticate, register_client

DEMO_CLIENT_NAME = "demo"
DEMO_TEMPLATE = "welcome"
DEMO_RECIPIENT = "ada@example.com"
ADMIN_TOKEN_BYTES = 32  # token_urlsafe(32) is 43 characters; the template wants 32 or more
SIGNING_KEY_CHARACTERS = 32  # TEMPLATE_CODE_SIGNING_KEY's minimum


@dataclass(frozen=True, slots=True)
class DevCredentials:
    api_url: str
    api_key: str
    api_secret: str
    admin_token: str
    # host:port of the SMTP listener that plays SES receiving (issue 16).
    inbound_smtp: str = ""

    @classmethod
    def read(cls, path: Path) -> DevCredentials | None:
        """The saved credentials, or None when the file is missing or unreadable."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            # A file written before a field existed still names the same client.
            return cls(
                **{
                    name: str(data[name]) if name in data else str(field.default)
                    for name, field in cls.__dataclass_fields__.items()
                    if name in data or field.default is not MISSING
                }
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self), indent=2) + "\n"
        # It holds a secret: readable by its owner only.
        write_atomically(path, text.encode("utf-8"), mode=0o600)


def admin_token(saved: DevCredentials | None) -> str:
    """The saved admin token, so it stays the same across restarts; a new one otherwise."""
    if saved is not None and len(saved.admin_token) >= ADMIN_TOKEN_BYTES:
        return saved.admin_token
    return secrets.token_urlsafe(ADMIN_TOKEN_BYTES)


def template_code_signing_key(path: Path) -> str:
    """The key in ``path``, so instances started later share compiled code; a new one otherwise.

    Kept beside the other local credentials, readable by its owner only.
    """
    try:
        saved = path.read_text(encoding="utf-8").strip()
    except OSError:
        saved = ""
    if len(saved) >= SIGNING_KEY_CHARACTERS:
        return saved
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (key + "\n").encode("utf-8"), mode=0o600)
    return key


def secrets_encryption_keys(path: Path) -> str:
    """The keyring in ``path``, so sealed secrets stay readable across restarts; else a new one."""
    try:
        saved = path.read_text(encoding="utf-8").strip()
    except OSError:
        saved = ""
    if saved:
        return saved
    setting = SecretKeyring.generate_setting()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (setting + "\n").encode("utf-8"), mode=0o600)
    return setting


def bounce_signing_keys(path: Path) -> str:
    """The VERP/unsubscribe HMAC keys in ``path``, so old links keep verifying; else new ones."""
    try:
        saved = path.read_text(encoding="utf-8").strip()
    except OSError:
        saved = ""
    if saved:
        return saved
    setting = "k1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (setting + "\n").encode("utf-8"), mode=0o600)
    return setting


def demo_credentials(
    services: Services,
    saved: DevCredentials | None,
    *,
    api_url: str,
    token: str,
    inbound_smtp: str = "",
) -> tuple[DevCredentials, bool]:
    """Credentials that work against this database, and whether a client was created for them."""
    if saved is not None and _still_valid(services, saved):
        return replace(saved, api_url=api_url, admin_token=token, inbound_smtp=inbound_smtp), False
    try:
        registered = register_client(services.uow(), services.hasher, name=DEMO_CLIENT_NAME)
    except ClientNameTaken:
        # An earlier demo client whose credentials are lost or no longer work:
        # names are unique, so this one gets a suffix.
        registered = register_client(
            services.uow(), services.hasher, name=f"{DEMO_CLIENT_NAME}-{secrets.token_hex(4)}"
        )
    credentials = DevCredentials(
        api_url=api_url,
        api_key=registered.api_key,
        api_secret=registered.api_secret,
        admin_token=token,
        inbound_smtp=inbound_smtp,
    )
    return credentials, True


def verify_demo_domain(services: Services, credentials: DevCredentials) -> str | None:
    """The DEFAULT_FROM domain, registered for the demo client and marked verified.

    Issue 16: sends must come from a verified domain, and the demo's
    example.com has no DNS to check, so the local runner vouches for it. It
    gets a DKIM key like any domain, so the mail in the outbox is signed.
    None when another client owns the domain already.
    """
    name = from_domain(services.settings.default_from)
    if name is None:
        return None
    client = authenticate(
        services.uow(), services.hasher, credentials.api_key, credentials.api_secret
    )
    # Our own key even when SES is in the order: the local runner signs itself.
    policy = replace(services.domain_policy, ses=None)
    try:
        domain = sending_domains.register_domain(
            services.uow(), policy, client.id, name, actor=SYSTEM_ACTOR
        )
    except DomainTaken:
        with services.uow() as uow:
            existing = uow.sending_domains.by_name(name)
        if existing is None or existing.client_id != client.id:
            return None
        domain = existing
    sending_domains.mark_verified_locally(services.uow(), domain.id, actor=SYSTEM_ACTOR)
    return name


def _still_valid(services: Services, saved: DevCredentials) -> bool:
    # The database may have been dropped or the client suspended since the
    # file was written: both call for a new client.
    try:
        authenticate(services.uow(), services.hasher, saved.api_key, saved.api_secret)
    except MailroomError:
        return False
    return True


def try_it_commands(credentials: DevCredentials, sample_props: dict[str, Any]) -> list[str]:
    """Ready-to-paste curl lines: send the demo template, then ask what became of it."""
    auth = (
        f"-H {shlex.quote('X-Api-Key: ' + credentials.api_key)} "
        f"-H {shlex.quote('X-Api-Secret: ' + credentials.api_secret)}"
    )
    body = json.dumps(
        {"template": DEMO_TEMPLATE, "to": DEMO_RECIPIENT, "props": sample_props},
        separators=(",", ":"),
    )
    return [
        f"curl -sS -X POST {credentials.api_url}/v1/send "
        f"-H 'Content-Type: application/json' {auth} -d {shlex.quote(body)}",
        f"curl -sS {credentials.api_url}/v1/messages/<id> {auth}",
    ]
