"""What-if (CONTRACT §9): `consent-ledger whatif --json` over a file equals running
`check --json` under the current policy and under the draft and comparing the
open violations; a draft file with effective_from joins the current versions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from consent_ledger.core.policy import load_policy_versions, parse_policy
from consent_ledger.core.whatif import with_draft

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"
CLI = Path(sys.executable).with_name("consent-ledger")
VERSIONS = SCENARIOS / "policy-versions" / "policies"


def run(*args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode in (0, 1), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, document


def open_under(events: Path, policy: Path) -> set[tuple[str, str]]:
    _, document = run("check", str(events), "--policy", str(policy), "--json")
    return {(v["event_id"], v["rule"]) for v in document["violations"]}


def a_stricter_draft(tmp_path: Path) -> Path:
    """The scenarios' policy with marketing a legitimate interest and one partner
    less certified: some violations close, others open."""
    text = (SCENARIOS / "policy.yaml").read_text()
    draft = text.replace("basis: consent", "basis: legitimate_interest", 1)
    assert draft != text
    draft_path = tmp_path / "draft.yaml"
    draft_path.write_text(draft)
    return draft_path


@pytest.mark.parametrize(
    ("scenario", "current", "draft"),
    [
        ("policy-versions", VERSIONS / "v1.yaml", VERSIONS),
        ("policy-versions", VERSIONS, Path("only-v1")),
        ("random-3000", SCENARIOS / "policy.yaml", None),
        ("late-arrivals", SCENARIOS / "policy.yaml", None),
    ],
)
def test_whatif_equals_check_twice_compared(
    scenario: str, current: Path, draft: Path | None, tmp_path: Path
) -> None:
    events = SCENARIOS / scenario / "events.jsonl"
    if draft == Path("only-v1"):  # a folder of versions is the whole draft
        draft = tmp_path / "only-v1"
        draft.mkdir()
        (draft / "v1.yaml").write_text((VERSIONS / "v1.yaml").read_text())
    draft = draft or a_stricter_draft(tmp_path)
    now, under_draft = open_under(events, current), open_under(events, draft)
    status, document = run(
        "whatif", "--draft", str(draft), str(events), "--policy", str(current), "--json"
    )
    would_open = {(v["event_id"], v["rule"]) for v in document["would_open"]}
    would_close = {(v["event_id"], v["rule"]) for v in document["would_close"]}
    assert would_open == under_draft - now
    assert would_close == now - under_draft
    assert would_open or would_close  # the drafts change something
    assert status == 1
    counts = document["counts"]
    assert (counts["would_open"], counts["would_close"]) == (len(would_open), len(would_close))
    for grouping in ("by_rule", "by_clause", "by_recipient"):
        assert sum(g["would_open"] for g in counts[grouping].values()) == len(would_open)
        assert sum(g["would_close"] for g in counts[grouping].values()) == len(would_close)
    by_rule = counts["by_rule"]
    for event_id, rule in would_open:
        assert by_rule[rule]["would_open"] >= 1, event_id
    examples = document["examples"]["would_open"] + document["examples"]["would_close"]
    assert {(v["event_id"], v["rule"]) for v in examples} <= would_open | would_close


def test_the_same_policy_changes_nothing() -> None:
    events = SCENARIOS / "random-3000" / "events.jsonl"
    policy = SCENARIOS / "policy.yaml"
    status, document = run(
        "whatif", "--draft", str(policy), str(events), "--policy", str(policy), "--json"
    )
    assert (status, document["would_open"], document["would_close"]) == (0, [], [])


def test_a_dated_draft_joins_the_current_versions() -> None:
    current = load_policy_versions(VERSIONS / "v1.yaml")
    dated = parse_policy((VERSIONS / "v2.yaml").read_text(), "v2.yaml")
    joined = with_draft(current, load_policy_versions(VERSIONS / "v2.yaml"), folder=False)
    assert [v.version for v in joined.versions] == ["1", "2"]
    assert joined.in_force_at(dated.effective_from or 0).version == "2"
    undated = parse_policy("version: x\npurposes: {}\n")
    alone = with_draft(current, load_policy_versions(VERSIONS).with_version(undated), folder=True)
    assert len(alone) == 4  # a folder is the whole draft
