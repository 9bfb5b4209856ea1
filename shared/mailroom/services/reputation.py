"""Reputation and automatic protection (issue 21 item 5), judged from the analytics rollups.

``evaluate`` runs after each roll-up: it measures every client's (and each
sending domain's) window (domain/reputation.py), stores the state, and acts
on the client-wide one: THROTTLE lowers the rate the worker claims the
client's mail at (services/queues.py reads the stored state), PAUSE also
writes ``clients.sending_paused_*`` so the send routes answer 403
``sending_paused``. Every change is an audit entry (actor ``reputation``) and
a ``reputation_changes`` metric; a pause is what the CloudWatch alarm watches.
The send path never queries any of it: the pause rides on the client row the
authenticator already caches, and a change bumps the client's credential
versions so every instance drops its cached copy (as an admin change does).

Test mode traffic is never judged: the rollups keep it apart (``is_test``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailroom.adapters.db.analytics import StoredReputation
from mailroom.adapters.db.unit_of_work import UnitOfWork
from mailroom.adapters.metrics.base import Metrics
from mailroom.adapters.tenancy import CredentialVersions
from mailroom.domain.errors import ClientNotFound, SendingPaused
from mailroom.domain.model import Client
from mailroom.domain.reputation import (
    MIN_SENDS,
    THRESHOLDS,
    THROTTLE_PER_MINUTE,
    WINDOW_MAX,
    WINDOW_SENDS,
    ReputationState,
    Window,
    judged,
    next_state,
    outlook,
    reason,
    score,
    window,
)
from mailroom.domain.tenancy import Actor

REPUTATION_ACTOR = Actor("reputation")
# How the send routes document the refusal.
SENDING_PAUSED = (
    "client_suspended; insufficient_scope; ip_not_allowed; "
    "sending_paused: reputation paused this client's live sending (its bounce or "
    "complaint rate); error.details says when and why; an operator lifts it"
)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Change:
    client_id: uuid.UUID
    sending_domain: str
    before: ReputationState
    after: ReputationState
    reason: str


def refuse_if_paused(client: Client, *, live: bool) -> None:
    """403 sending_paused for a paused client's live sends; test mode still works.

    ``client`` is the authenticated caller's (cached): no query here.
    """
    if live and client.sending_paused_at is not None:
        raise SendingPaused(
            f"sending is paused: {client.sending_paused_reason or 'by an operator'}; "
            "an operator lifts it (POST /admin/clients/{id}/reputation/lift)",
            details=[
                {
                    "paused_at": client.sending_paused_at.isoformat(),
                    "reason": client.sending_paused_reason,
                }
            ],
        )


def evaluate(
    uow: UnitOfWork,
    versions: CredentialVersions,
    metrics: Metrics,
    *,
    now: datetime,
    client_ids: list[uuid.UUID] | None = None,
    announce: Callable[[CredentialVersions, Client, list[str]], None] | None = None,
) -> list[Change]:
    """Judge every client with traffic in the last WINDOW_MAX (or those named); act on changes."""
    changes: list[Change] = []
    paused: list[tuple[Client, list[str]]] = []
    with uow:
        stored = {(r.client_id, r.sending_domain): r for r in uow.analytics.reputations()}
        hours = uow.analytics.reputation_hours(now - WINDOW_MAX, client_ids)
        keys = set(hours) | {k for k in stored if client_ids is None or k[0] in client_ids}
        for key in sorted(keys, key=lambda k: (str(k[0]), k[1])):
            client_id, domain = key
            previous = stored.get(key)
            floor = previous.lifted_at if previous else None
            counted = [h for h in hours.get(key, []) if floor is None or h.hour >= _hour(floor)]
            measured = window(counted, now=now)
            before = previous.state if previous else ReputationState.OK
            after = next_state(before, measured) if domain == "" else _domain_state(measured)
            changed = after is not before
            uow.analytics.save_reputation(
                StoredReputation(
                    client_id=client_id,
                    sending_domain=domain,
                    state=after,
                    window=measured,
                    evaluated_at=now,
                    changed_at=now if changed or previous is None else previous.changed_at,
                    lifted_at=floor,
                )
            )
            if not changed:
                continue
            why = reason(after, measured)
            changes.append(Change(client_id, domain, before, after, why))
            uow.audit.append(
                REPUTATION_ACTOR.entry(
                    f"reputation.{after.value}",
                    ("client", str(client_id)),
                    {"state": before.value, "sending_domain": domain},
                    {"state": after.value, "sending_domain": domain, "reason": why},
                )
            )
            if domain == "" and after is ReputationState.PAUSE:
                uow.analytics.set_paused(client_id, now, why)
                client = uow.clients.get(client_id)
                if client is not None:
                    paused.append((client, uow.api_keys.active_ids(client_id)))
        uow.commit()
    for change in changes:
        if change.sending_domain == "":
            metrics.reputation_changed(change.after.value)
        log.warning(
            "reputation changed",
            extra={
                "client_id": str(change.client_id),
                "sending_domain": change.sending_domain,
                "from": change.before.value,
                "to": change.after.value,
                "reason": change.reason,
            },
        )
    # After the commit (services/clients.py's argument): cached callers see the pause.
    for client, key_ids in paused:
        (announce or _announce)(versions, client, key_ids)
    return changes


def _announce(versions: CredentialVersions, client: Client, key_ids: list[str]) -> None:
    from mailroom.services.clients import announce_change

    announce_change(versions, client, key_ids)


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _domain_state(measured: Window) -> ReputationState:
    # A sending domain is judged and shown, never paused on its own: the
    # client-wide state acts (its traffic includes the domain's).
    return judged(measured)


def lift(
    uow: UnitOfWork,
    versions: CredentialVersions,
    client_id: uuid.UUID,
    *,
    actor: Actor,
    now: datetime,
) -> Client:
    """An operator lifts a pause (or throttle): the window restarts now."""
    with uow:
        client = uow.clients.get_for_update(client_id)
        if client is None:
            raise ClientNotFound(f"no client with id {client_id}")
        previous = {r.sending_domain: r for r in uow.analytics.reputations(client_id)}.get("")
        before = previous.state if previous else ReputationState.OK
        uow.analytics.set_paused(client_id, None, None)
        uow.analytics.save_reputation(
            StoredReputation(
                client_id=client_id,
                sending_domain="",
                state=ReputationState.OK,
                window=Window(None, 0, 0, 0),
                evaluated_at=now,
                changed_at=now,
                lifted_at=now,
            )
        )
        uow.audit.append(
            actor.entry(
                "reputation.lift",
                ("client", str(client_id)),
                {"state": before.value, "paused_reason": client.sending_paused_reason},
                {"state": ReputationState.OK.value},
            )
        )
        key_ids = uow.api_keys.active_ids(client_id)
        uow.commit()
        lifted = uow.clients.get(client_id) or client
    _announce(versions, lifted, key_ids)
    return lifted


def _window_view(measured: Window) -> dict[str, Any]:
    return {
        "sent": measured.sent,
        "hard_bounces": measured.hard_bounces,
        "complaints": measured.complaints,
        "bounce_rate": None if measured.bounce_rate is None else round(measured.bounce_rate, 6),
        "complaint_rate": None
        if measured.complaint_rate is None
        else round(measured.complaint_rate, 6),
        "since": measured.start.isoformat() if measured.start else None,
    }


def _state_view(stored: StoredReputation | None, paused: Client | None) -> dict[str, Any]:
    state = stored.state if stored else ReputationState.OK
    measured = stored.window if stored else Window(None, 0, 0, 0)
    coming = outlook(state, measured)
    view: dict[str, Any] = {
        "state": state.value,
        "score": score(measured),
        "window": _window_view(measured),
        "evaluated_at": stored.evaluated_at.isoformat() if stored else None,
        "changed_at": stored.changed_at.isoformat() if stored else None,
        "next": {
            "state": coming.next_state.value if coming.next_state else None,
            "at_bounce_rate": coming.bounce_rate_at,
            "at_complaint_rate": coming.complaint_rate_at,
            "sends_before_judged": coming.sends_until_judged,
            "note": _next_note(state, coming.sends_until_judged),
        },
    }
    if paused is not None:
        view["paused"] = {
            "at": paused.sending_paused_at.isoformat() if paused.sending_paused_at else None,
            "reason": paused.sending_paused_reason,
        }
    return view


def _next_note(state: ReputationState, wait: int) -> str:
    if wait > 0:
        return f"nothing is decided until {wait} more sends are in the window"
    if state is ReputationState.PAUSE:
        return "paused until an operator lifts it"
    if state is ReputationState.THROTTLE:
        return (
            f"mail is claimed at {THROTTLE_PER_MINUTE}/min; the throttle lifts by itself "
            "once both rates are back under the throttle line"
        )
    return "the next state is reached when either rate reaches its line"


def policy() -> dict[str, Any]:
    return {
        "window_sends": WINDOW_SENDS,
        "window_max_days": WINDOW_MAX.days,
        "min_sends": MIN_SENDS,
        "throttle_per_minute": THROTTLE_PER_MINUTE,
        "thresholds": [
            {
                "state": t.state.value,
                "bounce_rate": t.bounce_rate,
                "complaint_rate": t.complaint_rate,
            }
            for t in reversed(THRESHOLDS)
        ],
        "bounce_rate_counts": "hard bounces over sends (as SES computes it); test mode excluded",
    }


def view(uow: UnitOfWork, client_id: uuid.UUID) -> dict[str, Any]:
    """GET /v1/analytics/reputation: the client's state, score and rates, and each domain's."""
    with uow:
        client = uow.clients.get(client_id)
        if client is None:
            raise ClientNotFound(f"no client with id {client_id}")
        stored = uow.analytics.reputations(client_id)
    overall = next((s for s in stored if s.sending_domain == ""), None)
    paused = client if client.sending_paused_at is not None else None
    return {
        "client_id": str(client_id),
        **_state_view(overall, paused),
        "sending_domains": [
            {"sending_domain": s.sending_domain, **_state_view(s, None)}
            for s in stored
            if s.sending_domain != ""
        ],
        "policy": policy(),
    }


def overview(uow: UnitOfWork) -> list[dict[str, Any]]:
    """The operator's list: every client with a stored client-wide reputation, worst first."""
    with uow:
        stored = [s for s in uow.analytics.reputations() if s.sending_domain == ""]
        clients = {c.id: c for c in uow.clients.list()}
    order = {ReputationState.PAUSE: 0, ReputationState.THROTTLE: 1, ReputationState.WARN: 2}
    stored.sort(key=lambda s: (order.get(s.state, 3), str(s.client_id)))
    views = []
    for s in stored:
        client = clients.get(s.client_id)
        paused = client if client is not None and client.sending_paused_at else None
        views.append(
            {
                "client_id": str(s.client_id),
                "name": client.name if client else None,
                **_state_view(s, paused),
            }
        )
    return views
