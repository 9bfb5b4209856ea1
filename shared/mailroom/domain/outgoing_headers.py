"""Headers beyond the content: the caller's own, list headers, Feedback-ID, the return path.

The caller may set custom ``X-`` headers and a short allowlist of others
(``CALLER_HEADER_ALLOWLIST``). Every header Mailroom writes itself, or that
would let a caller pose as someone else or break the message (From, To,
Return-Path, DKIM-Signature, Content-Type, Received...), is refused with
422 ``header_not_allowed``; a CR or LF anywhere is ``header_injection``.

Bulk mail (``"bulk": true``) carries RFC 2369/8058 one-click unsubscribe:

    List-Unsubscribe: <https://.../u/{token}>, <mailto:u+{token}@bounces.<domain>>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

or the client's own URL instead of ours. Every message sent with a policy
carries ``Feedback-ID: <campaign>:<client>:<bulk|transactional>:mailroom``,
the form Gmail's feedback loop aggregates complaints by.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mailroom.domain.errors import HeaderInjection, HeaderNotAllowed
from mailroom.domain.mime import a_label_domain
from mailroom.domain.model import Message
from mailroom.domain.return_path import (
    SigningKeyring,
    unsubscribe_mailbox,
    unsubscribe_token,
    verp_return_path,
)

MAX_CALLER_HEADERS = 30
MAX_HEADER_VALUE = 900  # under RFC 5322's 998 with the name and folding
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII but ":" (RFC 5322 ftext)
# Headers that are not X- but that a sender legitimately sets itself.
CALLER_HEADER_ALLOWLIST = frozenset(
    name.lower()
    for name in (
        "In-Reply-To",
        "References",
        "List-Id",
        "List-Help",
        "List-Owner",
        "List-Archive",
        "List-Post",
        "List-Subscribe",
        "Precedence",
        "Auto-Submitted",
        "Keywords",
        "Comments",
        "Importance",
        "Priority",
        "Sensitivity",
        "Organization",
        "Language",
        "Content-Language",
    )
)
# X- headers Mailroom reserves for itself.
_RESERVED_PREFIXES = ("x-mailroom-",)
CAMPAIGN_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
TAG_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"


def validate_caller_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The caller's headers, checked: (name, value) pairs in the order given."""
    if len(headers) > MAX_CALLER_HEADERS:
        raise HeaderNotAllowed(f"at most {MAX_CALLER_HEADERS} headers")
    seen: set[str] = set()
    checked: list[tuple[str, str]] = []
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise HeaderInjection(f"header {name.strip()[:40]!r}: line breaks are not allowed")
        if not _HEADER_NAME.match(name):
            raise HeaderNotAllowed(f"{name[:40]!r} is not a header name")
        lower = name.lower()
        if lower in seen:
            raise HeaderNotAllowed(f"{name!r} is given twice (names are case-insensitive)")
        seen.add(lower)
        allowed = (
            lower.startswith("x-") and not lower.startswith(_RESERVED_PREFIXES)
        ) or lower in CALLER_HEADER_ALLOWLIST
        if not allowed:
            raise HeaderNotAllowed(
                f"{name!r} may not be set: only X- headers and "
                + ", ".join(sorted(CALLER_HEADER_ALLOWLIST))
            )
        if len(value) > MAX_HEADER_VALUE or not value.isprintable():
            raise HeaderNotAllowed(
                f"{name!r}: values are printable and at most {MAX_HEADER_VALUE} characters"
            )
        checked.append((name, value))
    return tuple(checked)


# Whether the client's own bounces.<From domain> receives its bounces (the
# worker's services.sending_domains.DomainFacts.receives_for).
ReceivesBounces = Callable[[uuid.UUID, str], bool]


@dataclass(frozen=True, slots=True)
class SenderPolicy:
    """What the worker adds to each message on its way out (from Settings).

    The VERP return path's domain, as a real sending service chooses it (SES's
    custom MAIL FROM, Postmark's custom Return-Path): the sender's own
    ``bounces.<From domain>`` only once that domain is verified for the client
    sending *and* its bounce MX is published, so bounce mail reaches us and
    SPF aligns; otherwise the platform's ``bounce_domain`` (BOUNCE_DOMAIN),
    which always routes to us; with neither, no VERP (the From address stays
    the envelope sender, as before issue 16). A From domain nobody verified
    never gets ``bounces.<it>``: its owner would receive our bounces.
    """

    keyring: SigningKeyring | None
    public_base_url: str
    bounce_domain: str | None = None  # the platform's, for senders without their own
    receives_bounces: ReceivesBounces | None = None

    def bounce_domain_of(self, message: Message, from_domain: str) -> str | None:
        # An internationalised From domain as A-labels: the return path must
        # be ASCII for relays without SMTPUTF8.
        domain = a_label_domain(from_domain)
        if self.receives_bounces is not None and self.receives_bounces(message.client_id, domain):
            return f"bounces.{domain.lower()}"
        return self.bounce_domain

    def return_path(self, message: Message, from_domain: str) -> str | None:
        """The VERP envelope sender; None (the From address stays) without keys or a domain."""
        if self.keyring is None:
            return None
        domain = self.bounce_domain_of(message, from_domain)
        if domain is None or not domain.isascii():
            return None
        return verp_return_path(self.keyring, message.id, domain)

    def headers(self, message: Message, from_domain: str) -> list[tuple[str, str]]:
        options = message.options
        added: list[tuple[str, str]] = list(options.headers)
        if options.bulk:
            unsubscribe = self._list_unsubscribe(message, from_domain)
            if unsubscribe is not None:
                added.append(("List-Unsubscribe", unsubscribe))
                if "<http" in unsubscribe:
                    # RFC 8058: one-click needs an HTTPS URI to post to.
                    added.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        added.append(("Feedback-ID", feedback_id(message)))
        return added

    def _list_unsubscribe(self, message: Message, from_domain: str) -> str | None:
        if message.options.unsubscribe_url:
            return f"<{message.options.unsubscribe_url}>"
        if self.keyring is None:
            return None
        token = unsubscribe_token(self.keyring, message.id)
        links = []
        if self.public_base_url:
            links.append(f"<{self.public_base_url.rstrip('/')}/u/{token}>")
        domain = self.bounce_domain_of(message, from_domain)
        if domain is not None and domain.isascii():
            mailbox = unsubscribe_mailbox(token, domain)
            links.append(f"<mailto:{mailbox}?subject=unsubscribe>")
        return ", ".join(links) or None


def feedback_id(message: Message) -> str:
    """Gmail's Feedback-ID: campaign, customer, mail type, then the sender (us)."""
    # Inline content is named ``inline:<hash>``; a colon would split the field.
    campaign = message.options.campaign or message.template_name.replace(":", "-")
    kind = "bulk" if message.options.bulk else "transactional"
    return f"{campaign}:{message.client_id.hex[:16]}:{kind}:mailroom"
