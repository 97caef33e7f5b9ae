"""A small typed producer library for upstream Python systems.

    async with LedgerProducer("kafka:9092", source="urn:system:crm") as ledger:
        await ledger.consent_given("subj-1", purpose="marketing",
                                   subject_role="customer_contact", controller="visma-software-as")
        await ledger.data_shared("subj-1", purpose="delivery", subject_role="user",
                                 controller="visma-software-as",
                                 recipient={"kind": "partner", "id": "northwind-consulting"},
                                 data_categories=["contact_details"])

Each event is built from the models of :mod:`consent_ledger.core.events`,
checked with the same intake rules the ledger applies (an invalid event raises
:class:`InvalidEvent` naming the reason and the field, and is not sent), then
published to ``ledger.events`` keyed by subject. Sends are batched by the
client; ``publish`` returns once the broker acknowledged the event, and
``publish_many`` once it acknowledged all of them. A broker behind TLS or SASL
(CONTRACT §7) is reached with the transport of ``settings``, e.g.
``LedgerProducer(bootstrap, source=..., settings=Settings.from_env())`` reads
the ``LEDGER_KAFKA_*`` variables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer

from consent_ledger.core.intake import Rejection, compact_json, validate_parsed
from consent_ledger.core.timestamps import format_micros, to_micros
from consent_ledger.core.vocabulary import (
    CONSENT_GIVEN,
    CONSENT_WITHDRAWN,
    DATA_SHARED,
    ERASURE_REQUESTED,
    VISITOR_REGISTERED,
)
from consent_ledger.kafka import make_producer, send_all, start_producer
from consent_ledger.settings import Settings

EVENTS_TOPIC = "ledger.events"


class InvalidEvent(ValueError):
    """An event the ledger would reject; nothing was sent."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(f"{rejection.reason.value}: {rejection.detail}")
        self.reason = rejection.reason.value
        self.detail = rejection.detail


def build_event(
    event_type: str,
    subject: str,
    data: Mapping[str, Any],
    *,
    source: str,
    time: datetime | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A CloudEvents 1.0 structured-mode event, checked against the ledger's rules."""
    moment = (time or datetime.now(UTC)).astimezone(UTC)
    event = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": format_micros(to_micros(moment), six_digits=True),
        "datacontenttype": "application/json",
        "data": {name: value for name, value in data.items() if value is not None},
    }
    checked = validate_parsed(event)
    if isinstance(checked, Rejection):
        raise InvalidEvent(checked)
    return event


class LedgerProducer:
    """Publishes events to the ledger; use as an async context manager."""

    def __init__(
        self,
        bootstrap: str,
        *,
        source: str,
        topic: str = EVENTS_TOPIC,
        enable_idempotence: bool = True,
        producer: AIOKafkaProducer | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.source = source
        self.topic = topic
        # ``settings`` (e.g. Settings.from_env()) brings the transport of CONTRACT §7:
        # TLS and SASL from the LEDGER_KAFKA_* variables.
        self._settings = (settings or Settings()).with_(
            kafka_bootstrap=bootstrap, kafka_idempotence=enable_idempotence
        )
        self._given = producer
        self._producer = producer or make_producer(
            self._settings, client_id="consent-ledger-producer"
        )

    async def __aenter__(self) -> Self:
        if self._given is not None:
            await self._given.start()
        else:
            await start_producer(self._producer, self._settings)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._producer.stop()

    async def publish(self, event: Mapping[str, Any]) -> str:
        """Check and publish one event; return its id once the broker acknowledged it."""
        return (await self.publish_many([event]))[0]

    async def publish_many(self, events: Iterable[Mapping[str, Any]]) -> list[str]:
        """Check every event first (nothing is sent if one is invalid), then publish all."""
        ready = []
        for event in events:
            checked = validate_parsed(dict(event))
            if isinstance(checked, Rejection):
                raise InvalidEvent(checked)
            ready.append(checked)
        await send_all(
            self._producer,
            self.topic,
            ((event.subject.encode(), compact_json(event.body), ()) for event in ready),
        )
        return [event.id for event in ready]

    async def _emit(
        self, event_type: str, subject: str, data: dict[str, Any], **envelope: Any
    ) -> str:
        return await self.publish(
            build_event(event_type, subject, data, source=self.source, **envelope)
        )

    async def consent_given(
        self, subject: str, *, purpose: str, subject_role: str, controller: str,
        expires_at: datetime | None = None, channel: str | None = None, **envelope: Any,
    ) -> str:  # fmt: skip
        expiry = format_micros(to_micros(expires_at.astimezone(UTC))) if expires_at else None
        data = {"purpose": purpose, "subject_role": subject_role, "controller": controller,
                "expires_at": expiry, "channel": channel}  # fmt: skip
        return await self._emit(CONSENT_GIVEN, subject, data, **envelope)

    async def consent_withdrawn(
        self,
        subject: str,
        *,
        purpose: str,
        controller: str,
        channel: str | None = None,
        **envelope: Any,
    ) -> str:
        data = {"purpose": purpose, "controller": controller, "channel": channel}
        return await self._emit(CONSENT_WITHDRAWN, subject, data, **envelope)

    async def data_shared(
        self, subject: str, *, purpose: str, subject_role: str, controller: str,
        recipient: Mapping[str, str], data_categories: list[str],
        legal_basis: Mapping[str, str] | None = None, **envelope: Any,
    ) -> str:  # fmt: skip
        data = {"purpose": purpose, "subject_role": subject_role, "controller": controller,
                "recipient": dict(recipient), "data_categories": data_categories,
                "legal_basis": dict(legal_basis) if legal_basis else None}  # fmt: skip
        return await self._emit(DATA_SHARED, subject, data, **envelope)

    async def visitor_registered(
        self,
        subject: str,
        *,
        site: str,
        rights_notice: str | None,
        host: str | None = None,
        **envelope: Any,
    ) -> str:
        data = {"site": site, "rights_notice": rights_notice, "host": host}
        return await self._emit(VISITOR_REGISTERED, subject, data, **envelope)

    async def erasure_requested(
        self, subject: str, *, requested_via: str | None = None, **envelope: Any
    ) -> str:
        return await self._emit(
            ERASURE_REQUESTED, subject, {"requested_via": requested_via}, **envelope
        )
