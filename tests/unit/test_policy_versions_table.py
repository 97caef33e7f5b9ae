"""`consent-ledger policy versions` without --json: a header naming the
columns, then one tab-separated row per published version."""

from __future__ import annotations

import pytest

from consent_ledger.cli.policy import version_table

pytestmark = pytest.mark.unit

PUBLISHED = {
    "revision": 1,
    "version": "2",
    "effective_from": "2026-03-01T00:00:00Z",
    "sha256": "ab" * 32,
    "publisher": "dpo",
    "published_at": "2026-02-20T10:00:00Z",
    "ledger_event_id": "e1",
}


def test_rows_come_under_a_header_and_cut_by_tab() -> None:
    replacing = {**PUBLISHED, "revision": 2, "version": "3", "effective_from": None}
    lines = version_table([PUBLISHED, replacing]).splitlines()
    assert lines[0] == "revision\tversion\teffective_from\tsha256\tpublisher\tpublished_at"
    assert lines[1].split("\t") == [
        "1", "2", "2026-03-01T00:00:00Z", "ab" * 32, "dpo", "2026-02-20T10:00:00Z",
    ]  # fmt: skip
    assert lines[2].split("\t")[:3] == ["2", "3", "always"]
    assert all(len(line.split("\t")) == 6 for line in lines)


def test_none_published_says_so_without_a_header() -> None:
    assert version_table([]) == "no version published (the configured ones are in force)\n"
