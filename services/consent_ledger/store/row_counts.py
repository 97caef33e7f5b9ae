"""The kept counts of ledger entries, rejected records and violations.

``/v1/stats`` and ``/metrics`` used to count the rows of ``violations``,
``ledger_entries`` and ``rejected_events`` on every call: a sequential scan per
scrape, linear in the ledger. Migration 021 keeps those counts instead, as
delta rows in ``row_counts`` that statement triggers add in the same
transaction as the rows they count (whoever writes them: the worker's batch,
re-judging, erasure, ``rebuild --swap``), so a count read here is exactly the
count of the rows in the same snapshot. A read sums the deltas; the worker
folds them now and then (:data:`COMPACT`) so that the sum stays small.

:func:`count_differences` holds the kept counts against a full count;
``rebuild`` reports them and ``--swap`` resets them (:func:`recount`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import asyncpg

COUNTED: Final = ("ledger_entries", "rejected_events", "violations")

# The key of each counted table's rows, as migration 021's triggers build it.
_KEYS: Final = {
    "ledger_entries": "ARRAY[type]",
    "rejected_events": "ARRAY[reason]",
    "violations": "ARRAY[rule, severity, clause, status]",
}

KEPT: Final = """
SELECT counted, key, sum(n)::bigint AS n FROM row_counts
GROUP BY counted, key HAVING sum(n) <> 0
"""

FULL: Final = " UNION ALL ".join(
    f"SELECT '{table}' AS counted, {key} AS key, count(*) AS n FROM {table} GROUP BY 2"  # noqa: S608 (fixed names)
    for table, key in _KEYS.items()
)

# Every delta folded into one row per key, in one statement: a snapshot sees the
# deltas or their sum, never both. Two folds at once are safe under READ
# COMMITTED: the second skips the rows the first deleted.
COMPACT: Final = """
WITH folded AS (DELETE FROM row_counts RETURNING counted, key, n)
INSERT INTO row_counts (counted, key, n)
SELECT counted, key, sum(n) FROM folded GROUP BY counted, key HAVING sum(n) <> 0
"""

# How many batches a worker commits between two folds: a batch adds a handful
# of deltas, so the sum at read stays at a few thousand rows at most.
COMPACT_EVERY_BATCHES: Final = 200

RECOUNT: Final = (
    "DELETE FROM row_counts",
    f"INSERT INTO row_counts (counted, key, n) {FULL}",
)

Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RowCounts:
    """Rows per key of each counted table (keys with no rows left out)."""

    entries_by_type: dict[str, int]
    rejected_by_reason: dict[str, int]
    violations: dict[Key, int]  # (rule, severity, clause, status)

    def violations_by_status(self) -> dict[str, int]:
        return self._violations_by(3)

    def violations_by_severity(self) -> dict[str, int]:
        """Violations ever opened (open or retracted now), by severity."""
        return self._violations_by(1)

    def violations_by_rule_and_status(self) -> list[dict[str, object]]:
        """Rows (rule, status, n) ordered by rule and status, as the old GROUP BY gave them."""
        totals: dict[tuple[str, str], int] = {}
        for (rule, _, _, status), n in self.violations.items():
            totals[rule, status] = totals.get((rule, status), 0) + n
        return [
            {"rule": rule, "status": status, "n": n} for (rule, status), n in sorted(totals.items())
        ]

    def _violations_by(self, part: int) -> dict[str, int]:
        """Totals by one part of the key (1: severity, 3: status)."""
        totals: dict[str, int] = {}
        for key, n in self.violations.items():
            totals[key[part]] = totals.get(key[part], 0) + n
        return dict(sorted(totals.items()))


def _counts(rows: list[asyncpg.Record]) -> dict[str, dict[Key, int]]:
    by_table: dict[str, dict[Key, int]] = {table: {} for table in COUNTED}
    for row in rows:
        by_table[row["counted"]][tuple(row["key"])] = row["n"]
    return by_table


def _row_counts(by_table: dict[str, dict[Key, int]]) -> RowCounts:
    return RowCounts(
        entries_by_type={key[0]: n for key, n in sorted(by_table["ledger_entries"].items())},
        rejected_by_reason={key[0]: n for key, n in sorted(by_table["rejected_events"].items())},
        violations=by_table["violations"],
    )


async def kept_counts(connection: asyncpg.Connection) -> RowCounts:
    """The kept counts, as of the caller's snapshot."""
    return _row_counts(_counts(await connection.fetch(KEPT)))


async def full_counts(connection: asyncpg.Connection) -> RowCounts:
    """The same counts by counting every row (a scan of each table: for checks)."""
    return _row_counts(_counts(await connection.fetch(FULL)))


@dataclass(frozen=True, slots=True)
class CountDrift:
    """A key whose kept count is not the number of its rows."""

    counted: str
    key: Key
    kept: int
    rows: int

    def describe(self) -> str:
        return f"row_counts {self.counted} {list(self.key)}: kept {self.kept}, rows {self.rows}"


async def count_differences(connection: asyncpg.Connection) -> list[CountDrift]:
    """Every key whose kept count differs from a full count of its rows."""
    kept = _counts(await connection.fetch(KEPT))
    full = _counts(await connection.fetch(FULL))
    return [
        CountDrift(table, key, kept[table].get(key, 0), full[table].get(key, 0))
        for table in COUNTED
        for key in sorted(kept[table].keys() | full[table].keys())
        if kept[table].get(key, 0) != full[table].get(key, 0)
    ]


async def recount(connection: asyncpg.Connection) -> None:
    """Replace the kept counts by a full count, in the caller's transaction (which
    must keep writers out: ``rebuild --swap`` holds batches off)."""
    for statement in RECOUNT:
        await connection.execute(statement)


async def compact(connection: asyncpg.Connection) -> None:
    """Fold the deltas into one row per key (its own statement: autocommit or the
    caller's READ COMMITTED transaction)."""
    await connection.execute(COMPACT)
