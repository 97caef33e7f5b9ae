"""The analysts' reports (CONTRACT §8): what they count, by what, over which time.

Pure: the choices a report offers and the arithmetic of its buckets. The
counting itself is one SQL statement per report (``store/reports.py``), done
where the rows are; :func:`bucket_start` is the same arithmetic in Python, which
the statements must agree with (the tests hold them to it).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, NamedTuple

HOUR_US: Final = 3_600_000_000
DAY_US: Final = 24 * HOUR_US
WEEK_US: Final = 7 * DAY_US
#: 1970-01-05T00:00:00Z, the first Monday after the epoch: ISO weeks start on a
#: Monday, so week buckets are counted from one. It is also a day's and an hour's
#: start, so one origin serves every bucket.
MONDAY_US: Final = 4 * DAY_US


class Bucket(StrEnum):
    """The span of time a report's counts are summed over, in UTC."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"  # ISO: from Monday 00:00 UTC

    @property
    def micros(self) -> int:
        return _WIDTH[self]


_WIDTH: Final = {Bucket.HOUR: HOUR_US, Bucket.DAY: DAY_US, Bucket.WEEK: WEEK_US}


class ViolationGroup(StrEnum):
    """What the violations report counts by. ``rule``, ``clause`` and ``severity``
    are the violation's own; ``recipient_kind``, ``recipient`` and ``purpose`` are
    its disclosure's, so a violation of a visitor registration, or of a subject
    since erased (whose disclosures the ledger no longer keeps), has none."""

    RULE = "rule"
    CLAUSE = "clause"
    RECIPIENT_KIND = "recipient_kind"
    RECIPIENT = "recipient"
    PURPOSE = "purpose"
    SEVERITY = "severity"


class DisclosureGroup(StrEnum):
    """What the disclosures report counts by. A disclosure of several data
    categories counts once in each (once, if it names one twice)."""

    RECIPIENT_KIND = "recipient_kind"
    RECIPIENT = "recipient"
    PURPOSE = "purpose"
    DATA_CATEGORY = "data_category"


class TimeRange(NamedTuple):
    """Event times from ``since`` (inclusive) to ``until`` (exclusive), in
    microseconds since the epoch; None leaves that end open."""

    since: int | None
    until: int | None

    @property
    def empty(self) -> bool:
        return self.since is not None and self.until is not None and self.since >= self.until


ALL_TIME: Final = TimeRange(None, None)


def bucket_start(micros: int, bucket: Bucket) -> int:
    """The start of the UTC hour, day or ISO week holding the instant ``micros``."""
    return micros - (micros - MONDAY_US) % bucket.micros


class ViolationCount(NamedTuple):
    """Violations of one bucket and group: ``opened`` counts every violation whose
    event falls in it, ``retracted`` those of them retracted since, so that
    ``opened - retracted`` summed over buckets is what is open now.
    ``recipient_kind`` is set only when grouping by recipient (an id names a
    recipient within its kind); ``group`` is None when the violation has no such
    attribute (see :class:`ViolationGroup`)."""

    bucket: int  # start, microseconds since the epoch
    group: str | None
    recipient_kind: str | None
    opened: int
    retracted: int


class DisclosureCount(NamedTuple):
    """Disclosures of one group, and how many of them broke a rule: have a
    violation open now. One whose violations were all retracted (a later consent or
    policy version cleared it) broke none, as the ledger judges it now."""

    group: str
    recipient_kind: str | None  # only when grouping by recipient
    disclosures: int
    violating: int
