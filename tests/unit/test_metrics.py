"""The Prometheus page's new families: batch latency as a histogram kept in
slots per partition, and violations opened by severity."""

from __future__ import annotations

import pytest

from consent_ledger.api.metrics import LedgerFigures, exposition
from consent_ledger.store.batch_write import BATCH_SECONDS_BOUNDS, latency_slot
from consent_ledger.store.outbox import OutboxHealth

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("seconds", "slot"),
    [(0.0, 1), (0.005, 1), (0.0051, 2), (1.0, 8), (10.0, 11), (10.5, 12), (3600.0, 12)],
)
def test_a_batch_counts_in_the_slot_of_the_least_bound_at_or_above_it(
    seconds: float, slot: int
) -> None:
    assert latency_slot(seconds) == slot
    assert slot <= len(BATCH_SECONDS_BOUNDS) + 1  # the column's length (migration 020)


def figures(batch_times: list[dict[str, object]], by_severity: dict[str, int]) -> LedgerFigures:
    return LedgerFigures(
        topic="ledger.events",
        entries_by_type={},
        rejected_by_reason={},
        violations_by_rule=[],
        violations_by_severity=by_severity,
        totals={"accepted": 0, "duplicates": 0, "rejected": 0},
        batch_times=batch_times,
        lag=None,
        requests=[],
        outbox=OutboxHealth(0, 0.0, 0, 0.0),
    )


def test_the_histogram_is_cumulative_and_its_inf_bucket_counts_every_batch() -> None:
    slots = [2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1]  # 2 at <= 5 ms, 1 at <= 25 ms, 1 over 10 s
    row = {
        "kafka_partition": 3,
        "batches": 5,
        "batch_seconds": 12.5,
        "batch_seconds_buckets": slots,
    }
    lines = exposition(figures([row], {})).splitlines()
    labels = 'topic="ledger.events",partition="3"'
    name = "consent_ledger_batch_duration_seconds"
    assert f"# TYPE {name} histogram" in lines
    buckets = [line for line in lines if line.startswith(f"{name}_bucket{{")]
    assert buckets[0] == f'{name}_bucket{{{labels},le="0.005"}} 2'
    assert buckets[2] == f'{name}_bucket{{{labels},le="0.025"}} 3'
    assert buckets[-2] == f'{name}_bucket{{{labels},le="10.0"}} 3'  # the one over 10 s is not here
    # +Inf is every batch, those before the slots were kept (one here) included.
    assert buckets[-1] == f'{name}_bucket{{{labels},le="+Inf"}} 5'
    assert len(buckets) == len(BATCH_SECONDS_BOUNDS) + 1
    assert f"{name}_sum{{{labels}}} 12.5" in lines
    assert f"{name}_count{{{labels}}} 5" in lines


def test_violations_opened_list_every_severity() -> None:
    lines = exposition(figures([], {"critical": 4})).splitlines()
    assert "# TYPE consent_ledger_violations_opened_total counter" in lines
    assert [
        line for line in lines if line.startswith("consent_ledger_violations_opened_total{")
    ] == [
        'consent_ledger_violations_opened_total{severity="critical"} 4',
        'consent_ledger_violations_opened_total{severity="high"} 0',
        'consent_ledger_violations_opened_total{severity="medium"} 0',
    ]
