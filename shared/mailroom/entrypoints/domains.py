"""Sending-domain routes (issue 16): a client's own (/v1, scope admin) and operators' (/admin)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from pydantic import BaseModel, ConfigDict, Field

from mailroom.bootstrap import Services
from mailroom.domain.errors import DomainNotFound
from mailroom.domain.sending_domains import SendingDomain, records_for
from mailroom.domain.tenancy import Actor, Scope
from mailroom.entrypoints.client_gate import source_ip_of
from mailroom.entrypoints.observability import logger
from mailroom.entrypoints.openapi_contract import answers, client_key
from mailroom.services import clients
from mailroom.services import sending_domains as domains

ServicesProvider = Callable[[], Services]
DOMAIN_ID = Path(max_length=64, description="The domain's id (a UUID).")
TAGS = ["sending domains"]
ADMIN_TAGS = ["admin: sending domains"]


class CreateDomainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str = Field(
        min_length=1,
        max_length=300,
        description="A domain name (internationalised names are stored as IDNA A-labels).",
    )


class RecordView(BaseModel):
    type: str = Field(description="TXT, MX or CNAME")
    name: str
    value: str
    purpose: str = Field(description="dkim, ses_dkim, spf, return_path or dmarc")
    required: bool = Field(description="Needed for the domain to be verified")
    priority: int | None = Field(default=None, description="MX only")


class SelectorView(BaseModel):
    selector: str
    algorithm: str
    state: str = Field(description="active (signs), next, previous (published until retired)")


class DomainView(BaseModel):
    id: uuid.UUID
    domain: str
    status: str = Field(description="pending, verified or failing")
    records: list[RecordView] = Field(description="What to publish in DNS")
    dkim_selectors: list[SelectorView]
    checks: list[dict[str, Any]] = Field(description="What the last check found, per record")
    last_checked_at: datetime | None
    verified_at: datetime | None
    created_at: datetime | None
    tracking_host: str | None = Field(
        default=None,
        description="Issue 21: the client's own host for tracked links, under this domain.",
    )
    tracking_host_ready: bool = Field(
        default=False,
        description="Its CNAME was found at the last check: tracked links use it now.",
    )


class TrackingHostRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        min_length=1,
        max_length=253,
        description="A name under the domain, e.g. links.example.com, whose CNAME points at "
        "the tracking endpoint (the record to publish is in the answer's records).",
    )


class VerificationView(DomainView):
    retry_later: bool = Field(
        description="A DNS lookup timed out: the status was left as it was; verify again later."
    )


class DomainList(BaseModel):
    domains: list[DomainView]


def domain_view(services: Services, domain: SendingDomain) -> DomainView:
    plan = services.domain_policy.plan
    return DomainView(
        id=domain.id,
        domain=domain.domain,
        status=domain.status.value,
        records=[
            RecordView(
                type=record.type,
                name=record.name,
                value=record.value,
                purpose=record.purpose.value,
                required=record.required,
                priority=record.priority,
            )
            for record in records_for(domain, plan)
        ],
        dkim_selectors=[
            SelectorView(selector=k.selector, algorithm=k.algorithm.value, state=k.state.value)
            for k in domain.keys
        ],
        checks=domain.checks,
        last_checked_at=domain.last_checked_at,
        verified_at=domain.verified_at,
        created_at=domain.created_at,
        tracking_host=domain.tracking_host,
        tracking_host_ready=domain.tracking_ready,
    )


def _json(view: BaseModel, status_code: int) -> Response[str]:
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body=view.model_dump_json(),
    )


def parse_domain_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise DomainNotFound(f"no domain with id {raw!r}") from None


_NOT_FOUND = {404: "domain_not_found: no such domain for this client"}
_DELETE_ERRORS = {
    **_NOT_FOUND,
    503: "dependency_unavailable: SES did not delete the identity; the domain is kept, retry",
}
_CREATE_ERRORS = {
    409: "domain_taken: registered already, by this client or another",
    422: "validation_error, invalid_domain (not a domain name)",
    503: "secrets_not_configured: SECRETS_ENCRYPTION_KEYS is unset (DKIM keys are sealed)",
}
_VERIFY_DESCRIPTION = (
    "Looks every record up in DNS and stores what it found. Verified when the DKIM "
    "(or SES DKIM) and SPF records are found; return path and DMARC are reported "
    "only. A DNS timeout leaves the status as it was (retry_later: true). A next "
    "DKIM key found in DNS becomes the signing key."
)


class _Operations:
    """The operations both route sets share; ``client_id`` None means any client's."""

    def __init__(self, services: Services, actor: Actor) -> None:
        self.services = services
        self.actor = actor

    def create(self, client_id: uuid.UUID, request: CreateDomainRequest) -> Response[str]:
        active = self.services
        domain = domains.register_domain(
            active.uow(), active.domain_policy, client_id, request.domain, actor=self.actor
        )
        logger.info("sending domain registered", extra={"domain_id": str(domain.id)})
        return _json(domain_view(active, domain), 201)

    def list(self, client_id: uuid.UUID) -> DomainList:
        found = domains.list_domains(self.services.uow(), client_id)
        return DomainList(domains=[domain_view(self.services, d) for d in found])

    def get(self, client_id: uuid.UUID | None, raw_id: str) -> DomainView:
        domain = domains.get_domain(self.services.uow(), client_id, parse_domain_id(raw_id))
        return domain_view(self.services, domain)

    def delete(self, client_id: uuid.UUID | None, raw_id: str) -> DomainView:
        active = self.services
        domain = domains.delete_domain(
            active.uow(),
            client_id,
            parse_domain_id(raw_id),
            actor=self.actor,
            ses=active.domain_policy.ses,
        )
        logger.info("sending domain deleted", extra={"domain_id": str(domain.id)})
        return domain_view(self.services, domain)

    def verify(self, client_id: uuid.UUID | None, raw_id: str) -> VerificationView:
        active = self.services
        outcome = domains.verify_domain(
            active.uow(),
            active.dns,
            active.domain_policy.plan,
            client_id,
            parse_domain_id(raw_id),
            actor=self.actor,
        )
        view = domain_view(active, outcome.domain)
        return VerificationView(**view.model_dump(), retry_later=outcome.retry_later)

    def rotate(self, client_id: uuid.UUID | None, raw_id: str) -> DomainView:
        active = self.services
        domain = domains.rotate_dkim(
            active.uow(), active.domain_policy, client_id, parse_domain_id(raw_id), actor=self.actor
        )
        return domain_view(active, domain)

    def set_tracking_host(
        self, client_id: uuid.UUID | None, raw_id: str, host: str | None
    ) -> DomainView:
        domain = domains.set_tracking_host(
            self.services.uow(), client_id, parse_domain_id(raw_id), host, actor=self.actor
        )
        return domain_view(self.services, domain)

    def retire(self, client_id: uuid.UUID | None, raw_id: str) -> DomainView:
        domain = domains.retire_previous_keys(
            self.services.uow(), client_id, parse_domain_id(raw_id), actor=self.actor
        )
        return domain_view(self.services, domain)


def domain_routes(services: ServicesProvider) -> Router:
    """``/v1/domains``: a client's own sending domains, with a key that holds scope ``admin``."""
    from mailroom.entrypoints.api import caller_of

    router = Router()

    def me() -> tuple[_Operations, uuid.UUID]:
        active = services()
        caller = caller_of(router, active, Scope.ADMIN)
        source_ip = source_ip_of(router.current_event.raw_event)
        actor = Actor(f"key:{caller.key_id}", source_ip)
        return _Operations(active, actor), caller.client.id

    security = client_key(Scope.ADMIN)

    @router.post(
        "/v1/domains",
        status_code=201,
        summary="Register a sending domain",
        description="Answers the DNS records to publish; then verify it.",
        responses=answers(201, "Registered, pending", DomainView, errors=_CREATE_ERRORS),
        tags=TAGS,
        security=security,
    )
    def create(request: Annotated[CreateDomainRequest, Body()]) -> Response[str]:
        ops, client_id = me()
        return ops.create(client_id, request)

    @router.get(
        "/v1/domains",
        summary="The client's sending domains",
        responses=answers(200, "The domains", DomainList),
        tags=TAGS,
        security=security,
    )
    def list_own() -> DomainList:
        ops, client_id = me()
        return ops.list(client_id)

    @router.get(
        "/v1/domains/<domain_id>",
        summary="One sending domain, its records and its last check",
        responses=answers(200, "The domain", DomainView, errors=_NOT_FOUND),
        tags=TAGS,
        security=security,
    )
    def get_one(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        ops, client_id = me()
        return ops.get(client_id, domain_id)

    @router.delete(
        "/v1/domains/<domain_id>",
        summary="Remove a sending domain (its keys, and the SES identity it created, are deleted)",
        responses=answers(200, "The domain, removed", DomainView, errors=_DELETE_ERRORS),
        tags=TAGS,
        security=security,
    )
    def delete(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        ops, client_id = me()
        return ops.delete(client_id, domain_id)

    @router.post(
        "/v1/domains/<domain_id>/verify",
        summary="Check the domain's DNS records now",
        description=_VERIFY_DESCRIPTION,
        responses=answers(200, "What was found", VerificationView, errors=_NOT_FOUND),
        tags=TAGS,
        security=security,
    )
    def verify(domain_id: Annotated[str, DOMAIN_ID]) -> VerificationView:
        ops, client_id = me()
        return ops.verify(client_id, domain_id)

    @router.put(
        "/v1/domains/<domain_id>/tracking-host",
        summary="Use a host of the client's own for this domain's tracked links",
        description=(
            "Tracked links and the pixel of mail from this domain use https://<host> once "
            "the domain is verified and the host's CNAME (in `records`, purpose `tracking`) "
            "is found by a check (`POST …/verify` or the hourly re-check); until then the "
            "service's own tracking host. The API's custom domain must serve the host too."
        ),
        responses=answers(
            200,
            "The domain, with the CNAME to publish",
            DomainView,
            errors={**_NOT_FOUND, 422: "validation_error, invalid_domain (not under the domain)"},
        ),
        tags=TAGS,
        security=security,
    )
    def set_tracking_host(
        domain_id: Annotated[str, DOMAIN_ID], request: Annotated[TrackingHostRequest, Body()]
    ) -> DomainView:
        ops, client_id = me()
        return ops.set_tracking_host(client_id, domain_id, request.host)

    @router.delete(
        "/v1/domains/<domain_id>/tracking-host",
        summary="Stop using a tracking host of the client's own for this domain",
        responses=answers(200, "The domain", DomainView, errors=_NOT_FOUND),
        tags=TAGS,
        security=security,
    )
    def drop_tracking_host(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        ops, client_id = me()
        return ops.set_tracking_host(client_id, domain_id, None)

    @router.post(
        "/v1/domains/<domain_id>/rotate-dkim",
        summary="Make a new DKIM key under a new selector",
        description=(
            "The new selector's record is to be published; the current key signs until "
            "a verification finds it, then stays published (previous) until retired."
        ),
        responses=answers(
            200,
            "The domain with its next key",
            DomainView,
            errors={**_NOT_FOUND, 422: "validation_error: SES manages this domain's DKIM"},
        ),
        tags=TAGS,
        security=security,
    )
    def rotate(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        ops, client_id = me()
        return ops.rotate(client_id, domain_id)

    @router.post(
        "/v1/domains/<domain_id>/retire-dkim",
        summary="Stop publishing the DKIM keys a rotation replaced",
        responses=answers(200, "The domain", DomainView, errors=_NOT_FOUND),
        tags=TAGS,
        security=security,
    )
    def retire(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        ops, client_id = me()
        return ops.retire(client_id, domain_id)

    return router


def admin_domain_routes(services: ServicesProvider) -> Router:
    """The same operations for operators: a client's domains, and any domain by id."""
    from mailroom.entrypoints.admin import ADMIN_SECURITY, require_admin

    router = Router()

    def admin() -> _Operations:
        active = services()
        return _Operations(active, require_admin(router, active))

    def client_of(ops: _Operations, client_ref: str) -> uuid.UUID:
        return clients.find_client(ops.services.uow(), client_ref).id

    @router.post(
        "/admin/clients/<client_ref>/domains",
        status_code=201,
        summary="Register a sending domain for a client",
        responses=answers(
            201,
            "Registered, pending",
            DomainView,
            errors={**_CREATE_ERRORS, 404: "client_not_found"},
        ),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def create(
        client_ref: Annotated[str, Path()], request: Annotated[CreateDomainRequest, Body()]
    ) -> Response[str]:
        ops = admin()
        return ops.create(client_of(ops, client_ref), request)

    @router.get(
        "/admin/clients/<client_ref>/domains",
        summary="A client's sending domains",
        responses=answers(200, "The domains", DomainList, errors={404: "client_not_found"}),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def list_all(client_ref: Annotated[str, Path()]) -> DomainList:
        ops = admin()
        return ops.list(client_of(ops, client_ref))

    @router.get(
        "/admin/domains/<domain_id>",
        summary="Any sending domain",
        responses=answers(200, "The domain", DomainView, errors=_NOT_FOUND),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def get_one(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        return admin().get(None, domain_id)

    @router.delete(
        "/admin/domains/<domain_id>",
        summary="Remove a sending domain (and the SES identity it created)",
        responses=answers(200, "The domain, removed", DomainView, errors=_DELETE_ERRORS),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def delete(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        return admin().delete(None, domain_id)

    @router.post(
        "/admin/domains/<domain_id>/verify",
        summary="Check a sending domain's DNS records now",
        description=_VERIFY_DESCRIPTION,
        responses=answers(200, "What was found", VerificationView, errors=_NOT_FOUND),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def verify(domain_id: Annotated[str, DOMAIN_ID]) -> VerificationView:
        return admin().verify(None, domain_id)

    @router.post(
        "/admin/domains/<domain_id>/rotate-dkim",
        summary="Make a new DKIM key for a sending domain",
        responses=answers(200, "The domain with its next key", DomainView, errors=_NOT_FOUND),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def rotate(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        return admin().rotate(None, domain_id)

    @router.post(
        "/admin/domains/<domain_id>/retire-dkim",
        summary="Stop publishing replaced DKIM keys",
        responses=answers(200, "The domain", DomainView, errors=_NOT_FOUND),
        tags=ADMIN_TAGS,
        security=ADMIN_SECURITY,
    )
    def retire(domain_id: Annotated[str, DOMAIN_ID]) -> DomainView:
        return admin().retire(None, domain_id)

    return router
