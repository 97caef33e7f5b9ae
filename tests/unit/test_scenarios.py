"""The acceptance scenarios of the contract, run offline.

The scenarios are a copy of the shared ones under ``tests/data/scenarios``: the
project never reads outside its own tree at run time. Each folder holds
``events.jsonl``, ``expected.json``, a README, and its policy: ``policy.yaml``,
or a folder ``policies/`` of versions (CONTRACT §3).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consent_ledger import cli
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_policy_versions

pytestmark = pytest.mark.unit

SCENARIOS = Path(__file__).resolve().parents[1] / "data" / "scenarios"
SCENARIO_NAMES = sorted(path.name for path in SCENARIOS.iterdir() if path.is_dir())


@pytest.fixture(autouse=True)
def _keep_the_garbage_collector() -> Iterator[None]:
    """``check`` switches the cyclic collector off for speed; the test process keeps it on."""
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()


def policy_of(name: str) -> Path:
    """The scenario's policy: its folder of versions where it has one, else its file."""
    versions = SCENARIOS / name / "policies"
    return versions if versions.is_dir() else SCENARIOS / name / "policy.yaml"


def expected_of(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SCENARIOS / name / "expected.json").read_text("utf-8"))
    return document


def violation_keys(violations: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(violation["event_id"], violation["rule"]) for violation in violations}


def rejected_pairs(rejected: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(entry["line"], entry["reason"]) for entry in rejected]


def expected_exit(expected: dict[str, Any]) -> int:
    return cli.EXIT_VIOLATIONS if expected["violations"] else cli.EXIT_OK


def test_the_scenarios_are_all_there() -> None:
    assert SCENARIOS.is_relative_to(Path(__file__).resolve().parents[1])
    assert set(SCENARIO_NAMES) >= {
        "bad-input",
        "consent-lifecycle",
        "disclosures-by-recipient",
        "erasure",
        "jobseekers-and-visitors",
        "late-arrivals",
        "policy-versions",
        "random-3000",
    }
    assert (SCENARIOS / "policy.yaml").is_file()
    for name in SCENARIO_NAMES:
        for file in ("events.jsonl", "expected.json"):
            assert (SCENARIOS / name / file).is_file(), f"{name}/{file}"
        assert policy_of(name).exists(), f"{name}: policy"


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_through_the_offline_ledger(name: str) -> None:
    folder = SCENARIOS / name
    expected = expected_of(name)
    ledger = OfflineLedger(load_policy_versions(policy_of(name)))
    with (folder / "events.jsonl").open("rb") as lines:
        ledger.ingest_lines(lines)

    open_violations = ledger.open_violations()
    assert {v.key for v in open_violations} == violation_keys(expected["violations"])
    assert [v.key for v in open_violations] == sorted(v.key for v in open_violations)
    assert [(r.line, r.rejection.reason.value) for r in ledger.rejected] == rejected_pairs(
        expected["rejected"]
    )
    counts = expected["counts"]
    assert ledger.counts.accepted == counts["accepted"]
    assert ledger.counts.duplicates == counts["duplicates"]
    assert ledger.counts.rejected == counts["rejected"]
    assert len(open_violations) == counts["violations"]


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario_through_the_command_line(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder = SCENARIOS / name
    expected = expected_of(name)

    status = cli.main(
        ["check", str(folder / "events.jsonl"), "--policy", str(policy_of(name)), "--json"]
    )

    document = json.loads(capsys.readouterr().out)
    assert status == expected_exit(expected)
    assert violation_keys(document["violations"]) == violation_keys(expected["violations"])
    assert len(document["violations"]) == len(expected["violations"])
    assert rejected_pairs(document["rejected"]) == rejected_pairs(expected["rejected"])
    assert document["counts"] == expected["counts"]


@pytest.mark.parametrize(
    "name", [name for name in SCENARIO_NAMES if policy_of(name).name == "policy.yaml"]
)
def test_scenario_with_the_shipped_reference_policy(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The package's reference policy says what the scenarios' policy says."""
    expected = expected_of(name)

    status = cli.main(["check", str(SCENARIOS / name / "events.jsonl"), "--json"])

    document = json.loads(capsys.readouterr().out)
    assert status == expected_exit(expected)
    assert violation_keys(document["violations"]) == violation_keys(expected["violations"])
    assert document["counts"] == expected["counts"]
