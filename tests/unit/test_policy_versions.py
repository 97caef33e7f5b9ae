"""Policy versions (CONTRACT §3): a folder of versions, each in force from its
``effective_from``; every event judged under the version in force at its time,
by ``check`` and by the worker's core alike, also when a late event re-judges it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consent_ledger import cli
from consent_ledger.core.batch import Record, check_records, settle_batch
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import (
    PolicyError,
    PolicyVersions,
    load_policy,
    load_policy_versions,
    parse_policy,
)
from consent_ledger.core.timeline import Status, SubjectFile
from consent_ledger.core.timestamps import parse_instant

pytestmark = pytest.mark.unit

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "policy-versions"
REFERENCE = (SCENARIO.parent / "policy.yaml").read_text("utf-8")

# What the scenario's open violations were judged under (its README tells why).
JUDGED_UNDER = {
    ("pv-10", "partner-not-certified"): "2",
    ("pv-13", "consent-missing"): "2",
    ("pv-2", "partner-not-certified"): "2",
    ("pv-4", "recipient-not-permitted"): "2",
    ("pv-8", "authority-without-court-order"): "3",
}


def version_text(version: str, effective_from: str | None, body: str = REFERENCE) -> str:
    """The reference policy as ``version``, in force from ``effective_from``."""
    lines = [line for line in body.splitlines() if not line.startswith("version:")]
    head = f"version: {version}\n"
    if effective_from is not None:
        head += f"effective_from: {effective_from}\n"
    return head + "\n".join(lines) + "\n"


def write_version(
    folder: Path, name: str, version: str, effective_from: str | None, body: str = REFERENCE
) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(version_text(version, effective_from, body), encoding="utf-8")
    return path


def in_force(versions: PolicyVersions, time: str) -> str:
    return versions.in_force_at(parse_instant(time)).version


def check_json(events: Path, policy: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    status = cli.main(["check", str(events), "--policy", str(policy), "--json"])
    return status, json.loads(capsys.readouterr().out)


# -- which version is in force -------------------------------------------------


def test_the_scenario_folder_holds_three_versions_in_order() -> None:
    versions = load_policy_versions(SCENARIO / "policies")
    assert [policy.version for policy in versions.versions] == ["1", "2", "3"]
    assert [policy.effective_from for policy in versions.versions] == [
        parse_instant("2026-01-01T00:00:00Z"),
        parse_instant("2026-04-01T00:00:00Z"),
        parse_instant("2026-05-01T00:00:00Z"),
    ]
    assert len(versions) == 3
    assert versions.versions[1].source == str(SCENARIO / "policies" / "v2.yaml")


@pytest.mark.parametrize(
    ("time", "version"),
    [
        ("2026-04-01T00:00:00Z", "2"),  # the instant of the change: the new version
        ("2026-03-31T23:59:59.999999Z", "1"),  # a microsecond before it: the old one
        ("2026-04-01T02:00:00+02:00", "2"),  # the same instant as the change, at +02:00
        ("2026-04-01T01:59:59+02:00", "1"),  # local date after the change, instant before
        ("2026-03-31T20:00:00-04:00", "2"),  # local date before the change, instant at it
        ("2026-04-30T23:59:59Z", "2"),
        ("2026-05-01T00:00:00Z", "3"),
        ("2030-01-01T00:00:00Z", "3"),  # after the last change: the latest
        ("2026-01-01T00:00:00Z", "1"),  # the first version's own instant
        ("2025-12-01T10:00:00Z", "1"),  # before every version: the earliest
        ("0001-01-01T00:00:00Z", "1"),
    ],
)
def test_the_version_in_force_at_an_instant(time: str, version: str) -> None:
    assert in_force(load_policy_versions(SCENARIO / "policies"), time) == version


def test_effective_from_with_an_offset_is_the_instant_it_names(tmp_path: Path) -> None:
    write_version(tmp_path, "a.yaml", "a", "2026-01-01T00:00:00Z")
    write_version(tmp_path, "b.yaml", "b", "2026-04-01T02:00:00+02:00")
    versions = load_policy_versions(tmp_path)

    assert versions.versions[1].effective_from == parse_instant("2026-04-01T00:00:00Z")
    assert in_force(versions, "2026-03-31T23:59:59Z") == "a"
    assert in_force(versions, "2026-04-01T00:00:00Z") == "b"


def test_versions_are_ordered_by_effective_from_not_by_file_name(tmp_path: Path) -> None:
    write_version(tmp_path, "a-newest.yaml", "3", "2026-05-01T00:00:00Z")
    write_version(tmp_path, "b-oldest.yaml", "1", "2026-01-01T00:00:00Z")
    write_version(tmp_path, "c-middle.yaml", "2", "2026-04-01T00:00:00Z")
    versions = load_policy_versions(tmp_path)
    assert [policy.version for policy in versions.versions] == ["1", "2", "3"]
    assert in_force(versions, "2026-04-15T00:00:00Z") == "2"


def test_a_policy_file_is_one_version_in_force_always() -> None:
    versions = load_policy_versions(SCENARIO.parent / "policy.yaml")
    assert len(versions) == 1
    (only,) = versions.versions
    assert only.effective_from is None
    assert in_force(versions, "0001-01-01T00:00:00Z") == only.version
    assert in_force(versions, "9999-12-31T23:59:59Z") == only.version


def test_a_file_with_effective_from_is_in_force_also_before_it(tmp_path: Path) -> None:
    path = write_version(tmp_path, "v7.yaml", "7", "2026-04-01T00:00:00Z")
    assert in_force(load_policy_versions(path), "2020-01-01T00:00:00Z") == "7"


def test_a_folder_with_one_file_is_that_version(tmp_path: Path) -> None:
    write_version(tmp_path, "only.yaml", "only", "2026-04-01T00:00:00Z")
    versions = load_policy_versions(tmp_path)
    assert [policy.version for policy in versions.versions] == ["only"]
    assert in_force(versions, "2026-01-01T00:00:00Z") == "only"


def test_a_version_without_effective_from_is_in_force_before_the_others(tmp_path: Path) -> None:
    write_version(tmp_path, "base.yaml", "base", None)
    write_version(tmp_path, "later.yaml", "later", "2026-04-01T00:00:00Z")
    versions = load_policy_versions(tmp_path)
    assert in_force(versions, "1999-01-01T00:00:00Z") == "base"
    assert in_force(versions, "2026-04-01T00:00:00Z") == "later"


def test_files_other_than_yaml_are_left_alone(tmp_path: Path) -> None:
    write_version(tmp_path, "v1.yaml", "1", "2026-01-01T00:00:00Z")
    (tmp_path / "README.md").write_text("# the versions\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("not: [a policy\n", encoding="utf-8")
    (tmp_path / "v2.yml").write_text("not even a policy", encoding="utf-8")
    (tmp_path / "v1.yaml.orig").write_text("purposes: [broken]\n", encoding="utf-8")
    (tmp_path / "drafts.yaml").mkdir()  # a folder, even named so, is no version
    versions = load_policy_versions(tmp_path)
    assert [policy.version for policy in versions.versions] == ["1"]


# -- refused folders -----------------------------------------------------------


def test_an_empty_folder_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("nothing yet\n", encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        load_policy_versions(tmp_path)
    assert str(tmp_path) in str(refused.value)
    assert "no *.yaml" in str(refused.value)


def test_versions_with_the_same_version_are_refused_naming_both_files(tmp_path: Path) -> None:
    first = write_version(tmp_path, "first.yaml", "2", "2026-01-01T00:00:00Z")
    second = write_version(tmp_path, "second.yaml", "2", "2026-04-01T00:00:00Z")
    with pytest.raises(PolicyError) as refused:
        load_policy_versions(tmp_path)
    message = str(refused.value)
    assert str(first) in message and str(second) in message
    assert refused.value.key == "version"
    assert "'2'" in message


def test_versions_in_force_from_the_same_instant_are_refused_naming_both_files(
    tmp_path: Path,
) -> None:
    first = write_version(tmp_path, "first.yaml", "1", "2026-04-01T00:00:00Z")
    second = write_version(tmp_path, "second.yaml", "2", "2026-04-01T02:00:00+02:00")
    with pytest.raises(PolicyError) as refused:
        load_policy_versions(tmp_path)
    message = str(refused.value)
    assert str(first) in message and str(second) in message
    assert refused.value.key == "effective_from"
    assert "2026-04-01T00:00:00Z" in message  # the same instant, however it was written


def test_two_versions_without_effective_from_are_refused(tmp_path: Path) -> None:
    write_version(tmp_path, "a.yaml", "a", None)
    write_version(tmp_path, "b.yaml", "b", None)
    with pytest.raises(PolicyError) as refused:
        load_policy_versions(tmp_path)
    assert "a.yaml" in str(refused.value) and "b.yaml" in str(refused.value)
    assert refused.value.key == "effective_from"


def test_a_bad_version_in_a_folder_is_refused_naming_its_file(tmp_path: Path) -> None:
    write_version(tmp_path, "v1.yaml", "1", "2026-01-01T00:00:00Z")
    broken = tmp_path / "v2.yaml"
    broken.write_text("version: 2\npurposes: [a]\n", encoding="utf-8")
    with pytest.raises(PolicyError) as refused:
        load_policy_versions(tmp_path)
    assert str(refused.value).startswith(f"{broken}: purposes: ")


@pytest.mark.parametrize(
    "written",
    [
        "2026-04-01",  # a date
        "2026-04-01T00:00:00",  # no offset
        "2026-04-01 00:00:00Z",  # YAML's timestamp takes a space; RFC 3339 does not
        "2026-04-01T00:00Z",  # no seconds
        "2026-04-01T00:00:00+0200",  # basic offset
        "'next monday'",
        "1775001600",  # epoch seconds
        "[2026-04-01T00:00:00Z]",
        "2026-02-30T00:00:00Z",
    ],
)
def test_effective_from_must_be_rfc3339_with_an_offset(written: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(version_text("1", written), "v1.yaml")
    assert refused.value.key == "effective_from"
    assert "RFC 3339" in refused.value.problem


def test_effective_from_may_be_quoted_or_not() -> None:
    quoted = parse_policy(version_text("1", "'2026-04-01T00:00:00Z'"))
    plain = parse_policy(version_text("1", "2026-04-01T00:00:00Z"))
    assert quoted.effective_from == plain.effective_from == parse_instant("2026-04-01T00:00:00Z")


def test_a_version_named_like_a_date_stays_its_text() -> None:
    assert parse_policy(version_text("2026-04-01", None)).version == "2026-04-01"


def test_adding_a_version_makes_a_new_set() -> None:
    """How a version published at run time will be taken in: the set a batch is
    being judged under does not change under it."""
    versions = load_policy_versions(SCENARIO / "policies")
    v4 = parse_policy(version_text("4", "2026-06-01T00:00:00Z"), "v4.yaml")

    more = versions.with_version(v4)

    assert [policy.version for policy in more.versions] == ["1", "2", "3", "4"]
    assert len(versions) == 3
    assert in_force(more, "2026-06-01T00:00:00Z") == "4"
    assert in_force(versions, "2026-06-01T00:00:00Z") == "3"
    with pytest.raises(PolicyError) as refused:
        more.with_version(parse_policy(version_text("5", "2026-06-01T00:00:00Z"), "v5.yaml"))
    assert "v4.yaml and v5.yaml" in str(refused.value)


# -- judged under the version in force -----------------------------------------


def test_check_names_the_version_that_judged_each_violation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, document = check_json(SCENARIO / "events.jsonl", SCENARIO / "policies", capsys)

    assert status == 1
    assert {
        (violation["event_id"], violation["rule"]): violation["policy_version"]
        for violation in document["violations"]
    } == JUDGED_UNDER


def test_the_worker_core_judges_as_check_does_batch_by_batch() -> None:
    """settle_batch (the worker's core) over the scenario in batches of two,
    subject files kept between batches as the database keeps them, gives the
    same open violations, judged under the same versions, as check."""
    versions = load_policy_versions(SCENARIO / "policies")
    lines = [line for line in (SCENARIO / "events.jsonl").read_bytes().splitlines() if line]
    files: dict[str, SubjectFile] = {}
    digests: dict[str, bytes] = {}
    sequence = iter(range(1, len(lines) + 1))
    for start in range(0, len(lines), 2):
        records = [Record(0, offset, line) for offset, line in enumerate(lines[start : start + 2])]
        outcome = settle_batch(check_records(records), digests, files, versions, sequence)
        digests.update((accepted.event.id, accepted.digest) for accepted in outcome.accepted)
    settled = {
        violation.key: violation.policy_version
        for file in files.values()
        for by_rule in file.open.values()
        for violation in by_rule.values()
    }
    offline = OfflineLedger(versions)
    offline.ingest_lines(lines)

    assert settled == JUDGED_UNDER
    assert {v.key: v.policy_version for v in offline.open_violations()} == JUDGED_UNDER


MARKETING_BY_CONSENT_THEN_INTEREST = """\
version: {version}
effective_from: {effective_from}
purposes:
  marketing: {{clause: "l", basis: {basis}, roles: [customer_contact]}}
recipients:
  group_company: {{allowed: [visma-software-as]}}
"""


def marketing_event(event_type: str, event_id: str, time: str) -> bytes:
    data: dict[str, Any] = {"purpose": "marketing", "controller": "visma-software-as"}
    if event_type != "ConsentWithdrawn":
        data["subject_role"] = "customer_contact"
    if event_type == "DataShared":
        data["recipient"] = {"kind": "group_company", "id": "visma-software-as"}
        data["data_categories"] = ["contact_details"]
    return json.dumps({
        "specversion": "1.0", "id": event_id, "source": "urn:system:test", "type": event_type,
        "subject": "kari", "time": time, "data": data,
    }).encode()  # fmt: skip


def test_a_late_consent_event_rejudges_each_disclosure_under_its_own_version(
    tmp_path: Path,
) -> None:
    """Marketing needs consent under v1 and is a legitimate interest under v2. A
    withdrawal that arrives late, dated before both disclosures, re-judges both:
    the one under v1 breaks the consent rule, the one under v2 still breaks
    nothing, whatever version was in force when the withdrawal happened."""
    for version, effective_from, basis in (
        ("1", "2026-01-01T00:00:00Z", "consent"),
        ("2", "2026-05-01T00:00:00Z", "legitimate_interest"),
    ):
        (tmp_path / f"v{version}.yaml").write_text(
            MARKETING_BY_CONSENT_THEN_INTEREST.format(
                version=version, effective_from=effective_from, basis=basis
            ),
            encoding="utf-8",
        )
    arrivals = [
        marketing_event("ConsentGiven", "cg", "2026-02-01T00:00:00Z"),
        marketing_event("DataShared", "ds-v1", "2026-04-30T23:59:59Z"),
        marketing_event("DataShared", "ds-v2", "2026-05-01T00:00:00Z"),
        marketing_event("ConsentWithdrawn", "cw", "2026-03-01T00:00:00Z"),
    ]
    versions = load_policy_versions(tmp_path)
    ledger = OfflineLedger(versions)
    ledger.ingest_lines(arrivals[:3])
    assert ledger.open_violations() == []
    ledger.ingest(arrivals[3], 4)

    (violation,) = ledger.open_violations()
    assert (violation.key, violation.policy_version) == (("ds-v1", "consent-withdrawn"), "1")

    # The worker's core, one record per batch: the late withdrawal's batch opens the same.
    files: dict[str, SubjectFile] = {}
    for number, raw in enumerate(arrivals, start=1):
        (checked,) = check_records([Record(0, number, raw)])
        outcome = settle_batch([checked], {}, files, versions, iter([number]))
    assert [(c.status, c.violation.key, c.violation.policy_version) for c in outcome.changes] == [
        (Status.OPEN, ("ds-v1", "consent-withdrawn"), "1")
    ]


def test_a_visitor_registration_is_judged_under_its_version(tmp_path: Path) -> None:
    strict = "purposes: {}\nvisitors: {require_rights_notice: true}\n"
    lenient = "purposes: {}\nvisitors: {require_rights_notice: false}\n"
    (tmp_path / "strict.yaml").write_text(
        f"version: strict\neffective_from: 2026-01-01T00:00:00Z\n{strict}", encoding="utf-8"
    )
    (tmp_path / "lenient.yaml").write_text(
        f"version: lenient\neffective_from: 2026-06-01T00:00:00+02:00\n{lenient}",
        encoding="utf-8",
    )
    ledger = OfflineLedger(load_policy_versions(tmp_path))
    for number, (event_id, time) in enumerate(
        [("before", "2026-05-31T21:59:59Z"), ("at", "2026-05-31T22:00:00Z")], start=1
    ):
        ledger.ingest(
            json.dumps({
                "specversion": "1.0", "id": event_id, "source": "urn:system:test",
                "type": "VisitorRegistered", "subject": f"visitor-{event_id}", "time": time,
                "data": {"site": "oslo"},
            }),
            number,
        )  # fmt: skip
    assert [(v.event_id, v.policy_version) for v in ledger.open_violations()] == [
        ("before", "strict")
    ]


# -- check's exit status and messages ------------------------------------------


def test_check_refuses_clashing_versions_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "policies"
    write_version(folder, "v1.yaml", "1", "2026-01-01T00:00:00Z")
    write_version(folder, "v1-copy.yaml", "1", "2026-02-01T00:00:00Z")

    status = cli.main(["check", str(SCENARIO / "events.jsonl"), "--policy", str(folder)])

    captured = capsys.readouterr()
    assert status == cli.EXIT_USAGE
    assert captured.out == ""
    assert str(folder / "v1.yaml") in captured.err
    assert str(folder / "v1-copy.yaml") in captured.err


def test_check_refuses_an_empty_folder_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["check", str(SCENARIO / "events.jsonl"), "--policy", str(tmp_path)])
    assert status == cli.EXIT_USAGE
    assert str(tmp_path) in capsys.readouterr().err


def test_check_takes_a_folder_from_ledger_policy(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_POLICY", str(SCENARIO / "policies"))
    status = cli.main(["check", str(SCENARIO / "events.jsonl"), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert status == 1
    assert {(v["event_id"], v["rule"]) for v in document["violations"]} == set(JUDGED_UNDER)


def test_one_policy_file_names_its_version_on_each_violation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = SCENARIO.parent / "policy.yaml"
    _, document = check_json(SCENARIO / "events.jsonl", policy, capsys)
    assert document["violations"]
    assert {v["policy_version"] for v in document["violations"]} == {load_policy(policy).version}
