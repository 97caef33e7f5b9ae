"""``consent-ledger publish``: send a JSON Lines file's events to ``ledger.events``.

Without ``raw`` every line is checked first (CONTRACT §2, all but id-conflict)
and only valid events are sent; rejected lines are reported. With ``raw`` every
non-blank line goes out as it is, for testing what the ledger does with bad
input. Records are keyed by subject when the line names one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from consent_ledger.core.intake import Rejection, subject_named_in, validate
from consent_ledger.kafka import make_producer, send_all, start_producer
from consent_ledger.settings import Settings


@dataclass(slots=True)
class PublishReport:
    sent: int = 0
    rejected: list[tuple[int, Rejection]] = field(default_factory=list)


def read_messages(
    path: Path, *, raw: bool
) -> tuple[list[tuple[bytes | None, bytes, tuple[()]]], PublishReport]:
    """The (key, value, headers) messages a file yields, and the lines refused."""
    report = PublishReport()
    messages: list[tuple[bytes | None, bytes, tuple[()]]] = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            if raw:
                subject = subject_named_in(line)
                messages.append((subject.encode() if subject else None, line, ()))
                continue
            checked = validate(line)
            if isinstance(checked, Rejection):
                report.rejected.append((number, checked))
            else:
                messages.append((checked.subject.encode(), line, ()))
    return messages, report


async def publish_file(settings: Settings, path: Path, *, raw: bool) -> PublishReport:
    messages, report = read_messages(path, raw=raw)
    producer = make_producer(settings, client_id="consent-ledger-publish")
    await start_producer(producer, settings)
    try:
        report.sent = await send_all(producer, settings.events_topic, messages)
    finally:
        await producer.stop()
    return report
