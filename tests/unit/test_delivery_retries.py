"""Delivery through the provider chain, the worker's backoff and DLQ moves, and the DLQ service.

All on in-memory fakes of the real interfaces: the same stories on real
servers are in tests/integration/test_failover.py.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from mailroom.adapters.operator_signals import SignalKey
from mailroom.adapters.providers.base import FailureKind
from mailroom.adapters.templates import TemplateRenderer, TemplateSource
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.commands import SendRequest
from mailroom.domain.errors import ConfirmationRequired, DeadLetterNotFound
from mailroom.domain.model import EventType, MessageStatus
from mailroom.domain.retry import Backoff
from mailroom.entrypoints.worker import process_send_batch
from mailroom.services import clients, dead_letters, sending
from mailroom.services.delivery import DeliveryResult, deliver_message
from tests.events import FakeLambdaContext, load_event
from tests.fakes import (
    DictTemplateStore,
    FakeUnitOfWork,
    PlainHasher,
    RecordingQueue,
    ScriptedProvider,
)
from tests.provider_fakes import (
    FakeDeadLetterQueue,
    FakeQueueRecords,
    RecordingSignals,
    chain_of,
    memory_breakers,
)

HELLO = TemplateSource(name="hello", subject="Hello {{ name }}", html="<p>Hi {{ name }}</p>")
LIMITS = sending.SendLimits(max_recipients=3, default_from="Mailroom <noreply@example.com>")
NO_JITTER = Backoff(base_seconds=60, cap_seconds=3600)


class Named(ScriptedProvider):
    def __init__(self, name: str, *outcomes: FailureKind | None) -> None:
        super().__init__(*outcomes)
        self.name = name


def _accept(uow: FakeUnitOfWork, provider_order: list[str] | None = None) -> uuid.UUID:
    # A client per message: names are unique, and a test may accept several.
    client = clients.register_client(
        uow, PlainHasher(), name=f"acme-{uuid.uuid4().hex[:8]}", provider_order=provider_order
    ).client
    request = SendRequest.model_validate(
        {"template": "hello", "to": "ada@example.com", "props": {"name": "Ada"}}
    )
    message = sending.accept_message(
        uow,
        RecordingQueue(),
        DictTemplateStore(HELLO),
        LIMITS,
        client=client,
        request=request,
        trace_id="t-1",
        renderer=TemplateRenderer(),
    )
    return message.id


def _types(uow: FakeUnitOfWork, message_id: uuid.UUID) -> list[EventType]:
    return [event.type for event in uow.messages.events(message_id)]


class TestDeliveryThroughTheChain:
    def _deliver(
        self,
        uow: FakeUnitOfWork,
        message_id: uuid.UUID,
        *providers: ScriptedProvider,
        max_attempts: int = 5,
        last_receive: bool = False,
        signals: RecordingSignals | None = None,
    ) -> Any:
        return deliver_message(
            uow,
            DictTemplateStore(HELLO),
            TemplateRenderer(),
            chain_of(*providers, signals=signals),
            message_id=message_id,
            max_attempts=max_attempts,
            backoff=NO_JITTER,
            last_receive=last_receive,
        )

    def test_failover_records_every_try_and_the_provider_that_sent(self) -> None:
        uow = FakeUnitOfWork()
        message_id = _accept(uow)
        # WHEN the primary is down and the secondary takes the message
        outcome = self._deliver(
            uow, message_id, Named("smtp", FailureKind.TRANSIENT), Named("ses", None)
        )
        # THEN it is sent by the secondary, in one attempt
        assert outcome.result is DeliveryResult.SENT
        stored = uow.messages.rows[message_id]
        assert (stored.status, stored.provider, stored.provider_msg_id, stored.attempts) == (
            MessageStatus.SENT,
            "ses",
            "scripted-1",
            1,
        )
        # AND the history names the failed provider, its error, then the send
        events = uow.messages.events(message_id)
        assert [e.type for e in events] == [
            EventType.ACCEPTED,
            EventType.PROVIDER_FAILED,
            EventType.SENT,
        ]
        assert events[1].detail == {
            "provider": "smtp",
            "kind": "transient",
            "error": "scripted transient failure",
            "attempt": 1,
        }
        assert events[2].detail["failed_over_from"] == ["smtp"]

    def test_a_config_error_writes_an_alarm_row_and_the_next_provider_sends(self) -> None:
        uow = FakeUnitOfWork()
        message_id = _accept(uow)
        signals = RecordingSignals()
        outcome = self._deliver(
            uow,
            message_id,
            Named("sendgrid", FailureKind.CONFIG),
            Named("mailgun", None),
            signals=signals,
        )
        assert outcome.result is DeliveryResult.SENT
        events = uow.messages.events(message_id)
        alarm_rows = [e for e in events if e.type is EventType.PROVIDER_MISCONFIGURED]
        assert [(e.detail["provider"], e.detail["alarm"]) for e in alarm_rows] == [
            ("sendgrid", "provider_config_error")
        ]
        (alarm,) = signals.keyed(SignalKey.PROVIDER_CONFIG_ERROR)
        assert alarm.context["message_id"] == str(message_id)

    def test_all_transient_is_retried_with_the_backoff_delay(self) -> None:
        uow = FakeUnitOfWork()
        message_id = _accept(uow)
        delays = [
            self._deliver(
                uow,
                message_id,
                Named("smtp", FailureKind.TRANSIENT),
                Named("ses", FailureKind.TRANSIENT),
            ).retry_after_seconds
            for _ in range(3)
        ]
        assert delays == [60, 120, 240]
        stored = uow.messages.rows[message_id]
        assert (stored.status, stored.attempts) == (MessageStatus.QUEUED, 3)
        assert stored.last_error == "transient: ses: scripted transient failure"
        last = uow.messages.events(message_id)[-1]
        assert (last.type, last.detail["retry_in_seconds"]) == (EventType.ATTEMPT_FAILED, 240)

    def test_the_last_attempt_fails_the_message_for_the_dead_letter_queue(self) -> None:
        uow = FakeUnitOfWork()
        message_id = _accept(uow)
        outcomes = [
            self._deliver(uow, message_id, Named("smtp", FailureKind.TRANSIENT), max_attempts=2)
            for _ in range(2)
        ]
        assert [o.result for o in outcomes] == [DeliveryResult.RETRY, DeliveryResult.FAILED]
        assert outcomes[1].dead_letter
        stored = uow.messages.rows[message_id]
        assert stored.status is MessageStatus.FAILED
        assert uow.messages.events(message_id)[-1].detail["retries_exhausted"] is True

    def test_at_the_redrive_limit_the_message_fails_instead_of_staying_queued(self) -> None:
        uow = FakeUnitOfWork()
        message_id = _accept(uow)
        outcome = self._deliver(
            uow, message_id, Named("smtp", FailureKind.TRANSIENT), last_receive=True
        )
        assert (outcome.result, outcome.dead_letter) == (DeliveryResult.FAILED, True)
        assert uow.messages.rows[message_id].attempts == 1

    def test_a_permanent_error_fails_at_once_and_is_not_dead_lettered(self) -> None:
        uow = FakeUnitOfWork()
        message_id = _accept(uow)
        secondary = Named("ses", None)
        outcome = self._deliver(uow, message_id, Named("smtp", FailureKind.PERMANENT), secondary)
        assert (outcome.result, outcome.dead_letter) == (DeliveryResult.FAILED, False)
        assert secondary.sent == []
        assert _types(uow, message_id)[-2:] == [EventType.PROVIDER_FAILED, EventType.FAILED]

    def test_the_clients_own_order_is_used(self) -> None:
        uow = FakeUnitOfWork()
        message_id = _accept(uow, provider_order=["ses", "smtp"])
        outcome = self._deliver(uow, message_id, Named("smtp", None), Named("ses", None))
        assert outcome.result is DeliveryResult.SENT
        assert uow.messages.rows[message_id].provider == "ses"


class Worker:
    """process_send_batch over fakes, one record per call."""

    def __init__(self, *providers: ScriptedProvider, max_attempts: int = 3) -> None:
        self.uow = FakeUnitOfWork()
        self.signals = RecordingSignals()
        self.records = FakeQueueRecords(limit=8)
        self.dlq = FakeDeadLetterQueue()
        self.services: Services = bootstrap(
            Settings(
                templates_dir=Path("templates"),
                provider_order=",".join(p.name for p in providers),
                max_send_attempts=max_attempts,
                retry_base_delay_seconds=10,
                retry_max_delay_seconds=25,
                retry_jitter=0,
            ),
            uow=lambda: self.uow,
            hasher=PlainHasher(),
            queue=RecordingQueue(),
            templates=DictTemplateStore(HELLO),
            renderer=TemplateRenderer(),
            providers={p.name: p for p in providers},
            breakers=memory_breakers(self.signals),
            signals=self.signals,
            queue_records=self.records,
            dead_letters=self.dlq,
            health_probes={},
        )
        self.message_id = _accept(self.uow)

    def run(self, receive_count: int = 1) -> dict[str, Any]:
        event = load_event("worker/sqs-batch")
        record = event["Records"][0]
        record["body"] = json.dumps({"message_id": str(self.message_id)})
        record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        return process_send_batch(event, FakeLambdaContext("mailroom-worker"), self.services)


class TestWorker:
    def test_a_retry_holds_the_record_back_by_the_backoff_and_reports_it(self) -> None:
        worker = Worker(Named("smtp", *[FailureKind.TRANSIENT] * 3))
        answers = [worker.run(receive_count=n) for n in (1, 2)]
        record_id = "3f2c1b0a-9e8d-4c7b-a6f5-e4d3c2b1a098"
        assert answers == [{"batchItemFailures": [{"itemIdentifier": record_id}]}] * 2
        handle = "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a+example+receipt+handle=="
        assert worker.records.postponed == [(handle, 10), (handle, 20)]
        assert worker.dlq.letters == []

    def test_a_record_whose_body_does_not_parse_fails_alone(self) -> None:
        # GIVEN a batch of a good record and one whose body is not a queued message
        smtp = Named("smtp")
        worker = Worker(smtp)
        event = load_event("worker/sqs-batch")
        good = event["Records"][0]
        good["body"] = json.dumps({"message_id": str(worker.message_id)})
        bad = json.loads(json.dumps(good))
        bad["messageId"], bad["body"] = "not-a-message", '{"message_id": "nope"}'
        event["Records"].append(bad)
        # WHEN the worker handles it
        answer = process_send_batch(event, FakeLambdaContext("mailroom-worker"), worker.services)
        # THEN only the bad record is reported (the queue retries it, then its
        # DLQ keeps it), and the good one was sent
        assert answer == {"batchItemFailures": [{"itemIdentifier": "not-a-message"}]}
        assert len(smtp.sent) == 1
        assert worker.uow.messages.rows[worker.message_id].status is MessageStatus.SENT

    def test_when_attempts_run_out_the_record_goes_to_the_dlq_and_is_acknowledged(self) -> None:
        worker = Worker(Named("smtp", *[FailureKind.TRANSIENT] * 3))
        answers = [worker.run(receive_count=n) for n in (1, 2, 3)]
        assert answers[-1] == {"batchItemFailures": []}
        (letter,) = worker.dlq.letters
        assert letter.message_id == worker.message_id
        assert letter.trace_id == "1-6741a2b3-5c1f0e2d9a8b7c6d5e4f3a2b"
        assert letter.reason == "transient: smtp: scripted transient failure"
        assert worker.uow.messages.rows[worker.message_id].status is MessageStatus.FAILED
        assert [s.key for s in worker.signals.signals] == [SignalKey.MESSAGE_DEAD_LETTERED]

    def test_the_receive_sqs_would_not_repeat_fails_the_message_into_the_dlq(self) -> None:
        worker = Worker(Named("smtp", FailureKind.TRANSIENT), max_attempts=5)
        answer = worker.run(receive_count=8)  # the queue's maxReceiveCount
        assert answer == {"batchItemFailures": []}
        assert worker.records.postponed == []
        assert len(worker.dlq.letters) == 1

    def test_a_dlq_that_refuses_raises_an_alarm_and_the_row_still_reads_failed(self) -> None:
        worker = Worker(Named("smtp", FailureKind.TRANSIENT), max_attempts=1)
        worker.dlq.refuse = True
        assert worker.run() == {"batchItemFailures": []}
        (alarm,) = worker.signals.keyed(SignalKey.DEAD_LETTER_SEND_FAILED)
        assert alarm.level == "alarm"
        assert worker.uow.messages.rows[worker.message_id].status is MessageStatus.FAILED


class TestDeadLetterService:
    def _stack(self, *, failed: int) -> tuple[FakeUnitOfWork, FakeDeadLetterQueue, list[uuid.UUID]]:
        uow, dlq = FakeUnitOfWork(), FakeDeadLetterQueue()
        ids = []
        for _ in range(failed):
            message_id = _accept(uow)
            with uow:
                message = uow.messages.get(message_id)
                assert message is not None
                message.status, message.attempts = MessageStatus.FAILED, 5
                message.last_error = "transient: smtp: connection failed"
                uow.messages.save_outcome(message)
                uow.commit()
            dlq.add(message_id, "t-1", "transient: smtp: connection failed")
            ids.append(message_id)
        return uow, dlq, ids

    def test_list_shows_message_ids_and_last_errors_and_hides_nothing_afterwards(self) -> None:
        uow, dlq, ids = self._stack(failed=2)
        listing = dead_letters.list_dead_letters(uow, dlq, limit=10)
        assert [(v.message_id, v.status, v.last_error) for v in listing.messages] == [
            (ids[0], "failed", "transient: smtp: connection failed"),
            (ids[1], "failed", "transient: smtp: connection failed"),
        ]
        assert (listing.queue, listing.approximate_total, dlq.hidden) == (
            "mailroom-test-send-dlq",
            2,
            set(),
        )

    def test_redrive_one_requeues_that_message_with_a_fresh_budget(self) -> None:
        uow, dlq, ids = self._stack(failed=2)
        queue = RecordingQueue()
        report = dead_letters.redrive(uow, dlq, queue, message_id=ids[1])
        assert report.redriven == [ids[1]]
        assert [message_id for message_id, _ in queue.sent] == [ids[1]]
        stored = uow.messages.rows[ids[1]]
        assert (stored.status, stored.attempts) == (MessageStatus.QUEUED, 0)
        assert _types(uow, ids[1])[-1] is EventType.REDRIVEN
        assert [letter.message_id for letter in dlq.letters] == [ids[0]]
        assert dlq.hidden == set()

    def test_redrive_all_skips_what_it_cannot_read_and_does_not_resend_sent_mail(self) -> None:
        uow, dlq, ids = self._stack(failed=1)
        sent_id = _accept(uow)
        with uow:
            sent = uow.messages.get(sent_id)
            assert sent is not None
            sent.status = MessageStatus.SENT
            uow.messages.save_outcome(sent)
            uow.commit()
        dlq.add(sent_id, None, "duplicate")
        dlq.add(uuid.uuid4(), None, "no row")
        queue = RecordingQueue()
        report = dead_letters.redrive(uow, dlq, queue)
        assert (report.redriven, report.already_sent) == (ids, [sent_id])
        assert [s["reason"] for s in report.skipped] == ["no such message"]
        assert report.remaining == 1

    def test_redriving_a_message_not_in_the_dlq_is_not_found(self) -> None:
        uow, dlq, _ = self._stack(failed=1)
        with pytest.raises(DeadLetterNotFound):
            dead_letters.redrive(uow, dlq, RecordingQueue(), message_id=uuid.uuid4())
        assert dlq.hidden == set()

    def test_purge_wants_the_queue_name_and_fails_rows_left_queued(self) -> None:
        uow, dlq, _ = self._stack(failed=1)
        stranded = _accept(uow)  # moved by SQS itself: its row still says queued
        dlq.add(stranded, None, "")
        with pytest.raises(ConfirmationRequired):
            dead_letters.purge(uow, dlq, confirm="yes")
        assert len(dlq.letters) == 2
        report = dead_letters.purge(uow, dlq, confirm="mailroom-test-send-dlq")
        assert (report.purged, report.marked_failed, report.remaining) == (2, 1, 0)
        assert uow.messages.rows[stranded].status is MessageStatus.FAILED
        assert uow.messages.rows[stranded].last_error == dead_letters.PURGED_REASON


def test_a_stated_redrive_limit_is_trusted_without_asking_sqs() -> None:
    from mailroom.adapters.queue_records import SqsQueueRecords

    # GIVEN queue records told the limit, for a queue nobody could reach
    records = SqsQueueRecords("http://127.0.0.1:1/000000000000/nowhere", "eu-west-1", 8)
    # THEN the last receive is known at once (asking SQS would have failed,
    # and an unknown limit makes no receive the last)
    assert records.is_last_receive(8)
    assert not records.is_last_receive(7)
