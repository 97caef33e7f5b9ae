"""Kafka adapters shared by the worker, the API and the producer library.

Producers use idempotence unless ``LEDGER_KAFKA_IDEMPOTENCE=false``: the
embedded broker refuses InitProducerId, so ``consent-ledger dev`` turns it off.

Every client (producers, consumers, the admin client, faust's) connects with
the transport of :func:`kafka_security`: TLS and SASL from the
``LEDGER_KAFKA_*`` settings of CONTRACT §7.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition, errors
from aiokafka.errors import BrokerResponseError

from consent_ledger.settings import Settings, SettingsError


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How a client reaches the brokers: the security protocol, the SASL
    mechanism and credentials, and the TLS context trusting the CA."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            options["ssl_context"] = self.ssl_context
        if self.mechanism is not None:
            options |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return options


PLAINTEXT = KafkaSecurity()


@functools.lru_cache(maxsize=8)
def kafka_security(settings: Settings) -> KafkaSecurity:
    """The transport ``settings`` name, with the password file read and the CA
    loaded (once per process: the API asks on every readiness probe).

    Raises :class:`SettingsError` (one line, naming the variable) when the
    password or CA file cannot be read or used. The combinations themselves
    were checked when the settings were read."""
    protocol = settings.kafka_security_protocol
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        # The system's trusted CAs unless a CA file is named; the broker's
        # certificate must match the host name it is reached by.
        ca_file = settings.kafka_ca_file
        try:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise SettingsError(
                f"LEDGER_KAFKA_CA_FILE={ca_file}: cannot load it as PEM certificates: {exc}"
            ) from None
    if not protocol.startswith("SASL_"):
        return KafkaSecurity(protocol, ssl_context=context)
    password_file = settings.kafka_sasl_password_file
    assert password_file is not None  # Settings.from_env refuses SASL without it
    try:
        password = password_file.read_text("utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"LEDGER_KAFKA_SASL_PASSWORD_FILE={password_file}: cannot read it: {exc}"
        ) from None
    if not password:
        raise SettingsError(f"LEDGER_KAFKA_SASL_PASSWORD_FILE={password_file} is empty")
    return KafkaSecurity(
        protocol,
        mechanism=settings.kafka_sasl_mechanism,
        username=settings.kafka_sasl_username,
        password=password,
        ssl_context=context,
    )


PRODUCER_MAX_REQUEST_BYTES = 1_048_576
"""The largest message the ledger's producers send (aiokafka's default, set
explicitly: copies of rejected records are cut to fit it)."""


class IdempotenceRefused(RuntimeError):
    """The broker would not start an idempotent producer (the embedded one never does)."""


def make_producer(settings: Settings, *, client_id: str = "consent-ledger") -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica: an event is published
    when the broker says so, not before. Start it with :func:`start_producer`."""
    if not settings.kafka_bootstrap:
        raise ValueError("LEDGER_KAFKA_BOOTSTRAP is not set")
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka_idempotence is not False,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=30_000,
        max_request_size=PRODUCER_MAX_REQUEST_BYTES,
        **kafka_security(settings).client_options(),
    )


async def start_producer(producer: AIOKafkaProducer, settings: Settings) -> None:
    """Start a producer made by :func:`make_producer` from ``settings``, or stop it
    again and raise. A broker that refuses an idempotent producer raises
    :class:`IdempotenceRefused`, which says what to set: aiokafka reports only an
    unknown error of InitProducerId."""
    try:
        await producer.start()
    except BaseException as exc:
        await producer.stop()
        # A broker's answer (not unreachable, timed out or cancelled) to an idempotent producer.
        if isinstance(exc, BrokerResponseError) and settings.kafka_idempotence is not False:
            raise IdempotenceRefused(
                f"the broker refused an idempotent producer ({exc}). Apache Kafka accepts one; "
                "the embedded broker of `consent-ledger dev` does not: there, set "
                "LEDGER_KAFKA_IDEMPOTENCE=false (LedgerProducer: enable_idempotence=False)"
            ) from exc
        raise


async def send_all(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]]]],
) -> int:
    """Send (key, value, headers) messages and wait until the broker acknowledged
    every one; return how many were sent. Raises on the first failure."""
    futures = [
        await producer.send(topic, value=value, key=key, headers=list(headers) or None)
        for key, value, headers in messages
    ]
    for future in futures:
        await future
    return len(futures)


# What a broker (or the producer, checking first) answers when it will never
# take a message, however often it is sent: the message itself is at fault.
REFUSED_FOR_GOOD = (
    errors.MessageSizeTooLargeError,
    errors.RecordTooLargeError,
    errors.RecordListTooLargeError,
    errors.InvalidMessageError,  # corrupt record
    errors.InvalidTopicError,
    errors.InvalidTimestampError,
    errors.UnsupportedForMessageFormatError,
)

OutgoingMessage = tuple[str, bytes | None, bytes, Sequence[tuple[str, bytes]]]


async def send_each(
    producer: AIOKafkaProducer, messages: Sequence[OutgoingMessage]
) -> list[BaseException | None]:
    """Send (topic, key, value, headers) messages in order and wait for every
    answer; return, per message, None when the broker acknowledged it, else the
    error. A message refused for good (:data:`REFUSED_FOR_GOOD`) does not stop
    the others; any other error from handing a message to the producer (an
    unreachable broker: each would wait out the request timeout) leaves it and
    every later message unsent, with that error."""
    pending: list[asyncio.Future[object] | BaseException] = []
    for topic, key, value, headers in messages:
        try:
            pending.append(
                await producer.send(topic, value=value, key=key, headers=list(headers) or None)
            )
        except REFUSED_FOR_GOOD as refused:
            pending.append(refused)
        except Exception as failure:  # the rest are unsent, for a later pass
            pending += [failure] * (len(messages) - len(pending))
            break
    outcomes: list[BaseException | None] = []
    for item in pending:
        if isinstance(item, BaseException):
            outcomes.append(item)
            continue
        try:
            await item
        except Exception as failure:  # reported per message
            outcomes.append(failure)
        else:
            outcomes.append(None)
    return outcomes


async def end_offsets(
    bootstrap: str, topic: str, security: KafkaSecurity = PLAINTEXT
) -> dict[int, int]:
    """The log-end offset of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, **security.client_options()
    )
    try:
        await consumer.start()
        await consumer.topics()  # fetches the cluster metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()
