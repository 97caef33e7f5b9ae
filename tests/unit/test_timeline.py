"""A subject's file, incrementally: late events open and retract verdicts (CONTRACT §4)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_ledger.core.facts import Fact, fact_of
from consent_ledger.core.intake import Admission, ValidEvent, admit, content_digest, validate
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import PolicyVersions, load_policy
from consent_ledger.core.timeline import Status, SubjectFile, ViolationChange

pytestmark = pytest.mark.unit

POLICY_FILE = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "policy.yaml"
POLICY = PolicyVersions((load_policy(POLICY_FILE),))  # one version, in force always
BASE = datetime(2026, 3, 1, tzinfo=UTC)


def at(minute: float) -> str:
    """The RFC 3339 time ``minute`` minutes after 2026-03-01T00:00:00Z."""
    return (BASE + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")


def envelope(event_type: str, event_id: str, minute: float, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:system:test",
        "type": event_type,
        "subject": "ola",
        "time": at(minute),
        "data": data,
    }


def shared(
    event_id: str,
    minute: float,
    purpose: str = "marketing",
    kind: str = "group_company",
    recipient: str = "visma-spcs-ab",
    role: str = "customer_contact",
) -> dict[str, Any]:
    return envelope(
        "DataShared",
        event_id,
        minute,
        {
            "purpose": purpose,
            "subject_role": role,
            "controller": "visma-software-as",
            "recipient": {"kind": kind, "id": recipient},
            "data_categories": ["contact_details"],
        },
    )


def granted(
    event_id: str, minute: float, purpose: str = "marketing", expires: float | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "purpose": purpose,
        "subject_role": "customer_contact",
        "controller": "visma-software-as",
    }
    if expires is not None:
        data["expires_at"] = at(expires)
    return envelope("ConsentGiven", event_id, minute, data)


def withdrawn(event_id: str, minute: float, purpose: str = "marketing") -> dict[str, Any]:
    data = {"purpose": purpose, "controller": "visma-software-as"}
    return envelope("ConsentWithdrawn", event_id, minute, data)


def erased(event_id: str, minute: float) -> dict[str, Any]:
    return envelope("ErasureRequested", event_id, minute, {"reason": "moved away"})


def visited(event_id: str, minute: float, notice: str | None) -> dict[str, Any]:
    return envelope(
        "VisitorRegistered", event_id, minute, {"site": "oslo", "rights_notice": notice}
    )


class File:
    """A SubjectFile fed with event bodies in arrival order."""

    def __init__(self) -> None:
        self.file = SubjectFile("ola")
        self.seq = 0

    def record(self, body: dict[str, Any]) -> set[tuple[str, str, str]]:
        """Record one event; return its changes as (status, event_id, rule)."""
        self.seq += 1
        checked = validate(json.dumps(body).encode())
        assert isinstance(checked, ValidEvent), checked
        changes = self.file.record(fact_of(checked, self.seq), POLICY)
        return {(c.status.value, c.violation.event_id, c.violation.rule.value) for c in changes}

    def open(self) -> set[tuple[str, str]]:
        return {
            (violation.event_id, violation.rule.value)
            for by_rule in self.file.open.values()
            for violation in by_rule.values()
        }


def opened(event_id: str, rule: str) -> tuple[str, str, str]:
    return ("open", event_id, rule)


def retracted(event_id: str, rule: str) -> tuple[str, str, str]:
    return ("retracted", event_id, rule)


# -- late consent events -------------------------------------------------------


def test_a_late_grant_retracts_an_earlier_arrived_disclosure() -> None:
    file = File()
    assert file.record(shared("ds-1", 10)) == {opened("ds-1", "consent-missing")}
    assert file.record(granted("cg-1", 5)) == {retracted("ds-1", "consent-missing")}
    assert file.open() == set()


def test_the_consent_timeline_stays_in_time_order_whatever_the_arrival() -> None:
    """In-order events are appended, a late one is put in its place; at equal
    times the one ingested later comes after (CONTRACT §4's tie rule)."""
    file = File()
    for body in (
        granted("cg-2", 20),
        granted("cg-3", 30),
        withdrawn("cw-1", 10),  # late: before both
        withdrawn("cw-2", 20),  # the same time as cg-2, ingested later
        granted("cg-4", 40),  # in order again
        granted("cg-0", 0),  # late: first of all
    ):
        file.record(body)
    timeline = file.file.consents["marketing"]
    assert [change.event_id for change in timeline] == [
        "cg-0",
        "cw-1",
        "cg-2",
        "cw-2",
        "cg-3",
        "cg-4",
    ]
    assert file.record(shared("ds-1", 25)) == {opened("ds-1", "consent-withdrawn")}


def test_a_late_withdrawal_opens_a_violation() -> None:
    file = File()
    assert file.record(granted("cg-1", 0)) == set()
    assert file.record(shared("ds-1", 10)) == set()
    assert file.record(withdrawn("cw-1", 5)) == {opened("ds-1", "consent-withdrawn")}
    assert file.open() == {("ds-1", "consent-withdrawn")}


def test_a_late_consent_event_rejudges_every_disclosure_it_changes() -> None:
    file = File()
    assert file.record(shared("ds-1", 10)) == {opened("ds-1", "consent-missing")}
    assert file.record(shared("ds-2", 20)) == {opened("ds-2", "consent-missing")}
    assert file.record(shared("ds-3", 30)) == {opened("ds-3", "consent-missing")}
    assert file.record(granted("cg-1", 5, expires=25)) == {
        retracted("ds-1", "consent-missing"),
        retracted("ds-2", "consent-missing"),
        retracted("ds-3", "consent-missing"),
        opened("ds-3", "consent-expired"),
    }
    assert file.record(withdrawn("cw-1", 15)) == {
        opened("ds-2", "consent-withdrawn"),
        retracted("ds-3", "consent-expired"),
        opened("ds-3", "consent-withdrawn"),
    }
    assert file.open() == {("ds-2", "consent-withdrawn"), ("ds-3", "consent-withdrawn")}


def test_a_consent_event_dated_after_a_disclosure_does_not_touch_it() -> None:
    file = File()
    file.record(shared("ds-1", 10))
    assert file.record(granted("cg-1", 11)) == set()
    file.record(granted("cg-2", 0))
    assert file.record(withdrawn("cw-1", 10.5)) == set()
    assert file.open() == set()


def test_a_consent_event_at_the_very_instant_counts() -> None:
    file = File()
    file.record(shared("ds-1", 10))
    assert file.record(granted("cg-1", 10)) == {retracted("ds-1", "consent-missing")}


def test_only_disclosures_of_the_same_purpose_are_rejudged() -> None:
    file = File()
    file.record(shared("ds-m", 10, purpose="marketing"))
    file.record(shared("ds-c", 10, purpose="cloud_access"))
    assert file.record(granted("cg-1", 5, purpose="cloud_access")) == {
        retracted("ds-c", "consent-missing")
    }
    assert file.open() == {("ds-m", "consent-missing")}


def test_reopening_and_changing_rule() -> None:
    file = File()
    assert file.record(shared("ds-1", 10)) == {opened("ds-1", "consent-missing")}
    assert file.record(granted("cg-1", 5)) == {retracted("ds-1", "consent-missing")}
    assert file.record(withdrawn("cw-1", 7)) == {opened("ds-1", "consent-withdrawn")}
    assert file.record(granted("cg-2", 8)) == {retracted("ds-1", "consent-withdrawn")}
    assert file.record(withdrawn("cw-2", 9)) == {opened("ds-1", "consent-withdrawn")}
    assert file.record(granted("cg-3", 9.5, expires=10)) == {
        retracted("ds-1", "consent-withdrawn"),
        opened("ds-1", "consent-expired"),
    }
    assert file.record(granted("cg-4", 9.75)) == {retracted("ds-1", "consent-expired")}
    assert file.open() == set()


def test_changes_that_change_nothing_are_not_reported() -> None:
    file = File()
    file.record(withdrawn("cw-1", 0))
    assert file.record(shared("ds-1", 10)) == {opened("ds-1", "consent-withdrawn")}
    # Another withdrawal before the disclosure: still withdrawn, nothing to report.
    assert file.record(withdrawn("cw-2", 5)) == set()
    assert file.open() == {("ds-1", "consent-withdrawn")}


def test_other_rules_of_a_disclosure_stay_open_through_consent_changes() -> None:
    file = File()
    assert file.record(shared("ds-1", 10, recipient="visma-unknown-gmbh")) == {
        opened("ds-1", "consent-missing"),
        opened("ds-1", "recipient-not-permitted"),
    }
    assert file.record(granted("cg-1", 5)) == {retracted("ds-1", "consent-missing")}
    assert file.open() == {("ds-1", "recipient-not-permitted")}


def test_a_change_carries_the_whole_violation() -> None:
    file = SubjectFile("ola")
    checked = validate(json.dumps(shared("ds-1", 10)).encode())
    assert isinstance(checked, ValidEvent)
    (change,) = file.record(fact_of(checked, 1), POLICY)
    assert isinstance(change, ViolationChange)
    assert change.status is Status.OPEN
    violation = change.violation
    assert violation.key == ("ds-1", "consent-missing")
    assert violation.subject == "ola"
    assert violation.severity.value == "high"
    assert violation.clause == "l"
    assert violation.explanation.strip().endswith(".")
    assert violation.occurred_at == checked.instant
    assert {status.value for status in Status} == {"open", "retracted"}


def test_a_visitor_verdict_stands_alone() -> None:
    file = File()
    assert file.record(visited("vr-1", 10, None)) == {opened("vr-1", "visitor-not-informed")}
    assert file.record(visited("vr-2", 11, "v3")) == set()
    assert file.record(granted("cg-1", 0)) == set()
    assert file.open() == {("vr-1", "visitor-not-informed")}


# -- erasure -------------------------------------------------------------------


def test_verdicts_dated_before_an_erasure_stay() -> None:
    file = File()
    file.record(granted("cg-1", 0))
    assert file.record(shared("ds-1", 10)) == set()
    assert file.record(shared("ds-2", 12, kind="public_authority", recipient="politiet")) == {
        opened("ds-2", "recipient-purpose-mismatch"),
        opened("ds-2", "authority-without-court-order"),
    }
    assert file.record(erased("er-1", 20)) == set()
    assert file.open() == {
        ("ds-2", "recipient-purpose-mismatch"),
        ("ds-2", "authority-without-court-order"),
    }
    assert file.file.erased_at is not None


def test_a_disclosure_after_erasure_is_only_shared_after_erasure() -> None:
    file = File()
    file.record(erased("er-1", 20))
    assert file.record(shared("ds-1", 30, purpose="profiling", kind="data_broker")) == {
        opened("ds-1", "shared-after-erasure")
    }
    assert file.record(shared("ds-2", 20.5, purpose="delivery")) == {
        opened("ds-2", "shared-after-erasure")
    }


def test_a_disclosure_at_the_erasure_instant_is_judged_as_usual() -> None:
    file = File()
    file.record(erased("er-1", 20))
    assert file.record(shared("ds-1", 20, purpose="delivery")) == set()


def test_consent_events_after_an_erasure_change_nothing() -> None:
    file = File()
    file.record(granted("cg-1", 0))
    file.record(shared("ds-1", 10))
    file.record(erased("er-1", 20))
    assert file.record(withdrawn("cw-1", 5)) == set()  # dated before: the verdict stays
    assert file.record(granted("cg-2", 25)) == set()
    assert file.record(shared("ds-2", 30)) == {opened("ds-2", "shared-after-erasure")}
    assert file.open() == {("ds-2", "shared-after-erasure")}


def test_a_late_disclosure_dated_before_the_erasure_is_judged_on_what_remains() -> None:
    """The consent timeline was shredded with the erasure: no consent remains."""
    file = File()
    file.record(granted("cg-1", 0))
    file.record(erased("er-1", 20))
    assert file.record(shared("ds-1", 15, purpose="delivery")) == set()
    assert file.record(shared("ds-2", 15)) == {opened("ds-2", "consent-missing")}


def test_a_late_erasure_rejudges_the_disclosures_dated_after_it() -> None:
    file = File()
    file.record(granted("cg-1", 0))
    assert file.record(shared("ds-1", 15, purpose="delivery")) == set()
    assert file.record(shared("ds-2", 17, purpose="profiling")) == {
        opened("ds-2", "unknown-purpose")
    }
    assert file.record(shared("ds-3", 5, purpose="profiling")) == {
        opened("ds-3", "unknown-purpose")
    }
    assert file.record(shared("ds-4", 8)) == set()

    assert file.record(erased("er-1", 10)) == {
        opened("ds-1", "shared-after-erasure"),
        opened("ds-2", "shared-after-erasure"),
        retracted("ds-2", "unknown-purpose"),
    }
    assert file.open() == {
        ("ds-1", "shared-after-erasure"),
        ("ds-2", "shared-after-erasure"),
        ("ds-3", "unknown-purpose"),
    }


def test_an_even_earlier_second_erasure_finds_no_disclosures_left() -> None:
    """The first erasure forgot the subject's disclosures (personal data), so a second,
    earlier erasure arriving later re-judges nothing. The contract promises order
    independence only for subjects never erased; this pins the code's reading."""
    file = File()
    file.record(erased("er-2", 20))
    assert file.record(shared("ds-1", 15, purpose="delivery")) == set()
    assert file.record(erased("er-1", 10)) == set()
    assert file.open() == set()
    assert file.record(shared("ds-2", 12, purpose="delivery")) == {
        opened("ds-2", "shared-after-erasure")
    }


def test_a_later_second_erasure_changes_nothing() -> None:
    file = File()
    file.record(erased("er-1", 10))
    file.record(shared("ds-1", 15, purpose="delivery"))
    erased_at = file.file.erased_at
    assert file.record(erased("er-2", 20)) == set()
    assert file.file.erased_at == erased_at
    assert file.open() == {("ds-1", "shared-after-erasure")}


# -- order independence, as a property ---------------------------------------

SUBJECTS = ("anna", "bo")
PURPOSES = (
    "marketing",
    "cloud_access",
    "skills_analysis",
    "delivery",
    "support",
    "legal_disclosure",
    "corporate_transaction",
    "forum_publication",
    "premises_security",
    "profiling",
)
# Repeats weight the draw: most consent events and disclosures meet on few purposes.
CONSENT_PURPOSES = ("marketing", "marketing", "cloud_access", "skills_analysis")
ROLES = ("customer_contact", "customer_contact", "user", "jobseeker", "visitor")
RECIPIENTS = (
    ("group_company", "visma-spcs-ab"),
    ("group_company", "visma-unknown-gmbh"),
    ("partner", "northwind-consulting"),
    ("partner", "acme-consulting"),
    ("public_authority", "politiet"),
    ("acquirer", "bigco"),
    ("public_forum", "community.visma.com"),
    ("data_broker", "acme-leads"),
)
LEGAL_BASES = (
    None,
    {"kind": "court_order", "reference": "TOSLO-1"},
    {"kind": "legal_order"},
    {"kind": "nda", "reference": "NDA-1"},
    {"kind": "nda", "reference": " "},
)
CATEGORIES = (["contact_details"], ["forum_post"], ["forum_post", "email_address"])
OFFSETS = (0, 120, -300, 345)  # minutes east of UTC


@dataclass(frozen=True)
class Spec:
    """One generated event, with its instant known independently of the code under test."""

    id: str
    type: str
    subject: str
    micros: int  # since 2026-03-01T00:00:00Z
    offset: int
    data: dict[str, Any]
    expires_micros: int | None = None

    def line(self) -> bytes:
        return json.dumps(
            {
                "specversion": "1.0",
                "id": self.id,
                "source": "urn:system:generated",
                "type": self.type,
                "subject": self.subject,
                "time": rfc3339(self.micros, self.offset),
                "data": self.data,
            }
        ).encode()


def rfc3339(micros: int, offset: int) -> str:
    zone = timezone(timedelta(minutes=offset))
    local = (BASE + timedelta(microseconds=micros)).astimezone(zone)
    text = local.isoformat(timespec="microseconds" if local.microsecond else "seconds")
    return text.replace("+00:00", "Z")


consent_data = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["ConsentGiven", "ConsentWithdrawn"]),
        "purpose": st.sampled_from(CONSENT_PURPOSES),
        "expires_after": st.one_of(st.none(), st.integers(1, 300).map(lambda m: m * 60_000_000)),
    }
)
shared_data = st.fixed_dictionaries(
    {
        "kind": st.just("DataShared"),
        "purpose": st.one_of(
            st.sampled_from(CONSENT_PURPOSES),
            st.sampled_from(CONSENT_PURPOSES),
            st.sampled_from(PURPOSES),
        ),
        "role": st.sampled_from(ROLES),
        "recipient": st.sampled_from(RECIPIENTS),
        "legal_basis": st.sampled_from(LEGAL_BASES),
        "categories": st.sampled_from(CATEGORIES),
    }
)
visitor_data = st.fixed_dictionaries(
    {"kind": st.just("VisitorRegistered"), "notice": st.sampled_from([None, "", " ", "v3"])}
)


@st.composite
def histories(draw: st.DrawFn) -> list[Spec]:
    drafts = draw(
        st.lists(
            st.tuples(
                st.sampled_from(SUBJECTS),
                st.one_of(consent_data, consent_data, shared_data, shared_data, visitor_data),
                st.sampled_from(OFFSETS),
            ),
            min_size=4,
            max_size=40,
        )
    )
    # Distinct event times: ties are decided by ingest order, which a permutation changes.
    slots = draw(
        st.lists(st.integers(0, 600), min_size=len(drafts), max_size=len(drafts), unique=True)
    )
    fractions = draw(
        st.lists(st.sampled_from([0, 0, 250_000, 1]), min_size=len(drafts), max_size=len(drafts))
    )
    specs = []
    for number, ((subject, draft, offset), slot, fraction) in enumerate(
        zip(drafts, slots, fractions, strict=True)
    ):
        micros = slot * 60_000_000 + fraction
        event_id = f"e-{number}"
        if draft["kind"] == "DataShared":
            kind, recipient = draft["recipient"]
            data: dict[str, Any] = {
                "purpose": draft["purpose"],
                "subject_role": draft["role"],
                "controller": "visma-software-as",
                "recipient": {"kind": kind, "id": recipient},
                "data_categories": draft["categories"],
            }
            if draft["legal_basis"] is not None:
                data["legal_basis"] = draft["legal_basis"]
            specs.append(Spec(event_id, "DataShared", subject, micros, offset, data))
        elif draft["kind"] == "VisitorRegistered":
            data = {"site": "oslo-hq", "rights_notice": draft["notice"]}
            specs.append(Spec(event_id, "VisitorRegistered", subject, micros, offset, data))
        elif draft["kind"] == "ConsentWithdrawn":
            data = {"purpose": draft["purpose"], "controller": "visma-software-as"}
            specs.append(Spec(event_id, "ConsentWithdrawn", subject, micros, offset, data))
        else:
            data = {
                "purpose": draft["purpose"],
                "subject_role": "customer_contact",
                "controller": "visma-software-as",
            }
            expires = None
            if draft["expires_after"] is not None:
                expires = micros + draft["expires_after"]
                data["expires_at"] = rfc3339(expires, OFFSETS[(number + 1) % len(OFFSETS)])
            specs.append(Spec(event_id, "ConsentGiven", subject, micros, offset, data, expires))
    return specs


RAW_POLICY: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text("utf-8"))


def judged_from_scratch(specs: list[Spec]) -> set[tuple[str, str]]:
    """CONTRACT §4 re-implemented plainly, straight from the policy YAML."""
    purposes, recipients = RAW_POLICY["purposes"], RAW_POLICY["recipients"]
    found: set[tuple[str, str]] = set()
    for spec in specs:
        if spec.type == "VisitorRegistered":
            notice = spec.data.get("rights_notice")
            if RAW_POLICY["visitors"]["require_rights_notice"] and not (notice or "").strip():
                found.add((spec.id, "visitor-not-informed"))
            continue
        if spec.type != "DataShared":
            continue
        purpose, role = spec.data["purpose"], spec.data["subject_role"]
        if purpose not in purposes:
            found.add((spec.id, "unknown-purpose"))
            continue
        if role not in purposes[purpose]["roles"]:
            found.add((spec.id, "purpose-not-permitted-for-role"))
        elif purposes[purpose]["basis"] == "consent":
            earlier = [
                other
                for other in specs
                if other.type in ("ConsentGiven", "ConsentWithdrawn")
                and other.subject == spec.subject
                and other.data["purpose"] == purpose
                and other.micros <= spec.micros
            ]
            if not earlier:
                found.add((spec.id, "consent-missing"))
            else:
                latest = max(earlier, key=lambda other: other.micros)
                if latest.type == "ConsentWithdrawn":
                    found.add((spec.id, "consent-withdrawn"))
                elif latest.expires_micros is not None and latest.expires_micros <= spec.micros:
                    found.add((spec.id, "consent-expired"))
        kind, recipient = spec.data["recipient"]["kind"], spec.data["recipient"]["id"]
        rule = recipients.get(kind)
        if rule is None:
            found.add((spec.id, "recipient-not-permitted"))
            continue
        if "purposes" in rule and purpose not in rule["purposes"]:
            found.add((spec.id, "recipient-purpose-mismatch"))
        basis = spec.data.get("legal_basis") or {}
        has_basis = basis.get("kind") in rule.get("requires_legal_basis", []) and bool(
            (basis.get("reference") or "").strip()
        )
        if kind == "group_company" and recipient not in rule["allowed"]:
            found.add((spec.id, "recipient-not-permitted"))
        elif kind == "partner" and recipient not in rule["certified"]:
            found.add((spec.id, "partner-not-certified"))
        elif kind == "public_authority" and not has_basis:
            found.add((spec.id, "authority-without-court-order"))
        elif kind == "acquirer" and not has_basis:
            found.add((spec.id, "acquirer-without-nda"))
        elif kind == "public_forum" and set(spec.data["data_categories"]) - set(
            rule["data_categories"]
        ):
            found.add((spec.id, "forum-non-public-data"))
    return found


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[Spec], list[bytes], int]:
    """A history, then its lines in a random order with random redeliveries."""
    specs = draw(histories())
    lines = draw(st.permutations([spec.line() for spec in specs]))
    redeliveries = draw(st.lists(st.integers(0, len(lines) - 1), max_size=8))
    for index in redeliveries:
        position = draw(st.integers(index + 1, len(lines)))
        lines.insert(position, lines[index])
    return specs, lines, len(redeliveries)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrival=arrivals())
def test_any_arrival_order_gives_the_verdicts_of_event_time(
    arrival: tuple[list[Spec], list[bytes], int],
) -> None:
    specs, lines, redelivered = arrival
    in_time_order = OfflineLedger(POLICY)
    in_time_order.ingest_lines(s.line() for s in sorted(specs, key=lambda s: s.micros))
    shuffled = OfflineLedger(POLICY)
    shuffled.ingest_lines(lines)

    expected = judged_from_scratch(specs)
    assert {v.key for v in shuffled.open_violations()} == expected
    assert {v.key for v in in_time_order.open_violations()} == expected
    assert shuffled.counts.accepted == len(specs)
    assert shuffled.counts.duplicates == redelivered
    assert shuffled.counts.rejected == 0


def apply(changes: list[ViolationChange], open_now: set[tuple[str, str]]) -> None:
    for change in changes:
        key = change.violation.key
        if change.status is Status.OPEN:
            assert key not in open_now, f"{key} opened twice"
            open_now.add(key)
        else:
            assert key in open_now, f"{key} retracted while not open"
            open_now.remove(key)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arrival=arrivals())
def test_the_reported_changes_add_up_to_the_open_set(
    arrival: tuple[list[Spec], list[bytes], int],
) -> None:
    """What a worker publishes (opened, retracted) replays to exactly what is open."""
    specs, lines, _ = arrival
    files: dict[str, SubjectFile] = {}
    digests: dict[str, bytes] = {}
    open_now: set[tuple[str, str]] = set()
    for seq, raw in enumerate(lines, start=1):
        checked = validate(raw)
        assert isinstance(checked, ValidEvent)
        digest = content_digest(checked.body)
        if admit(checked, digest, digests.get(checked.id)) is Admission.DUPLICATE:
            continue
        digests[checked.id] = digest
        fact: Fact = fact_of(checked, seq)
        file = files.setdefault(checked.subject, SubjectFile(checked.subject))
        apply(file.record(fact, POLICY), open_now)
    assert open_now == {
        key
        for file in files.values()
        for by_rule in file.open.values()
        for key in ((v.event_id, v.rule.value) for v in by_rule.values())
    }
    assert open_now == judged_from_scratch(specs)
