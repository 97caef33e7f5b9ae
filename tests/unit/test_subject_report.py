"""The subject report's pure core: what it says, and the HTML document it makes."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from consent_ledger.core.consent_records import RecordedConsentChange
from consent_ledger.core.policy import PolicyVersions, load_reference_policy
from consent_ledger.core.subject_report import (
    LatestCheckpoint,
    RecordedDisclosure,
    RecordedViolation,
    SubjectReport,
    erased_report,
    subject_report,
)
from consent_ledger.core.subject_report_html import REPORT_CSP, STYLE, render_html
from consent_ledger.core.timestamps import parse_instant

pytestmark = pytest.mark.unit

POLICIES = PolicyVersions([load_reference_policy()])
T = parse_instant


def disclosure(event_id: str, time: str, purpose: str = "marketing") -> RecordedDisclosure:
    return RecordedDisclosure(
        event_id, purpose, T(time), "acme", "group_company", "visma-enterprise-as",
        ("email",), None, None,
    )  # fmt: skip


def violation(event_id: str, rule: str, status: str, time: str) -> RecordedViolation:
    return RecordedViolation(
        event_id, rule, "high", status, "l", f"{event_id} broke {rule}", T(time), T(time), "1"
    )


CHECKPOINT = LatestCheckpoint.from_document(
    {
        "id": 7,
        "checkpoint": {
            "format": "consent-ledger/checkpoint/v1",
            "log_id": "log",
            "issued_at": "2026-03-01T00:00:00.000000Z",
            "tree_heads": [
                {"partition": 0, "size": 3, "root": "A" * 43 + "="},
                {"partition": 2**31 - 1, "size": 1, "root": "B" * 43 + "="},
            ],
            "key_id": "k1",
            "signature": "S" * 86 + "==",
        },
    }
)


def report(subject: str = "anna", name: str | None = "Visma Enterprise AS") -> SubjectReport:
    return subject_report(
        subject,
        generated_at=T("2026-03-02T12:00:00Z"),
        consents=[
            RecordedConsentChange(
                "w1", "marketing", T("2026-01-20T00:00:00Z"), False, None, "acme", "email"
            ),
            RecordedConsentChange(
                "c1", "marketing", T("2026-01-10T00:00:00Z"), True, None, "acme", "web"
            ),
            RecordedConsentChange(
                "c2", "unheard_of", T("2026-01-11T00:00:00Z"), True, None, "acme", None
            ),
        ],
        disclosures=[
            disclosure("d2", "2026-01-25T00:00:00Z"),
            disclosure("d1", "2026-01-12T00:00:00Z"),
            disclosure("d3", "2026-01-26T00:00:00Z"),
        ],
        visits=[("v1", T("2026-02-01T08:00:00Z"))],
        violations=[
            violation("d2", "consent-withdrawn", "open", "2026-01-25T00:00:00Z"),
            violation("d3", "consent-missing", "retracted", "2026-01-26T00:00:00Z"),
            violation("v1", "visitor-not-informed", "open", "2026-02-01T08:00:00Z"),
        ],
        event_data={
            "v1": {"site": "oslo"},
            "c1": {"notice": {"id": "n", "version": "v7"}},
            "d1": {"recipient": {"kind": "group_company", "id": "x", "name": name}},
            "w1": None,  # did not open
        },
        policies=POLICIES,
        checkpoint=CHECKPOINT,
    )


def test_each_part_is_in_event_time_order_with_clauses_notices_and_recipients() -> None:
    made = report()
    assert [c.event_id for c in made.consents] == ["c1", "c2", "w1"]
    given, unknown, withdrawn = made.consents
    assert given.clause == ("l", "To promote new products and services")
    assert given.notice is not None and given.notice.version == "v7"
    assert unknown.clause is None  # not a purpose of the policy
    assert withdrawn.action == "withdrawn" and withdrawn.notice is None
    assert [d.event_id for d in made.disclosures] == ["d1", "d2", "d3"]
    assert made.disclosures[0].recipient.name == "Visma Enterprise AS"
    assert made.disclosures[1].recipient.name is None  # its payload named none
    assert [words.id for words in made.clauses] == ["l", "visitors"]  # once each
    assert made.clauses[0].text is not None and "purposes (k to n)" in made.clauses[0].text


def test_a_disclosure_is_a_violation_while_one_of_its_violations_is_open() -> None:
    made = report()
    verdicts = {d.event_id: (d.verdict, len(d.violations)) for d in made.disclosures}
    assert verdicts == {"d1": ("allowed", 0), "d2": ("violation", 1), "d3": ("allowed", 1)}
    assert made.open_violations == 2
    (visit,) = made.visits
    assert (visit.site, visit.rights_notice, visit.verdict) == ("oslo", None, "violation")
    assert visit.clause.id == "visitors"


def test_an_erased_report_holds_nothing_but_the_erasure() -> None:
    erased = erased_report("ola", T("2026-01-07T09:00:00Z"), T("2026-03-02T00:00:00Z"), None)
    assert erased.erased and erased.consents == erased.disclosures == erased.violations == ()
    page = render_html(erased)
    assert "asked to be forgotten" in page and "2026-01-07 09:00:00 UTC" in page
    assert "none signed yet" in page and "Consents given" not in page


def test_every_value_is_escaped() -> None:
    page = render_html(report(subject="<script>x</script>", name="<img src=x>&"))
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "&lt;img src=x&gt;&amp;" in page


def test_the_page_loads_nothing_and_its_style_is_the_one_the_policy_allows() -> None:
    page = render_html(report())
    digest = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in REPORT_CSP and "default-src 'none'" in REPORT_CSP
    assert re.findall(r"<style>(.*?)</style>", page, re.S) == [STYLE]
    assert not re.search(r"<script|<link|<img|src=|href=|url\(|@import", page, re.I)
    assert "@media print" in STYLE and "break-before: page" in STYLE


def test_the_checkpoint_is_printed_with_each_tree_head_and_how_to_check_it() -> None:
    page = render_html(report())
    assert "A" * 43 + "=" in page and "policy log" in page
    assert "--trusted-checkpoint kept.json" in page and "checkpoint=7" in page
    assert "<title>Subject access report: anna</title>" in page
    assert "3 disclosures to 1 recipient, 1 of them breaking a rule" in page  # by kind and id
    assert '<time datetime="2026-03-02T12:00:00Z">2026-03-02 12:00:00 UTC</time>' in page


def test_the_cli_narrows_an_existing_files_mode_before_the_report_is_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consent_ledger.cli import report as cli_report

    target = tmp_path / "anna.html"
    target.write_bytes(b"old")
    target.chmod(0o644)
    modes: list[int] = []
    real_fdopen = os.fdopen

    class Watched:
        def __init__(self, file: Any) -> None:
            self.file = file

        def __enter__(self) -> Watched:
            self.file.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.__exit__(*exc)

        def fileno(self) -> int:
            return int(self.file.fileno())

        def write(self, data: bytes) -> int:
            modes.append(stat.S_IMODE(target.stat().st_mode))  # as others see it then
            return int(self.file.write(data))

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Watched(real_fdopen(fd, mode)))
    cli_report._write_private(target, b"<!DOCTYPE html>anna")
    assert modes == [0o600]
    assert target.read_bytes() == b"<!DOCTYPE html>anna"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_subject_the_ledger_never_heard_of_is_not_said_to_be_recorded() -> None:
    # A mistyped id: the report must not read as if the ledger knew the subject.
    empty = subject_report(
        "nobody",
        generated_at=T("2026-03-02T12:00:00Z"),
        consents=[],
        disclosures=[],
        visits=[],
        violations=[],
        event_data={},
        policies=POLICIES,
        checkpoint=CHECKPOINT,
    )
    page = render_html(empty)
    assert "no event about this subject in the ledger" in page
    assert "recorded in the ledger" not in page
    assert "<dt>Status</dt><dd>recorded in the ledger</dd>" in render_html(report())
