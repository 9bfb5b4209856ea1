"""The template engine's guards: sandbox, byte budget, render deadline, and the worker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from mailroom.adapters.compiled_templates import EmfTemplateMetrics
from mailroom.adapters.render_deadline import DeadlineExceeded, DeadlineWatchdog
from mailroom.adapters.templates import TemplateRenderer, TemplateSource
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.errors import (
    MailroomError,
    RenderError,
    RenderTimeout,
    RenderTooLarge,
    SubjectTooLong,
    TemplateSecurityError,
)
from mailroom.domain.model import EventType, Message, MessageStatus
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services import templates as template_service
from tests.events import FakeLambdaContext, load_event
from tests.fakes import DictTemplateStore, FakeUnitOfWork, PlainHasher, RecordingQueue
from tests.fakes import ScriptedProvider as Smtp
from tests.provider_fakes import (
    FakeDeadLetterQueue,
    FakeQueueRecords,
    RecordingSignals,
    memory_breakers,
)

LIMIT = 0.2
# Generous on purpose: the runaways below would run for hours unstopped; this
# only has to tell "stopped by the deadline" from "not stopped".
TOLERANCE = 0.5
NESTED_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
RUNAWAYS = {
    "nested loop": (NESTED_LOOP, RenderTimeout),
    "nested loop, no output": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        RenderTimeout,
    ),
    "huge string at once": ("{{ 'x' * 10**10 }}", RenderTooLarge),
    "huge string by doubling": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        RenderTooLarge,
    ),
    "huge string in a block": (
        "{% set b %}{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}{% endset %}{{ b }}",
        RenderTooLarge,
    ),
    "huge string by joining one string": (
        "{% set s = 'x' * 1000000 %}{{ ([s] * 100000) | join }}",
        RenderTooLarge,
    ),
    "huge string by padding": ("{{ 'x' | center(1000000000) }}", RenderTooLarge),
    "huge string by format width": ("{{ '%0999999999d' % 1 }}", RenderTooLarge),
    "huge string by format width of a float": ("{{ '%0999999999f' % 1.5 }}", RenderTooLarge),
    "huge string by str.format width": ("{{ '{:>999999999}'.format(1) }}", RenderTooLarge),
    "huge literal block": (
        "{% set b %}{% for i in range(100000) %}" + "L" * 10000 + "{% endfor %}{% endset %}{{ b }}",
        RenderTooLarge,
    ),
    "huge nested list printed": (
        "{% set ns = namespace(l=['x' * 1000000]) %}{% for i in range(40) %}"
        "{% set ns.l = [ns.l, ns.l] %}{% endfor %}{{ ns.l }}",
        RenderTooLarge,
    ),
    "huge integer": ("{{ 10 ** 1000000 }}", RenderTooLarge),
    # 56 KB of CSS x 12,000 tags: ten times what the inlining check allows.
    # Few tags and much CSS, so that rendering the tags stays far inside the
    # deadline even on a busy machine (60,000 tags once took 260 ms there).
    "css copied onto every tag": (
        "<style>" + "* { color: red; padding: 1px; margin: 2px; border: 0; }" * 1000 + "</style>"
        "{% for i in range(6000) %}<b></b>{% endfor %}",
        RenderTooLarge,
    ),
}

# Server-side template injection payloads. Those visible in the source are
# refused at upload by static inspection; the rest by the sandbox at render.
STATIC_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__['__builtins__'] }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os') }}",
    "{{ ''['__class__'] }}",
    "{{ '' | attr('__class__') }}",
    "{{ '' | attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ dict.mro() }}",
    "{{ range.__self__ }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]
RUNTIME_PAYLOADS = [
    "{% set a = '__cla' ~ 'ss__' %}{{ '' | attr(a) }}",
    "{{ '' | attr(['_', '_class_', '_'] | join) }}",
    "{% set a = '_' * 2 ~ 'globals' ~ '_' * 2 %}{{ (cycler | attr('next')) | attr(a) }}",
    "{% set f = '{0.' ~ '_' * 2 ~ 'class' ~ '_' * 2 ~ '}' %}{{ f.format('') }}",
    "{{ 'x'.translate({120: 'y'}) }}",
]


def _source(html: str, name: str = "t") -> TemplateSource:
    return TemplateSource(name=name, subject="s", html=html)


class TestSandbox:
    @pytest.mark.parametrize("payload", STATIC_PAYLOADS)
    def test_visible_escapes_are_refused_at_upload_and_nothing_is_stored(
        self, payload: str
    ) -> None:
        store = DictTemplateStore()
        with pytest.raises(TemplateSecurityError) as refused:
            template_service.upload_template(
                store, TemplateRenderer(), name="evil", subject="s", html=payload
            )
        assert refused.value.code == "template_security_error"
        assert refused.value.details[0]["line"] == 1
        assert store.uploads == {}

    def test_loop_fields_read_as_in_jinja_and_loop_internals_stay_refused(self) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # The loop's properties skip the sandbox's checks (issue 8); they must
        # read as Jinja's own sandbox reads them, and anything else on
        # ``loop`` must still go through the checks.
        html = (
            "{% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
            "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
            "{{ loop.depth }}{{ loop.depth0 }}{{ loop.previtem | default('-') }}"
            "{{ loop.nextitem | default('-') }}{{ loop.cycle('a', 'b') }};{% endfor %}"
        )
        props = {"items": ["p", "q", "r"]}
        expected = ImmutableSandboxedEnvironment().from_string(html).render(props)
        assert f"<body>{expected}</body>" in TemplateRenderer().render(_source(html), props).html
        internals = "{% for x in items %}{{ loop | attr('_iterator') }}{% endfor %}"
        with pytest.raises(TemplateSecurityError):
            TemplateRenderer().render(_source(internals), props)

    @pytest.mark.parametrize("payload", RUNTIME_PAYLOADS)
    def test_computed_escapes_pass_inspection_but_fail_at_render(self, payload: str) -> None:
        renderer = TemplateRenderer()
        renderer.prepare(_source(payload))  # nothing visible in the source
        with pytest.raises(TemplateSecurityError):
            renderer.render(_source(payload), {})

    @pytest.mark.parametrize("payload", RUNTIME_PAYLOADS)
    def test_an_upload_with_sample_props_renders_and_so_refuses_them(self, payload: str) -> None:
        store = DictTemplateStore()
        with pytest.raises(TemplateSecurityError):
            template_service.upload_template(
                store, TemplateRenderer(), name="evil", subject="s", html=payload, sample={}
            )
        assert store.uploads == {}

    def test_templates_cannot_change_the_props_they_are_given(self) -> None:
        props: dict[str, Any] = {"items": [1, 2]}
        with pytest.raises(TemplateSecurityError):
            TemplateRenderer().render(_source("{{ items.append(3) }}"), props)
        assert props == {"items": [1, 2]}

    def test_include_and_extends_are_refused_at_compile(self) -> None:
        with pytest.raises(MailroomError, match="unsupported include"):
            TemplateRenderer().prepare(_source("{% include 'other' %}"))


class TestRunawayTemplates:
    @pytest.mark.parametrize("name", list(RUNAWAYS))
    def test_each_is_stopped_without_finishing(self, name: str) -> None:
        html, error = RUNAWAYS[name]
        renderer = TemplateRenderer(timeout_seconds=LIMIT)
        renderer.prepare(_source(html))
        started = time.monotonic()
        with pytest.raises(error) as stopped:
            renderer.render(_source(html), {})
        assert time.monotonic() - started < LIMIT + TOLERANCE
        assert stopped.value.code in {"render_timeout", "render_too_large"}

    def test_the_deadline_also_stops_renders_on_a_worker_thread(self) -> None:
        # The local runner calls handlers on threads, where SIGALRM cannot reach.
        renderer = TemplateRenderer(timeout_seconds=LIMIT)
        outcome: list[BaseException] = []

        def render() -> None:
            try:
                renderer.render(_source(NESTED_LOOP), {})
            except RenderError as error:
                outcome.append(error)

        thread = threading.Thread(target=render)
        thread.start()
        thread.join(LIMIT + TOLERANCE + 5)  # compile included
        assert not thread.is_alive()
        assert [type(error) for error in outcome] == [RenderTimeout]

    def test_a_normal_template_is_unaffected_by_the_guards(self) -> None:
        html = (
            "{% macro row(i) %}<tr><td>{{ i }}</td></tr>{% endmacro %}"
            "{% set ns = namespace(total=0) %}<table>{% for item in items %}{{ row(item.n) }}"
            "{% set ns.total = ns.total + item.n * 2 %}{% endfor %}</table>"
            "<p>{{ '%.2f' | format(ns.total) }} {{ ('a' ~ 'b') * 3 }} {{ names | join(', ') }}</p>"
        )
        props = {"items": [{"n": 1}, {"n": 2}], "names": ["Ada", "Grace"]}
        rendered = TemplateRenderer().render(_source(html), props)
        assert "<td>1</td>" in rendered.html
        assert "<td>2</td>" in rendered.html
        assert "6.00 ababab Ada, Grace" in rendered.html


class TestTrialRender:
    """The send API's trial render refuses exactly what the worker's render would."""

    REFUSED: dict[str, tuple[str, dict[str, Any]]] = {
        **{f"runaway: {name}": (html, {}) for name, (html, _) in RUNAWAYS.items()},
        **{f"escape: {payload}": (payload, {}) for payload in RUNTIME_PAYLOADS},
        "missing prop": ("<p>{{ name }}</p>", {}),
        "missing nested prop": ("<p>{{ user.name }}</p>", {"user": {}}),
        "error in template code": ("<p>{{ 1 / n }}</p>", {"n": 0}),
    }

    @pytest.mark.parametrize("case", list(REFUSED))
    def test_it_raises_what_render_raises(self, case: str) -> None:
        html, props = self.REFUSED[case]
        renderer = TemplateRenderer(timeout_seconds=LIMIT)
        with pytest.raises(MailroomError) as rendered:
            renderer.render(_source(html), props)
        with pytest.raises(MailroomError) as tried:
            renderer.try_render(_source(html), props)
        assert type(tried.value) is type(rendered.value)
        assert (tried.value.code, tried.value.details) == (
            rendered.value.code,
            rendered.value.details,
        )

    @pytest.mark.parametrize(
        "subject",
        ["x" * 999, "ü" * 400, "w " * 600],
        ids=["999-ascii", "400-non-ascii", "long-with-spaces"],
    )
    def test_a_subject_over_998_octets_encoded_is_refused_by_both(self, subject: str) -> None:
        # GIVEN a template whose subject renders past one header line's limit
        source = TemplateSource(name="t", subject="{{ s }}", html="<p>x</p>")
        renderer = TemplateRenderer()
        # WHEN it is rendered and trial-rendered
        with pytest.raises(SubjectTooLong) as rendered:
            renderer.render(source, {"s": subject})
        with pytest.raises(SubjectTooLong) as tried:
            renderer.try_render(source, {"s": subject})
        # THEN both refuse it the same way, with the stable code
        assert rendered.value.code == tried.value.code == "subject_too_long"
        assert rendered.value.details == tried.value.details

    def test_a_subject_of_998_octets_is_accepted(self) -> None:
        source = TemplateSource(name="t", subject="{{ s }}", html="<p>x</p>")
        assert TemplateRenderer().render(source, {"s": "x" * 998}).subject == "x" * 998

    def test_props_that_render_pass_without_inlining_or_a_text_part(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        renderer = TemplateRenderer()
        source = _source("<style>p { color: red }</style><p>{{ name }}</p>")
        finished: list[str] = []

        class CountingInliner:
            def inline(self, html: str) -> str:
                finished.append(html)
                return html

        monkeypatch.setattr(renderer, "_inliner", CountingInliner())
        renderer.try_render(source, {"name": "Ada"})
        assert finished == []
        assert "<p>Ada</p>" in renderer.render(source, {"name": "Ada"}).html
        assert len(finished) == 1


class TestDeadlineWatchdog:
    def test_a_function_that_ends_in_time_returns_its_value(self) -> None:
        assert DeadlineWatchdog().run(1.0, lambda: 42) == 42

    def test_a_function_past_its_deadline_is_interrupted(self) -> None:
        watchdog = DeadlineWatchdog()

        def spin() -> None:
            while True:
                pass

        with pytest.raises(DeadlineExceeded):
            watchdog.run(0.05, spin)
        assert watchdog.fired == 1

    def test_no_interrupt_outlives_its_run(self) -> None:
        # Deadlines that fire just as the function returns must not land in
        # the code that follows: the watchdog withdraws them.
        watchdog = DeadlineWatchdog()
        outcomes = {"returned": 0, "stopped": 0}
        for _ in range(300):
            try:
                watchdog.run(0.001, lambda: sum(range(3000)))
                outcomes["returned"] += 1
            except DeadlineExceeded:
                outcomes["stopped"] += 1
            total = 0
            for value in range(20000):  # would be interrupted if anything leaked
                total += value
            assert total == 199990000
        assert sum(outcomes.values()) == 300


def _message(uow: FakeUnitOfWork, template: str) -> uuid.UUID:
    message = Message(
        id=uuid.uuid4(),
        client_id=uuid.uuid4(),
        trace_id="t-1",
        template_name=template,
        from_address="Mailroom <noreply@example.com>",
        to=["ada@example.com"],
        props={"name": "Ada"},
    )
    with uow:
        uow.messages.add(message)
        uow.commit()
    return message.id


def _worker(templates: DictTemplateStore, provider: Smtp) -> tuple[Services, FakeUnitOfWork]:
    uow = FakeUnitOfWork()
    signals = RecordingSignals()
    services = bootstrap(
        Settings(templates_dir=Path("templates"), provider_order="smtp"),
        uow=lambda: uow,
        hasher=PlainHasher(),
        queue=RecordingQueue(),
        templates=templates,
        renderer=TemplateRenderer(timeout_seconds=LIMIT),
        providers={"smtp": provider},
        breakers=memory_breakers(signals),
        signals=signals,
        queue_records=FakeQueueRecords(limit=8),
        dead_letters=FakeDeadLetterQueue(),
        health_probes={},
    )
    return services, uow


def _batch(message_ids: list[uuid.UUID]) -> dict[str, Any]:
    event = load_event("worker/sqs-batch")
    template = event["Records"][0]
    event["Records"] = [
        {**template, "messageId": str(uuid.uuid4()), "body": json.dumps({"message_id": str(i)})}
        for i in message_ids
    ]
    return event


@pytest.mark.parametrize("on_thread", [False, True], ids=["main thread", "worker thread"])
@pytest.mark.parametrize("runaway", ["nested loop", "huge string at once"])
def test_a_runaway_message_fails_and_the_rest_of_the_batch_is_sent(
    runaway: str, on_thread: bool
) -> None:
    # GIVEN a batch: a good message, a runaway one, another good one
    hello = TemplateSource(name="hello", subject="Hi {{ name }}", html="<p>Hi {{ name }}</p>")
    templates = DictTemplateStore(hello, _source(RUNAWAYS[runaway][0], name="runaway"))
    provider = Smtp()
    services, uow = _worker(templates, provider)
    ids = [_message(uow, "hello"), _message(uow, "runaway"), _message(uow, "hello")]
    answers: list[dict[str, Any]] = []

    # WHEN the worker handles it (on the main thread as in Lambda, or on a
    # thread as in the local runner)
    def run() -> None:
        answers.append(
            process_send_batch(_batch(ids), FakeLambdaContext("mailroom-worker"), services)
        )

    if on_thread:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)
    else:
        run()

    # THEN the runaway message is failed with its code and a failed event,
    # nothing is retried, and both good messages went out
    assert answers == [{"batchItemFailures": []}]
    runaway_row = uow.messages.rows[ids[1]]
    assert runaway_row.status is MessageStatus.FAILED
    assert runaway_row.last_error is not None
    code = RUNAWAYS[runaway][1].code
    assert runaway_row.last_error.startswith(f"{code}: ")
    events = uow.messages.events(ids[1])
    assert [e.type for e in events] == [EventType.FAILED]
    assert [uow.messages.rows[i].status for i in (ids[0], ids[2])] == [MessageStatus.SENT] * 2
    assert len(provider.sent) == 2


def test_each_compile_is_counted_and_published_as_a_metric(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN metrics enabled (as in Lambda) and a renderer reporting to them
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    metrics = EmfTemplateMetrics("MailroomTest")
    renderer = TemplateRenderer(metrics=metrics)
    # WHEN one template is rendered three times
    for _ in range(3):
        renderer.render(_source("<p>{{ n }}</p>"), {"n": 1})
    # THEN it was compiled once, and that compile is one EMF document
    assert metrics.compiles == 1
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert len(documents) == 1
    (directive,) = documents[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "MailroomTest"
    assert directive["Metrics"] == [{"Name": "template_compiles", "Unit": "Count"}]
    assert documents[0]["template_compiles"] == [1.0]
    assert documents[0]["template"] == "t"
