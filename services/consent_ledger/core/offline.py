"""The whole ledger in memory, for ``consent-ledger check``: no broker, no database.

Runs the same intake and subject files as the stream worker, over the lines of
a file in order, and reports the open violations, the rejected lines and the
counts of CONTRACT §5.

An id's first event is only remembered by where its line starts in the file:
its content digest is computed when the id comes again (rare), not for every
event, and a line's offset takes half the memory of a digest. A file that
cannot be read again (a pipe) has its digests kept instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from consent_ledger.core.facts import fact_of
from consent_ledger.core.intake import (
    Rejection,
    admit,
    content_digest,
    parse_json_object,
    validate,
)
from consent_ledger.core.policy import Policy, PolicyVersions, as_versions
from consent_ledger.core.timeline import SubjectFile, Violation


@dataclass(frozen=True, slots=True)
class RejectedLine:
    line: int
    rejection: Rejection


@dataclass(slots=True)
class Counts:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0


@dataclass(slots=True)
class OfflineLedger:
    """Accepts events one by one and keeps every subject's file in memory.

    ``policy`` is a set of versions, or one policy in force always."""

    policy: PolicyVersions | Policy
    counts: Counts = field(default_factory=Counts)
    rejected: list[RejectedLine] = field(default_factory=list)
    # Accepted ids: where the event's line starts in the file, or its digest.
    _accepted: dict[str, int | bytes] = field(default_factory=dict)
    _files: dict[str, SubjectFile] = field(default_factory=dict)
    _source: int | None = None  # the file descriptor lines are read again from
    _versions: PolicyVersions = field(init=False)

    def __post_init__(self) -> None:
        self._versions = as_versions(self.policy)

    def ingest(self, raw: bytes | str, line: int, offset: int | None = None) -> None:
        """Validate, admit and judge one record; ``line`` is its 1-based position,
        ``offset`` where it starts in the file being read, if it can be read again."""
        checked = validate(raw)
        if isinstance(checked, Rejection):
            self._reject(line, checked)
            return
        earlier = self._accepted.get(checked.id)
        if earlier is not None:
            admission = admit(checked, content_digest(checked.body), self._digest_of(earlier))
            if isinstance(admission, Rejection):
                self._reject(line, admission)
            else:
                self.counts.duplicates += 1
            return
        self.counts.accepted += 1
        self._accepted[checked.id] = (
            offset if offset is not None and self._source is not None
            else content_digest(checked.body)
        )  # fmt: skip
        subject = self._files.get(checked.subject)
        if subject is None:
            subject = self._files[checked.subject] = SubjectFile(checked.subject)
        subject.record(fact_of(checked, seq=line), self._versions)

    def ingest_lines(self, lines: Iterable[bytes]) -> None:
        """Ingest every non-blank line, numbering lines from 1."""
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                self.ingest(raw, number)

    def ingest_file(self, source: BinaryIO) -> None:
        """Ingest every non-blank line of an open file, numbering lines from 1."""
        self._source = source.fileno() if source.seekable() else None
        offset = 0
        for number, raw in enumerate(source, start=1):
            if not _blank(raw):
                self.ingest(raw, number, offset)
            offset += len(raw)

    def _digest_of(self, accepted: int | bytes) -> bytes:
        if isinstance(accepted, bytes):
            return accepted
        assert self._source is not None
        body = parse_json_object(_line_at(self._source, accepted))  # valid: it was accepted
        return content_digest(body)

    def _reject(self, line: int, rejection: Rejection) -> None:
        self.counts.rejected += 1
        self.rejected.append(RejectedLine(line, rejection))

    @property
    def files(self) -> dict[str, SubjectFile]:
        """Every subject's file, by subject."""
        return self._files

    def open_violations(self) -> list[Violation]:
        """Open violations sorted by (event_id, rule)."""
        found = [
            violation
            for subject in self._files.values()
            for by_rule in subject.open.values()
            for violation in by_rule.values()
        ]
        return sorted(found, key=lambda violation: violation.key)


def _blank(line: bytes) -> bool:
    """Whether a line read from a file (never empty) is only white space: an
    event's line starts with ``{``, and is not copied to find out."""
    return line[0] != 0x7B and not line.strip()


def _line_at(descriptor: int, offset: int) -> bytes:
    """The line starting at ``offset`` in a file, read without moving its position."""
    chunks: list[bytes] = []
    while True:
        chunk = os.pread(descriptor, 65_536, offset)
        end = chunk.find(b"\n")
        if end >= 0 or not chunk:
            chunks.append(chunk[:end] if end >= 0 else chunk)
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)
