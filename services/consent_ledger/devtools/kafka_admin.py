"""Talking to a broker before any client library does: a Kafka ``Metadata``
probe (is something Kafka-like listening?) and topic creation."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from consent_ledger.kafka import KafkaSecurity

log = structlog.get_logger(__name__)

_KAFKA_METADATA_API_KEY = 3
_KAFKA_TOPIC_ALREADY_EXISTS = 36


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks.extend(chunk)
    return bytes(chunks)


def probe_kafka_metadata(host: str, port: int, *, timeout: float = 1.0) -> tuple[str, int]:
    """Send one Kafka ``Metadata`` (v1) request; return the first advertised broker.

    Raises ``OSError`` (or ``ConnectionError``) when nothing Kafka-like answers.
    """
    correlation_id = 0x1ED6E5
    client_id = b"consent-ledger-probe"
    # Request header v1 (api key, api version, correlation id, client id),
    # then the v1 body: a null topic array, meaning "all topics".
    request = (
        struct.pack(">hhih", _KAFKA_METADATA_API_KEY, 1, correlation_id, len(client_id))
        + client_id
        + struct.pack(">i", -1)
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
        response = _recv_exactly(sock, size)
    answered_id, broker_count = struct.unpack_from(">ii", response, 0)
    if answered_id != correlation_id or broker_count < 1:
        raise ConnectionError(f"unexpected metadata response from {host}:{port}")
    _node_id, host_length = struct.unpack_from(">ih", response, 8)
    advertised_host = response[14 : 14 + host_length].decode("utf-8")
    (advertised_port,) = struct.unpack_from(">i", response, 14 + host_length)
    return advertised_host, advertised_port


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    ready_within: float = 30.0,
    security: KafkaSecurity | None = None,
) -> None:
    """Create each topic with its partition count unless it exists; wait until usable.

    A topic that already exists is left as it is (a different partition count is
    logged, not changed). Returns once the broker's metadata lists every topic with
    a leader for each partition; raises ``TimeoutError`` after ``ready_within`` seconds.
    ``security`` is the transport to the brokers (plain text when None).
    """
    if not topics:
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    deadline = time.monotonic() + ready_within
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(ready_within * 1000),
        **(security.client_options() if security is not None else {}),
    )
    await admin.start()
    try:
        new_topics = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name, partitions in topics.items()
        ]
        try:
            response = await admin.create_topics(new_topics)
        except TopicAlreadyExistsError:
            response = None
        for name, code, message in getattr(response, "topic_errors", ()):
            if code not in (0, _KAFKA_TOPIC_ALREADY_EXISTS):
                raise for_code(code)(f"creating topic {name!r}: {message}")
        await _wait_for_topics(admin, topics, deadline)
    finally:
        await admin.close()


async def _wait_for_topics(admin: Any, topics: Mapping[str, int], deadline: float) -> None:
    pending = dict(topics)
    while True:
        descriptions = await admin.describe_topics(list(pending))
        for description in descriptions:
            name = description["topic"]
            partitions = description["partitions"]
            if description["error_code"] != 0 or not partitions:
                continue
            if any(p["leader"] < 0 for p in partitions):
                continue
            if len(partitions) != pending.get(name, len(partitions)):
                log.warning(
                    "ensure_topics.partition_mismatch",
                    topic=name,
                    wanted=pending[name],
                    existing=len(partitions),
                )
            pending.pop(name, None)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics not ready on the broker: {sorted(pending)}")
        await asyncio.sleep(0.05)
