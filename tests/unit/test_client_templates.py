"""The client template routes: scope template:manage, and each client's view (issue 15)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from mailroom.adapters.templates import FileTemplateStore, LayeredTemplateStore, TemplateRenderer
from mailroom.bootstrap import bootstrap
from mailroom.config import Settings
from mailroom.domain.model import Client, Message
from mailroom.domain.templates import TemplateSource, TemplateSummary
from mailroom.domain.tenancy import Caller, RateDecision, Scope
from mailroom.entrypoints import client_gate
from mailroom.entrypoints.client_templates import client_template_routes
from mailroom.entrypoints.http_errors import install_error_handlers
from mailroom.entrypoints.openapi_document import committed_form
from mailroom.services.admission import Admission
from mailroom.services.delivery import BatchTemplates
from mailroom.services.templates import client_templates
from tests.events import FakeLambdaContext, load_event, with_body, with_headers
from tests.fakes import (
    DictTemplateStore,
    FakeCredentialVersions,
    FakeQuotaCounter,
    FakeRateLimiter,
    FakeUnitOfWork,
    PlainHasher,
    RecordingQueue,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
ROUTES = [
    ("POST", "/v1/templates", {"name": "promo", "subject": "s", "html": "<p>x</p>"}),
    ("GET", "/v1/templates", None),
    ("POST", "/v1/templates/welcome/preview", {}),
]
ALLOWED = RateDecision(allowed=True, limit=60, remaining=59, reset_seconds=1, retry_after_seconds=0)


def _client() -> Client:
    return Client(
        id=uuid.uuid4(),
        name="acme",
        api_key_prefix="mr_live_" + "1" * 24,
        rate_limit=60,
        quota_limit=100,
    )


class Routes:
    """The routes on a plain resolver, with the caller the gate would have admitted."""

    def __init__(self) -> None:
        self.uploads = DictTemplateStore()
        self.services = bootstrap(
            Settings(templates_dir=TEMPLATES, admin_token_sha256=hashlib.sha256(b"t").hexdigest()),
            uow=FakeUnitOfWork,
            hasher=PlainHasher(),
            queue=RecordingQueue(),
            templates=LayeredTemplateStore(FileTemplateStore(TEMPLATES), self.uploads),
            renderer=TemplateRenderer(),
            providers={},
            rate_limiter=FakeRateLimiter(),
            quota=FakeQuotaCounter(),
            credential_versions=FakeCredentialVersions(),
            health_probes={},
        )
        self.app = APIGatewayRestResolver(enable_validation=True)
        install_error_handlers(self.app)
        self.app.include_router(client_template_routes(lambda: self.services))

    def call(self, caller: Caller, method: str, path: str, body: Any) -> tuple[int, Any]:
        event = load_event("status/health")
        event["httpMethod"], event["path"], event["resource"] = method, path, path
        if body is not None:
            with_body(event, body)
            with_headers(event, Content_Type="application/json")
        with client_gate.invocation() as state:
            state.admission = Admission(caller, ALLOWED)
            response = self.app.resolve(event, FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_key_without_template_manage_is_refused_on_every_template_route(
    method: str, path: str, body: Any
) -> None:
    # GIVEN a caller whose key may send and read, but not manage templates
    routes = Routes()
    caller = Caller(_client(), "k-send", frozenset({Scope.EMAIL_SEND, Scope.EMAIL_READ}))
    # WHEN it calls a template route
    status, answer = routes.call(caller, method, path, body)
    # THEN 403 insufficient_scope naming template:manage, and nothing was stored
    assert status == 403
    assert answer["error"]["code"] == "insufficient_scope"
    assert answer["error"]["details"] == [{"required_scope": "template:manage"}]
    assert routes.uploads.uploads == {}


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_key_with_template_manage_is_let_in(method: str, path: str, body: Any) -> None:
    # GIVEN a caller holding exactly template:manage
    routes = Routes()
    caller = Caller(_client(), "k-templates", frozenset({Scope.TEMPLATE_MANAGE}))
    # WHEN it calls a template route THEN it is served
    status, answer = routes.call(caller, method, path, body)
    assert status in (200, 201), answer


def test_the_document_declares_template_manage_on_every_template_route() -> None:
    # GIVEN the committed document
    paths = json.loads(committed_form())["paths"]
    # THEN each /v1/templates operation asks for a key with template:manage, and only that
    operations = [
        (path, method, operation)
        for path, item in paths.items()
        if path.startswith("/v1/templates")
        for method, operation in item.items()
    ]
    assert {(path, method) for path, method, _ in operations} == {
        ("/v1/templates", "post"),
        ("/v1/templates", "get"),
        ("/v1/templates/{name}/preview", "post"),
    }
    for _, _, operation in operations:
        assert operation["security"] == [
            {"apiKey": ["template:manage"], "apiSecret": ["template:manage"]},
            {"clientToken": ["template:manage"]},
        ]
        assert "403" in operation["responses"]
    assert "404" in paths["/v1/templates/{name}/preview"]["post"]["responses"]


def test_a_client_upload_is_its_own_and_the_upload_audited_with_its_key() -> None:
    # GIVEN a client key allowed to manage templates
    routes = Routes()
    caller = Caller(_client(), "k-42", frozenset({Scope.TEMPLATE_MANAGE}))
    # WHEN it uploads
    status, answer = routes.call(caller, *ROUTES[0])
    # THEN the template is stored as the client's, and the audit names the key
    assert (status, answer["version"]) == (201, 1)
    assert list(routes.uploads.uploads) == [("promo", caller.client.id)]
    (audited,) = routes.uploads.audited
    assert audited.actor == "key:k-42"
    assert audited.after is not None
    assert audited.after["client_id"] == str(caller.client.id)


def test_the_list_pages_file_shared_and_own_templates_by_name_and_precedence() -> None:
    # GIVEN file templates, a shared "alpha" and "promo", and the client's own "promo"
    client = uuid.uuid4()
    layered = LayeredTemplateStore(FileTemplateStore(TEMPLATES), _Summaries())
    # WHEN it is read one entry at a time
    seen: list[tuple[str, str, bool]] = []
    cursor = None
    while True:
        page = client_templates(layered, client_id=client, cursor=cursor, limit=1)
        seen += [(e.name, e.kind, e.active) for e in page.templates]
        cursor = page.next_cursor
        if cursor is None:
            break
    # THEN every entry comes once, by name, the client's own before the shared one
    assert seen == [
        ("alpha", "shared", True),
        ("promo", "client", True),
        ("promo", "shared", False),
        ("receipt", "file", True),
        ("welcome", "file", True),
    ]


class _Summaries(DictTemplateStore):
    """Fixed summaries, as PostgreSQL would give them for one client."""

    def __init__(self) -> None:
        super().__init__()
        self.entries = [
            TemplateSummary("alpha", "shared", 1, 1, None),
            TemplateSummary("promo", "client", 1, 1, None),
            TemplateSummary("promo", "shared", 3, 3, None, active=False),
        ]

    def summaries(
        self, *, client_id: uuid.UUID, after: tuple[str, int] | None, limit: int
    ) -> list[TemplateSummary]:
        return [e for e in self.entries if after is None or e.position > after][:limit]


def test_a_batch_reads_a_pinned_upload_once_and_a_file_template_once_for_all_clients() -> None:
    # GIVEN a store counting its reads, with a shared upload and a file template
    class Counting(DictTemplateStore):
        reads = 0

        def get(
            self, name: str, version: int | None = None, *, client_id: uuid.UUID | None = None
        ) -> TemplateSource:
            Counting.reads += 1
            return super().get(name, version, client_id=client_id)

        def get_exact(self, name: str, version: int, *, owner: uuid.UUID | None) -> TemplateSource:
            Counting.reads += 1
            return super().get_exact(name, version, owner=owner)

    store = Counting(TemplateSource(name="hello", subject="s", html="h"))
    store.add_version(TemplateSource(name="promo", subject="s", html="shared"))
    batch = BatchTemplates(store)

    def message(template: str, version: int | None, shared: bool | None) -> Message:
        return Message(
            id=uuid.uuid4(),
            client_id=uuid.uuid4(),  # every message another client's
            trace_id="t",
            template_name=template,
            template_version=version,
            template_shared=shared,
            from_address="a@example.com",
            to=["b@example.com"],
        )

    # WHEN six messages of three clients each use them
    sources = [batch.for_message(message("promo", 1, True)) for _ in range(3)]
    sources += [batch.for_message(message("hello", None, None)) for _ in range(3)]
    # THEN each template was read once, and each message got the pinned one
    assert Counting.reads == 2
    assert {source.html for source in sources} == {"shared", "h"}
