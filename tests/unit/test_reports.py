"""The reports' buckets (core/reports.py) and what the statements keep to use
migration 018 (store/reports.py)."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from consent_ledger.core.reports import Bucket, TimeRange, bucket_start
from consent_ledger.core.timestamps import format_micros, parse_instant
from consent_ledger.store.reports import VIOLATION_REPORT, bucket_expression

pytestmark = [pytest.mark.unit]


@pytest.mark.parametrize(
    ("time", "bucket", "start"),
    [
        ("2026-03-01T23:59:59.999999Z", Bucket.HOUR, "2026-03-01T23:00:00Z"),
        ("2026-03-01T23:59:59.999999Z", Bucket.DAY, "2026-03-01T00:00:00Z"),
        # Sunday belongs to the ISO week that began the Monday before.
        ("2026-03-01T23:59:59.999999Z", Bucket.WEEK, "2026-02-23T00:00:00Z"),
        ("2026-03-02T00:00:00Z", Bucket.WEEK, "2026-03-02T00:00:00Z"),
        ("2026-03-02T01:30:00+01:00", Bucket.DAY, "2026-03-02T00:00:00Z"),
        ("2026-03-02T00:30:00-01:00", Bucket.DAY, "2026-03-02T00:00:00Z"),
        # Before the epoch and before the first Monday after it.
        ("1970-01-04T12:00:00Z", Bucket.WEEK, "1969-12-29T00:00:00Z"),
        ("1969-12-31T23:30:00Z", Bucket.HOUR, "1969-12-31T23:00:00Z"),
        ("0001-01-03T00:00:00Z", Bucket.WEEK, "0001-01-01T00:00:00Z"),
    ],
)
def test_a_bucket_starts_at_the_utc_hour_day_or_monday(
    time: str, bucket: Bucket, start: str
) -> None:
    assert format_micros(bucket_start(parse_instant(time), bucket)) == start


def test_a_range_is_empty_when_it_ends_where_it_starts() -> None:
    assert TimeRange(5, 5).empty
    assert TimeRange(6, 5).empty
    assert not TimeRange(5, 6).empty
    assert not TimeRange(None, 5).empty


def test_migration_018_keeps_statistics_on_the_exact_bucket_expressions() -> None:
    """Statistics serve only the expression written the same way: each bucket's
    expression in the statements is the one the migration keeps statistics on."""
    migration = (
        resources.files("consent_ledger.store")
        .joinpath("migrations/018_report_indexes.sql")
        .read_text("utf-8")
    )
    kept = {
        " ".join(expression.split())
        for expression in re.findall(r"ON\s+\((.+?)\)\s+FROM violations", migration, re.S)
    }
    assert kept == {bucket_expression(bucket) for bucket in Bucket}
    for (_, bucket, _, _), statement in VIOLATION_REPORT.items():
        assert bucket_expression(bucket, "v.occurred_us") in statement
