"""The analysts' reports (CONTRACT §8) as one SQL statement each, grouped in PostgreSQL.

A million violations must not travel to Python to be counted: each report is
one ``GROUP BY`` over the read models, and only its cells come back. Buckets are
integer arithmetic on the event time in microseconds (``occurred_us``), counted
from a Monday (:data:`~consent_ledger.core.reports.MONDAY_US`) as
:func:`~consent_ledger.core.reports.bucket_start` counts them: no time zone, no
conversion per row.

What migration 018 gives these statements, and what they must keep to use it:

- ``violations_by_time`` and ``disclosures_by_time``, both on
  ``(occurred_us, event_id)`` and covering the columns grouped by, so a range of
  event times is read from the index alone, and a violation meets its disclosure
  by a merge of the two in the same order. A violation's ``occurred_us`` is its
  event's, so joining on both columns finds the same disclosure as on the id.
- Statistics on each bucket expression, so that the planner knows a year holds
  365 days rather than guessing a million groups (and sorting a million rows on
  disk instead of hashing them). They match only the exact expression: the
  width and origin are written into the statement (:func:`bucket_expression`),
  not bound as parameters.

One statement text per (grouping, bucket, which ends of the time range are
given), rather than ``($n IS NULL OR ...)``: a prepared statement's generic
plan of the latter could not choose between reading the whole table and a range.

A report that joins violations and disclosures runs with hash joins and
parallel workers off, in its transaction only (``SET LOCAL``): over all time
the planner prefers hashing a million rows, which spills to disk at the default
``work_mem``, to merging the two indexes it can read in the same order; and a
parallel merge reads the whole disclosures index once in every worker. For a
million violations and 1.3 million disclosures, by recipient kind per day, at
the same moment: hashing 1.3-1.5 s, a parallel merge 0.9-1.1 s, a merge in one
process 0.9-1.0 s, on one core rather than three (bench/RESULTS.md). Over a
range the planner merges anyway.
"""

from __future__ import annotations

from itertools import product
from typing import Any, Final, NamedTuple

import asyncpg

from consent_ledger.core.reports import (
    MONDAY_US,
    Bucket,
    DisclosureCount,
    DisclosureGroup,
    TimeRange,
    ViolationCount,
    ViolationGroup,
)

VIOLATION_GROUPS: Final = tuple(ViolationGroup)
DISCLOSURE_GROUPS: Final = tuple(DisclosureGroup)


class _Grouping(NamedTuple):
    group: str  # SQL expression of the group
    recipient_kind: str  # SQL expression of the recipient kind, or NULL
    joins: str  # what the FROM clause needs beside the table


_NO_KIND: Final = "NULL::text"
# A violation's disclosure: none for a visitor registration or an erased subject.
# Conditions on the event time are added to it as to the violations (:func:`_violation_statement`).
_ITS_DISCLOSURE: Final = (
    "LEFT JOIN disclosures AS d ON d.occurred_us = v.occurred_us AND d.event_id = v.event_id"
)

_VIOLATION_GROUPING: Final = {
    ViolationGroup.RULE: _Grouping("v.rule", _NO_KIND, ""),
    ViolationGroup.CLAUSE: _Grouping("v.clause", _NO_KIND, ""),
    ViolationGroup.SEVERITY: _Grouping("v.severity", _NO_KIND, ""),
    ViolationGroup.RECIPIENT_KIND: _Grouping("d.recipient_kind", _NO_KIND, _ITS_DISCLOSURE),
    ViolationGroup.RECIPIENT: _Grouping("d.recipient_id", "d.recipient_kind", _ITS_DISCLOSURE),
    ViolationGroup.PURPOSE: _Grouping("d.purpose", _NO_KIND, _ITS_DISCLOSURE),
}

# Each category a disclosure names, once: the first place it stands in the array.
_EACH_CATEGORY: Final = (
    "CROSS JOIN LATERAL unnest(d.data_categories) WITH ORDINALITY AS c(category, place)"
)
_DISCLOSURE_GROUPING: Final = {
    DisclosureGroup.RECIPIENT_KIND: _Grouping("d.recipient_kind", _NO_KIND, ""),
    DisclosureGroup.RECIPIENT: _Grouping("d.recipient_id", "d.recipient_kind", ""),
    DisclosureGroup.PURPOSE: _Grouping("d.purpose", _NO_KIND, ""),
    DisclosureGroup.DATA_CATEGORY: _Grouping("c.category", _NO_KIND, _EACH_CATEGORY),
}


def bucket_expression(bucket: Bucket, column: str = "occurred_us") -> str:
    """The start of the bucket holding ``column``, in microseconds: ``column`` less
    its floor modulo the width, counted from a Monday (right before it too).
    Migration 018 keeps statistics on exactly this expression per bucket."""
    width, origin = bucket.micros, MONDAY_US
    return f"{column} - (({column} - {origin}) % {width} + {width}) % {width}"


def _time_conditions(column: str, since: bool, until: bool) -> list[str]:
    """Conditions on the event time for the ends of the range given ($1 the first)."""
    conditions = []
    if since:
        conditions.append(f"{column} >= $1")
    if until:
        conditions.append(f"{column} < ${1 + since}")
    return conditions


def _where(conditions: list[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _violation_statement(grouping: _Grouping, bucket: Bucket, since: bool, until: bool) -> str:
    joins = grouping.joins
    if joins:  # the disclosures of the same range: their index is read for it alone
        joins = " AND ".join([joins, *_time_conditions("d.occurred_us", since, until)])
    return f"""
SELECT {bucket_expression(bucket, "v.occurred_us")} AS bucket,
       {grouping.group} AS "group", {grouping.recipient_kind} AS recipient_kind,
       count(*) AS opened, count(*) FILTER (WHERE v.status = 'retracted') AS retracted
FROM violations AS v {joins}
{_where(_time_conditions("v.occurred_us", since, until))}
GROUP BY 1, 2, 3
ORDER BY 1, 2 NULLS LAST, 3
LIMIT ${1 + since + until}
"""  # noqa: S608 (fixed expressions, no input)


def _disclosure_statement(grouping: _Grouping, since: bool, until: bool) -> str:
    # The open violations' events joined, not "event_id IN (subquery)": unless the
    # ids fit in work_mem, that subquery is run again for every disclosure.
    conditions = _time_conditions("d.occurred_us", since, until)
    open_events = f"""LEFT JOIN (
    SELECT DISTINCT occurred_us, event_id FROM violations AS v
    {_where(["v.status = 'open'", *_time_conditions("v.occurred_us", since, until)])}
) AS o ON o.occurred_us = d.occurred_us AND o.event_id = d.event_id"""  # noqa: S608 (fixed)
    if grouping.joins == _EACH_CATEGORY:
        # Counted per list of categories first (a few distinct lists), then each
        # list's categories: unnesting a million arrays costs more than the count.
        return f"""
SELECT c.category AS "group", NULL::text AS recipient_kind,
       sum(lists.disclosures)::bigint AS disclosures, sum(lists.violating)::bigint AS violating
FROM (
    SELECT d.data_categories, count(*) AS disclosures, count(o.event_id) AS violating
    FROM disclosures AS d {open_events}
    {_where(conditions)}
    GROUP BY d.data_categories
) AS lists
CROSS JOIN LATERAL unnest(lists.data_categories) WITH ORDINALITY AS c(category, place)
WHERE array_position(lists.data_categories, c.category) = c.place
GROUP BY 1, 2
ORDER BY 1, 2
LIMIT ${1 + since + until}
"""  # noqa: S608 (fixed expressions, no input)
    return f"""
SELECT {grouping.group} AS "group", {grouping.recipient_kind} AS recipient_kind,
       count(*) AS disclosures, count(o.event_id) AS violating
FROM disclosures AS d {open_events}
{_where(conditions)}
GROUP BY 1, 2
ORDER BY 1, 2
LIMIT ${1 + since + until}
"""  # noqa: S608 (fixed expressions, no input)


_ENDS: Final = tuple(product((False, True), repeat=2))

VIOLATION_REPORT: Final[dict[tuple[ViolationGroup, Bucket, bool, bool], str]] = {
    (group, bucket, since, until): _violation_statement(
        _VIOLATION_GROUPING[group], bucket, since, until
    )
    for group in ViolationGroup
    for bucket in Bucket
    for since, until in _ENDS
}
"""The statement per (grouping, bucket, ``from`` given, ``to`` given)."""

DISCLOSURE_REPORT: Final[dict[tuple[DisclosureGroup, bool, bool], str]] = {
    (group, since, until): _disclosure_statement(_DISCLOSURE_GROUPING[group], since, until)
    for group in DisclosureGroup
    for since, until in _ENDS
}
"""The statement per (grouping, ``from`` given, ``to`` given)."""


def _bounds(span: TimeRange) -> list[int]:
    return [end for end in span if end is not None]


MERGE_NOT_HASH: Final = (
    "SELECT set_config('enable_hashjoin', 'off', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)"
)
AS_BEFORE: Final = (
    "SELECT set_config('enable_hashjoin', $1, true),"
    " set_config('max_parallel_workers_per_gather', $2, true)"
)
SETTINGS: Final = (
    "SELECT current_setting('enable_hashjoin'), current_setting('max_parallel_workers_per_gather')"
)


async def _merged(connection: asyncpg.Connection, statement: str, *args: object) -> list[Any]:
    """The rows of ``statement``, its joins merged rather than hashed (see above);
    in the caller's transaction, or one of its own."""
    if not connection.is_in_transaction():
        async with connection.transaction():
            return await _merged(connection, statement, *args)
    before = await connection.fetchrow(SETTINGS)
    await connection.execute(MERGE_NOT_HASH)
    rows = list(await connection.fetch(statement, *args))
    # On failure the transaction is aborted, and the settings end with it.
    await connection.execute(AS_BEFORE, *before)
    return rows


async def violation_report(
    connection: asyncpg.Connection,
    bucket: Bucket,
    group: ViolationGroup,
    span: TimeRange,
    limit: int,
) -> list[ViolationCount]:
    """Violations opened and retracted per bucket of their events' time and per
    group, by bucket then group (no group last), the first ``limit`` cells."""
    key = (group, bucket, span.since is not None, span.until is not None)
    statement = VIOLATION_REPORT[key]
    if _VIOLATION_GROUPING[group].joins:
        rows = await _merged(connection, statement, *_bounds(span), limit)
    else:
        rows = await connection.fetch(statement, *_bounds(span), limit)
    return [ViolationCount(*row) for row in rows]


async def disclosure_report(
    connection: asyncpg.Connection, group: DisclosureGroup, span: TimeRange, limit: int
) -> list[DisclosureCount]:
    """Disclosures per group whose event time is in ``span``, and how many of them
    have a violation open now, by group, the first ``limit`` groups."""
    key = (group, span.since is not None, span.until is not None)
    if group == DisclosureGroup.DATA_CATEGORY:  # reads the table for the arrays: hashes
        rows = await connection.fetch(DISCLOSURE_REPORT[key], *_bounds(span), limit)
    else:
        rows = await _merged(connection, DISCLOSURE_REPORT[key], *_bounds(span), limit)
    return [DisclosureCount(*row) for row in rows]
