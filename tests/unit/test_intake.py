"""Intake (CONTRACT §1-§2): what is rejected, with which reason, and what is ignored."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import threading
from typing import Any, BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from consent_ledger.core.events import EVENT_MODELS, Envelope
from consent_ledger.core.intake import (
    Admission,
    Reason,
    Rejection,
    ValidEvent,
    admit,
    compact_json,
    content_digest,
    validate,
)
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_reference_policy

pytestmark = pytest.mark.unit

Path = tuple[str | int, ...]

VALID_DATA: dict[str, dict[str, Any]] = {
    "ConsentGiven": {
        "purpose": "marketing",
        "subject_role": "customer_contact",
        "controller": "visma-software-as",
    },
    "ConsentWithdrawn": {"purpose": "marketing", "controller": "visma-software-as"},
    "DataShared": {
        "purpose": "delivery",
        "subject_role": "user",
        "controller": "visma-software-as",
        "recipient": {"kind": "partner", "id": "northwind-consulting"},
        "data_categories": ["contact_details"],
    },
    "VisitorRegistered": {"site": "oslo-hq", "rights_notice": "visitor-notice-v3"},
    "ErasureRequested": {},
}


def event(event_type: str = "DataShared", **attributes: Any) -> dict[str, Any]:
    """A valid event of ``event_type``; keyword arguments replace attributes."""
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "urn:system:crm",
        "type": event_type,
        "subject": "subject-1",
        "time": "2026-03-01T08:00:00Z",
        "datacontenttype": "application/json",
        "data": copy.deepcopy(VALID_DATA[event_type]),
    }
    body.update(attributes)
    return body


_DROP = object()


def edited(body: dict[str, Any], path: Path, value: Any = _DROP) -> dict[str, Any]:
    """A copy of ``body`` with the value at ``path`` replaced, or removed by default."""
    body = copy.deepcopy(body)
    *parents, last = path
    target: Any = body
    for step in parents:
        target = target[step]
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return body


def line(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def body_with(event_type: str, path: Path, value: Any = _DROP) -> dict[str, Any]:
    return edited(event(event_type), path, value)


def changed(event_type: str, path: Path, value: Any = _DROP) -> bytes:
    return line(body_with(event_type, path, value))


# -- rejections, reason by reason ----------------------------------------------

INVALID_JSON: list[tuple[str, bytes | str]] = [
    ("not json", b"not json"),
    ("unfinished object", b'{"specversion": "1.0", "id": "bi-3"'),
    ("single quotes", b"{'id': 'x'}"),
    ("trailing comma", b'{"id": "x",}'),
    ("two objects", b'{"id": "x"} {"id": "y"}'),
    ("an array", b'["array"]'),
    ("an empty array", b"[]"),
    ("an array of events", line([event()])),
    ("a string", b'"a string"'),
    ("a number", b"42"),
    ("a float", b"4.2"),
    ("a big number", b"123456789012345678901234567890"),
    ("null", b"null"),
    ("true", b"true"),
    ("NaN", b'{"id": NaN}'),
    ("Infinity", b'{"id": Infinity}'),
    ("-Infinity", b'{"id": -Infinity}'),
    ("a number beyond double range", b'{"id": "x", "n": 1e400}'),
    ("invalid UTF-8 in a string", line(event()).replace(b'"evt-1"', b'"evt-\xff"')),
    ("a lone continuation byte", b'{"id": "\x80"}'),
    ("an overlong encoding", b'{"id": "\xc0\xaf"}'),
    ("UTF-16", json.dumps(event()).encode("utf-16")),
    ("UTF-16 without BOM", json.dumps(event()).encode("utf-16-le")),
    ("a str that is no JSON", "not json"),
]

UNKNOWN_TYPE_WITH_BAD_TIME = event(type="ConsentTaken", time="2026-03-01T08:00:00")

INVALID_ENVELOPE: list[tuple[str, bytes]] = [
    ("an empty object", b"{}"),
    *[
        (f"{name} missing", changed("DataShared", (name,)))
        for name in ("specversion", "id", "source", "type", "subject", "time")
    ],
    *[
        (f"specversion {value!r}", changed("DataShared", ("specversion",), value))
        for value in ("1.1", "1", "1.0 ", "", 1.0, 1, None)
    ],
    *[
        (f"id {value!r}", changed("ConsentGiven", ("id",), value))
        for value in (
            "",
            " ",
            "\t\n",
            "\u00a0",
            "\u3000 ",
            1,
            1.5,
            True,
            None,
            ["evt-1"],
            {"id": "evt-1"},
        )
    ],
    *[
        (f"source {value!r}", changed("ConsentGiven", ("source",), value))
        for value in ("", "  ", 5, None, ["urn:system:crm"])
    ],
    *[
        (f"subject {value!r}", changed("VisitorRegistered", ("subject",), value))
        for value in ("", "   ", None, 42, ["subject-1"], {})
    ],
    *[
        (f"type {value!r}", changed("ErasureRequested", ("type",), value))
        for value in ("", "   ", 5, None, ["DataShared"])
    ],
    *[
        (f"time {value!r}", changed("DataShared", ("time",), value))
        for value in (
            "2026-03-01T08:00:00",
            "2026-03-01T08:00Z",
            "20260301T080000Z",
            "2026-03-01T08:00:00+0100",
            "2026-03-01 08:00:00Z",
            "2026-02-30T08:00:00Z",
            "2026-03-01T08:00:00+24:00",
            "",
            "   ",
            1772352000,
            1772352000.5,
            None,
            ["2026-03-01T08:00:00Z"],
        )
    ],
    ("datacontenttype a number", changed("DataShared", ("datacontenttype",), 5)),
    ("dataschema a list", changed("DataShared", ("dataschema",), ["x"])),
    # The order of checks: the envelope comes before the type and the data.
    ("unknown type and bad time", line(UNKNOWN_TYPE_WITH_BAD_TIME)),
    ("unknown type and empty subject", line(event(type="ConsentTaken", subject=""))),
    ("unknown type and no data", line(edited(event(type="Nope", time="yesterday"), ("data",)))),
    ("bad data and no source", line(edited(event(data=[]), ("source",)))),
    ("bad specversion and all else bad", line({"specversion": 1, "id": 2, "type": 3, "data": 4})),
]

UNKNOWN_TYPE: list[tuple[str, bytes]] = [
    *[
        (f"type {value!r}", line(event(type=value)))
        for value in (
            "ConsentTaken",
            "consentgiven",
            "CONSENTGIVEN",
            "DataShared ",
            " DataShared",
            "com.example.DataShared",
            "DataShared\u200b",
            "Event",
        )
    ],
    # The order of checks: the type comes before the data.
    ("unknown type and no data", line(edited(event(type="ConsentTaken"), ("data",)))),
    ("unknown type and data a list", line(event(type="ConsentTaken", data=[]))),
    ("unknown type and empty data", line(event(type="ConsentTaken", data={}))),
    ("the scenario's ConsentTaken", line(event(type="ConsentTaken", data={}))),
]

NOTICE = {"id": "privacy-notice", "version": "2026-01", "content_sha256": "ab" * 32}

INVALID_DATA: list[tuple[str, bytes]] = [
    *[(f"{kind} data missing", changed(kind, ("data",))) for kind in VALID_DATA],
    *[
        (f"{kind} data {value!r}", changed(kind, ("data",), value))
        for kind in VALID_DATA
        for value in (None, [], "x", 1, True)
    ],
    # ConsentGiven
    *[
        (f"ConsentGiven without {name}", changed("ConsentGiven", ("data", name)))
        for name in ("purpose", "subject_role", "controller")
    ],
    ("ConsentGiven purpose a number", changed("ConsentGiven", ("data", "purpose"), 5)),
    ("ConsentGiven purpose null", changed("ConsentGiven", ("data", "purpose"), None)),
    # CONTRACT §1: purpose, controller and site are non-empty strings.
    ("ConsentGiven purpose empty", changed("ConsentGiven", ("data", "purpose"), "")),
    ("ConsentWithdrawn purpose blank", changed("ConsentWithdrawn", ("data", "purpose"), "  ")),
    ("DataShared controller blank", changed("DataShared", ("data", "controller"), "\t")),
    ("VisitorRegistered site empty", changed("VisitorRegistered", ("data", "site"), "")),
    ("ConsentGiven controller a list", changed("ConsentGiven", ("data", "controller"), ["x"])),
    *[
        (
            f"ConsentGiven subject_role {value!r}",
            changed("ConsentGiven", ("data", "subject_role"), value),
        )
        for value in (
            "admin",
            "Customer_Contact",
            "customer contact",
            "",
            "visitors",
            None,
            1,
            ["user"],
        )
    ],
    *[
        (
            f"ConsentGiven expires_at {value!r}",
            changed("ConsentGiven", ("data", "expires_at"), value),
        )
        for value in (
            "2026-04-01",
            "2026-04-01T00:00:00",
            "2026-04-01T00:00Z",
            "2026-02-30T00:00:00Z",
            "",
            1772352000,
            ["2026-04-01T00:00:00Z"],
            {},
        )
    ],
    *[
        (f"ConsentGiven notice {value!r}", changed("ConsentGiven", ("data", "notice"), value))
        for value in (
            "privacy-notice-v1",
            [],
            ["privacy-notice", "2026-01"],
            {"id": "privacy-notice", "version": "2026-01"},
            {"version": "2026-01", "content_sha256": "ab"},
            NOTICE | {"id": 5},
            NOTICE | {"version": None},
            NOTICE | {"content_sha256": ["ab"]},
        )
    ],
    ("ConsentGiven channel a number", changed("ConsentGiven", ("data", "channel"), 5)),
    (
        "ConsentGiven policy_version a number",
        changed("ConsentGiven", ("data", "policy_version"), 2),
    ),
    ("ConsentGiven evidence a string", changed("ConsentGiven", ("data", "evidence"), "signed")),
    ("ConsentGiven evidence a list", changed("ConsentGiven", ("data", "evidence"), [])),
    # ConsentWithdrawn
    ("ConsentWithdrawn without purpose", changed("ConsentWithdrawn", ("data", "purpose"))),
    ("ConsentWithdrawn without controller", changed("ConsentWithdrawn", ("data", "controller"))),
    (
        "ConsentWithdrawn controller a number",
        changed("ConsentWithdrawn", ("data", "controller"), 5),
    ),
    ("ConsentWithdrawn channel a list", changed("ConsentWithdrawn", ("data", "channel"), [])),
    ("ConsentWithdrawn reason a number", changed("ConsentWithdrawn", ("data", "reason"), 5)),
    # DataShared
    *[
        (f"DataShared without {name}", changed("DataShared", ("data", name)))
        for name in ("purpose", "subject_role", "controller", "recipient", "data_categories")
    ],
    ("DataShared subject_role unknown", changed("DataShared", ("data", "subject_role"), "ceo")),
    *[
        (f"DataShared recipient {value!r}", changed("DataShared", ("data", "recipient"), value))
        for value in (
            "partner",
            None,
            ["partner", "northwind-consulting"],
            {},
            {"kind": "partner"},
            {"id": "northwind-consulting"},
            {"kind": "", "id": "northwind-consulting"},
            {"kind": "  ", "id": "northwind-consulting"},
            {"kind": "partner", "id": ""},
            {"kind": "partner", "id": "\t"},
            {"kind": 5, "id": "northwind-consulting"},
            {"kind": "partner", "id": 7},
            {"kind": None, "id": "northwind-consulting"},
            {"kind": "partner", "id": "northwind-consulting", "name": 5},
        )
    ],
    *[
        (
            f"DataShared data_categories {value!r}",
            changed("DataShared", ("data", "data_categories"), value),
        )
        for value in (
            [],
            "contact_details",
            [""],
            ["   "],
            ["contact_details", ""],
            ["contact_details", 5],
            [None],
            [["contact_details"]],
            None,
            {},
        )
    ],
    *[
        (f"DataShared legal_basis {value!r}", changed("DataShared", ("data", "legal_basis"), value))
        for value in (
            {},
            {"kind": ""},
            {"kind": "  "},
            {"reference": "TOSLO-2026-1"},
            {"kind": 5},
            {"kind": None, "reference": "TOSLO-2026-1"},
            {"kind": "court_order", "reference": 5},
            {"kind": "court_order", "reference": ["TOSLO-2026-1"]},
            "court_order",
            [],
        )
    ],
    # VisitorRegistered
    ("VisitorRegistered without site", changed("VisitorRegistered", ("data", "site"))),
    ("VisitorRegistered site a number", changed("VisitorRegistered", ("data", "site"), 5)),
    ("VisitorRegistered site null", changed("VisitorRegistered", ("data", "site"), None)),
    *[
        (
            f"VisitorRegistered rights_notice {value!r}",
            changed("VisitorRegistered", ("data", "rights_notice"), value),
        )
        for value in (3, 1.0, True, ["visitor-notice-v3"], {})
    ],
    ("VisitorRegistered host a number", changed("VisitorRegistered", ("data", "host"), 5)),
    # ErasureRequested
    ("ErasureRequested reason a number", changed("ErasureRequested", ("data", "reason"), 5)),
    (
        "ErasureRequested requested_via a list",
        changed("ErasureRequested", ("data", "requested_via"), []),
    ),
]

TOO_LARGE: list[tuple[str, bytes | str]] = [
    ("one byte over", line(event(padding="x" * (262_145 - len(line(event(padding=""))))))),
    ("one byte over, line break after", line(event(padding="x" * 262_200)) + b"\n"),
    ("over and not JSON either", b"{" * 262_145),
    ("over and invalid UTF-8", b"\xff" * 300_000),
    ("a str over in UTF-8", json.dumps(event(padding="ø" * 131_100), ensure_ascii=False)),
]

REJECTED = [
    *[(name, raw, Reason.TOO_LARGE) for name, raw in TOO_LARGE],
    *[(name, raw, Reason.INVALID_JSON) for name, raw in INVALID_JSON],
    *[(name, raw, Reason.INVALID_ENVELOPE) for name, raw in INVALID_ENVELOPE],
    *[(name, raw, Reason.UNKNOWN_TYPE) for name, raw in UNKNOWN_TYPE],
    *[(name, raw, Reason.INVALID_DATA) for name, raw in INVALID_DATA],
]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [pytest.param(raw, reason, id=f"{reason.value}: {name}") for name, raw, reason in REJECTED],
)
def test_rejected_with_its_reason(raw: bytes | str, reason: Reason) -> None:
    rejection = validate(raw)
    assert isinstance(rejection, Rejection), rejection
    assert rejection.reason is reason, rejection.detail
    assert rejection.detail.strip(), "every rejection says why, for people"


def test_each_reason_has_several_cases() -> None:
    by_reason = {reason: sum(1 for *_, r in REJECTED if r is reason) for reason in Reason}
    assert by_reason.pop(Reason.ID_CONFLICT) == 0  # needs history: see the admit tests
    assert by_reason.pop(Reason.UNPROCESSABLE) == 0  # the worker's, when storing fails
    assert all(count >= 5 for count in by_reason.values()), by_reason


@pytest.mark.parametrize(
    ("raw", "mentioned"),
    [
        (changed("DataShared", ("time",)), "time"),
        (changed("DataShared", ("time",), "2026-03-01T08:00:00"), "time"),
        (changed("DataShared", ("subject",), " "), "subject"),
        (changed("DataShared", ("specversion",), "2.0"), "specversion"),
        (line(event(type="ConsentTaken")), "ConsentTaken"),
        (changed("DataShared", ("data",)), "data"),
        (changed("DataShared", ("data", "recipient", "kind"), ""), "data.recipient.kind"),
        (changed("DataShared", ("data", "legal_basis"), {}), "data.legal_basis.kind"),
        (changed("DataShared", ("data", "data_categories"), []), "data.data_categories"),
        (changed("ConsentGiven", ("data", "subject_role"), "admin"), "data.subject_role"),
        (changed("ConsentGiven", ("data", "expires_at"), "soon"), "data.expires_at"),
        (changed("ConsentGiven", ("data", "notice"), {"id": "n"}), "data.notice.version"),
        (changed("VisitorRegistered", ("data", "rights_notice"), 3), "data.rights_notice"),
    ],
)
def test_the_detail_names_what_is_wrong(raw: bytes, mentioned: str) -> None:
    rejection = validate(raw)
    assert isinstance(rejection, Rejection)
    assert mentioned in rejection.detail


def test_a_rejection_carries_the_id_when_there_is_one() -> None:
    with_id = validate(changed("DataShared", ("time",), "nope"))
    assert isinstance(with_id, Rejection)
    assert with_id.event_id == "evt-1"
    for raw in (
        b"not json",
        changed("DataShared", ("id",), " "),
        changed("DataShared", ("id",), 5),
    ):
        rejection = validate(raw)
        assert isinstance(rejection, Rejection)
        assert rejection.event_id is None


# -- accepted ------------------------------------------------------------------

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    *[(f"plain {kind}", event(kind)) for kind in VALID_DATA],
    ("without the optional datacontenttype", edited(event(), ("datacontenttype",))),
    ("with a dataschema", event(dataschema="https://example.org/schemas/DataShared.json")),
    # CloudEvents JSON format: a null attribute is decoded as unset.
    ("datacontenttype null", event(datacontenttype=None)),
    ("dataschema null", event(dataschema=None)),
    ("lower-case t and z", event(time="2026-03-01t08:00:00z")),
    ("an offset and a fraction", event(time="2026-03-01T09:00:00.123456789+01:00")),
    ("a negative offset", event(time="2026-03-01T03:00:00-05:00")),
    (
        "ConsentGiven with every optional field",
        edited(
            event("ConsentGiven"),
            ("data",),
            VALID_DATA["ConsentGiven"]
            | {
                "expires_at": "2027-03-01T00:00:00+01:00",
                "channel": "web",
                "policy_version": "2026-01",
                "notice": NOTICE,
                "evidence": {"ip": "192.0.2.1", "form": {"checked": True}},
            },
        ),
    ),
    (
        "ConsentGiven optional fields null",
        edited(
            event("ConsentGiven"),
            ("data",),
            VALID_DATA["ConsentGiven"]
            | dict.fromkeys(("expires_at", "channel", "policy_version", "notice", "evidence")),
        ),
    ),
    (
        "ConsentGiven notice with empty strings",
        body_with(
            "ConsentGiven", ("data", "notice"), {"id": "", "version": "", "content_sha256": ""}
        ),
    ),
    (
        "ConsentWithdrawn with channel and reason",
        edited(
            event("ConsentWithdrawn"),
            ("data",),
            VALID_DATA["ConsentWithdrawn"] | {"channel": "app", "reason": "moved"},
        ),
    ),
    (
        "DataShared recipient with a name",
        body_with("DataShared", ("data", "recipient", "name"), "Northwind Consulting AS"),
    ),
    (
        "DataShared recipient name null",
        body_with("DataShared", ("data", "recipient", "name"), None),
    ),
    (
        "DataShared legal_basis without reference",
        body_with("DataShared", ("data", "legal_basis"), {"kind": "court_order"}),
    ),
    (
        "DataShared legal_basis reference null",
        body_with(
            "DataShared", ("data", "legal_basis"), {"kind": "court_order", "reference": None}
        ),
    ),
    # A blank reference is no legal basis, but that is a verdict, not malformed input.
    (
        "DataShared legal_basis reference blank",
        body_with("DataShared", ("data", "legal_basis"), {"kind": "court_order", "reference": " "}),
    ),
    ("DataShared legal_basis null", body_with("DataShared", ("data", "legal_basis"), None)),
    (
        "DataShared several categories",
        body_with(
            "DataShared", ("data", "data_categories"), ["contact_details", "invoice_history"]
        ),
    ),
    (
        "DataShared unknown recipient kind",
        body_with("DataShared", ("data", "recipient", "kind"), "data_broker"),
    ),
    ("DataShared unknown purpose", body_with("DataShared", ("data", "purpose"), "profiling")),
    (
        "VisitorRegistered rights_notice null",
        body_with("VisitorRegistered", ("data", "rights_notice"), None),
    ),
    (
        "VisitorRegistered rights_notice absent",
        body_with("VisitorRegistered", ("data", "rights_notice")),
    ),
    (
        "VisitorRegistered rights_notice blank",
        body_with("VisitorRegistered", ("data", "rights_notice"), "  "),
    ),
    (
        "VisitorRegistered with a host",
        body_with("VisitorRegistered", ("data", "host"), "reception"),
    ),
    (
        "ErasureRequested with reason and channel",
        body_with(
            "ErasureRequested", ("data",), {"reason": "moved away", "requested_via": "email"}
        ),
    ),
    ("non-ASCII text", event(subject="Åse Ødegård", source="urn:system:crm/øst")),
    (
        "unknown extra fields everywhere",
        edited(
            edited(
                edited(
                    event(traceparent="00-abc-def-01", partitionkey=7, extension={"a": [1, 2]}),
                    ("data", "campaign"),
                    {"name": "spring", "budget": 12.5},
                ),
                ("data", "recipient", "country"),
                "NO",
            ),
            ("data", "legal_basis"),
            {"kind": "court_order", "reference": "TOSLO-1", "court": "Oslo tingrett"},
        ),
    ),
    (
        "unknown extra fields in a notice",
        body_with("ConsentGiven", ("data", "notice"), NOTICE | {"language": "nb"}),
    ),
    (
        "big integers in extra fields",
        event(sequence=123456789012345678901234567890, low=-9223372036854775809),
    ),
]


@pytest.mark.parametrize(("body",), [pytest.param(body, id=name) for name, body in ACCEPTED])
def test_accepted_and_kept_whole(body: dict[str, Any]) -> None:
    checked = validate(line(body))
    assert isinstance(checked, ValidEvent), checked
    assert checked.id == body["id"]
    assert checked.type == body["type"]
    assert checked.subject == body["subject"]
    assert checked.body == body  # unknown extra fields are kept, never an error
    assert isinstance(checked.instant, int)


def test_a_str_record_is_read_like_bytes() -> None:
    body = event()
    from_text = validate(json.dumps(body))
    from_bytes = validate(line(body))
    assert isinstance(from_text, ValidEvent)
    assert isinstance(from_bytes, ValidEvent)
    assert content_digest(from_text.body) == content_digest(from_bytes.body)
    assert from_text.instant == from_bytes.instant


def test_the_instant_is_the_event_time_across_offsets() -> None:
    here = validate(line(event(time="2026-03-01T10:00:00+02:00")))
    there = validate(line(event(time="2026-03-01T08:00:00Z")))
    assert isinstance(here, ValidEvent)
    assert isinstance(there, ValidEvent)
    assert here.instant == there.instant


def test_big_integers_are_kept_exactly() -> None:
    big = 123456789012345678901234567890
    checked = validate(line(event(sequence=big, low=-9223372036854775809)))
    assert isinstance(checked, ValidEvent)
    assert checked.body["sequence"] == big
    assert isinstance(checked.body["sequence"], int)
    assert checked.body["low"] == -9223372036854775809


# -- duplicates and conflicts ------------------------------------------------


def valid(raw: bytes | str) -> ValidEvent:
    checked = validate(raw)
    assert isinstance(checked, ValidEvent), checked
    return checked


def decide(event: ValidEvent, earlier: ValidEvent | None) -> Admission | Rejection:
    """admit() for ``event`` after ``earlier`` was accepted under its id, if it was."""
    accepted = content_digest(earlier.body) if earlier is not None else None
    return admit(event, content_digest(event.body), accepted)


def test_the_first_time_an_id_is_seen_it_is_accepted() -> None:
    assert decide(valid(line(event())), None) is Admission.ACCEPT


@pytest.mark.parametrize(
    "redelivered",
    [
        pytest.param(lambda body: json.dumps(body), id="same text"),
        pytest.param(lambda body: json.dumps(body, indent=4), id="indented"),
        pytest.param(lambda body: json.dumps(body, separators=(",", ":")), id="compact"),
        pytest.param(lambda body: json.dumps(body, sort_keys=True), id="sorted keys"),
        pytest.param(
            lambda body: json.dumps(dict(reversed(list(body.items())))), id="reversed keys"
        ),
        pytest.param(
            lambda body: json.dumps(
                body | {"data": dict(reversed(list(body["data"].items())))}, sort_keys=False
            ),
            id="nested keys reordered",
        ),
        pytest.param(lambda body: json.dumps(body, ensure_ascii=True), id="escaped non-ASCII"),
        pytest.param(lambda body: " \t" + json.dumps(body) + " \r\n", id="surrounding space"),
    ],
)
def test_same_content_is_a_duplicate(redelivered: Any) -> None:
    body = event(subject="Åse", data=VALID_DATA["DataShared"] | {"note": "blåbær"})
    first = valid(json.dumps(body, ensure_ascii=False))
    again = valid(redelivered(body))
    assert decide(again, first) is Admission.DUPLICATE


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(event(source="urn:system:other"), id="other source"),
        pytest.param(event(time="2026-03-01T08:00:01Z"), id="other time"),
        # The same instant written differently is different content (equal as JSON, not as time).
        pytest.param(event(time="2026-03-01T10:00:00+02:00"), id="same instant other text"),
        pytest.param(edited(event(), ("data", "purpose"), "support"), id="other data"),
        pytest.param(event(extra="field"), id="one more field"),
        pytest.param(edited(event(), ("datacontenttype",)), id="one field less"),
        pytest.param(event(type="ConsentGiven", data=VALID_DATA["ConsentGiven"]), id="other type"),
    ],
)
def test_other_content_under_the_same_id_is_a_conflict(other: dict[str, Any]) -> None:
    first = valid(line(event()))
    conflict = decide(valid(line(other)), first)
    assert isinstance(conflict, Rejection)
    assert conflict.reason is Reason.ID_CONFLICT
    assert conflict.event_id == "evt-1"
    assert "evt-1" in conflict.detail


def test_big_integers_decide_sameness_exactly() -> None:
    """orjson would read integers beyond 64 bits as floats, which would make these equal."""
    base = 123456789012345678901234567890
    first = valid(line(event(n=base)))
    assert decide(valid(line(event(n=base))), first) is Admission.DUPLICATE
    assert isinstance(decide(valid(line(event(n=base + 1))), first), Rejection)
    low = valid(line(event(n=-9223372036854775809)))
    assert isinstance(decide(valid(line(event(n=-9223372036854775810))), low), Rejection)
    assert isinstance(decide(valid(line(event(n=float(base)))), first), Rejection)


def test_duplicates_and_conflicts_through_the_ledger() -> None:
    ledger = OfflineLedger(load_reference_policy())
    original = event(
        data=VALID_DATA["DataShared"] | {"recipient": {"kind": "partner", "id": "acme"}}
    )
    ledger.ingest(line(original), 1)
    ledger.ingest(json.dumps(original, indent=2, sort_keys=True).encode(), 2)
    ledger.ingest(line(edited(original, ("data", "recipient", "id"), "northwind-consulting")), 3)
    ledger.ingest(line(original), 4)

    assert ledger.counts.accepted == 1
    assert ledger.counts.duplicates == 2
    assert ledger.counts.rejected == 1
    assert [(r.line, r.rejection.reason) for r in ledger.rejected] == [(3, Reason.ID_CONFLICT)]
    # The conflicting version changed nothing: the first one's verdict stands.
    assert [v.key for v in ledger.open_violations()] == [("evt-1", "partner-not-certified")]


def pipe_of(content: bytes) -> BinaryIO:
    """A pipe holding ``content``: a file that cannot be read again."""
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, content), os.close(write_end)))
    writer.start()
    return os.fdopen(read_end, "rb")


@pytest.mark.parametrize("source", ["file", "pipe"])
@pytest.mark.parametrize("padding", [0, 200_000], ids=["short lines", "lines beyond 64 KiB"])
def test_a_file_is_judged_like_its_lines(source: str, padding: int, tmp_path: pathlib.Path) -> None:
    # check reads an id's first line again when the id comes back, instead of
    # keeping its digest: the same answers, from a file or from a pipe.
    original = event(
        data=VALID_DATA["DataShared"] | {"recipient": {"kind": "partner", "id": "acme"}},
        padding="x" * padding,
    )
    content = b"\n".join([
        line(event(id="evt-0", data=VALID_DATA["DataShared"] | {"note": "\n"})),
        line(original),
        json.dumps(original, indent=2, sort_keys=True).replace("\n", "").encode(),
        line(edited(original, ("data", "recipient", "id"), "northwind-consulting")),
        b"",
        b" \t\r",  # blank too
        line(original) + b"\r",  # a line ending in CR LF
        line(original),  # the last line, with no line break after it
    ])  # fmt: skip
    by_lines = OfflineLedger(load_reference_policy())
    by_lines.ingest_lines(content.splitlines())
    from_file = OfflineLedger(load_reference_policy())
    if source == "file":
        (tmp_path / "events.jsonl").write_bytes(content)
        with (tmp_path / "events.jsonl").open("rb") as opened:
            from_file.ingest_file(opened)
    else:
        with pipe_of(content) as opened:
            from_file.ingest_file(opened)

    assert from_file.counts == by_lines.counts
    assert (from_file.counts.accepted, from_file.counts.duplicates) == (2, 3)
    assert [(r.line, r.rejection.reason) for r in from_file.rejected] == [(4, Reason.ID_CONFLICT)]
    assert from_file.open_violations() == by_lines.open_violations()


def test_a_rejected_event_does_not_take_its_id() -> None:
    ledger = OfflineLedger(load_reference_policy())
    ledger.ingest(changed("DataShared", ("data", "data_categories"), []), 1)
    ledger.ingest(line(event()), 2)
    assert ledger.counts.accepted == 1
    assert [(r.line, r.rejection.reason) for r in ledger.rejected] == [(1, Reason.INVALID_DATA)]


# -- the fast validator and the pydantic models cannot drift -----------------


def verdict_of_the_models(body: Any) -> Reason | None:
    """The reason the models give, mapped onto CONTRACT §2's order of checks."""
    if not isinstance(body, dict):
        return Reason.INVALID_JSON
    try:
        Envelope.model_validate(body)
    except ValidationError:
        return Reason.INVALID_ENVELOPE
    model = EVENT_MODELS.get(body["type"])
    if model is None:
        return Reason.UNKNOWN_TYPE
    try:
        model.model_validate(body)
    except ValidationError:
        return Reason.INVALID_DATA
    return None


def verdict_of_intake(body: Any) -> Reason | None:
    checked = validate(json.dumps(body).encode())
    return checked.reason if isinstance(checked, Rejection) else None


TIMES = ["2026-03-01T08:00:00Z", "2026-03-01t09:00:00.5+01:00", "2026-03-01T03:00:00-05:00"]
ODD_VALUES = [
    None, 0, 1, -1.5, True, False, 2**70,
    "", " ", "\t\n", "\u00a0", "\u3000", "\x1c", "\u200b", "x",
    "DataShared", "ConsentGiven", "customer_contact", "visitor", "1.0",
    "2026-03-01T08:00:00Z", "2026-03-01T08:00:00", "2026-03-01T08:00Z", "2026-02-30T08:00:00Z",
    [], ["x"], [""], [" "], ["contact_details", 1], [None],
    {}, {"kind": "partner", "id": "x"}, {"kind": "court_order"}, {"kind": " "},
    {"kind": "court_order", "reference": 5}, NOTICE, {"id": "n"},
]  # fmt: skip
EXTRA_KEYS = [
    "datacontenttype", "dataschema", "expires_at", "channel", "policy_version", "notice",
    "evidence", "reason", "requested_via", "rights_notice", "host", "name", "reference",
    "legal_basis", "kind", "id", "data", "purpose", "x-unknown",
]  # fmt: skip


def optional(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


DATA_STRATEGIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "ConsentGiven": st.tuples(
        st.fixed_dictionaries(
            {
                "purpose": st.sampled_from(["marketing", "cloud_access", ""]),
                "subject_role": st.sampled_from(
                    ["customer_contact", "user", "jobseeker", "visitor"]
                ),
                "controller": st.just("visma-software-as"),
            }
        ),
        optional(
            {
                "expires_at": st.sampled_from([None, *TIMES]),
                "channel": st.sampled_from([None, "web"]),
                "policy_version": st.just("2026-01"),
                "notice": st.sampled_from([None, NOTICE]),
                "evidence": st.sampled_from([None, {}, {"ip": "192.0.2.1"}]),
            }
        ),
    ).map(lambda parts: parts[0] | parts[1]),
    "ConsentWithdrawn": st.tuples(
        st.fixed_dictionaries({"purpose": st.just("marketing"), "controller": st.just("c")}),
        optional({"channel": st.just("app"), "reason": st.sampled_from([None, "moved"])}),
    ).map(lambda parts: parts[0] | parts[1]),
    "DataShared": st.tuples(
        st.fixed_dictionaries(
            {
                "purpose": st.just("delivery"),
                "subject_role": st.just("user"),
                "controller": st.just("c"),
                "recipient": st.tuples(
                    st.fixed_dictionaries({"kind": st.just("partner"), "id": st.just("p")}),
                    optional({"name": st.sampled_from([None, "P"])}),
                ).map(lambda parts: parts[0] | parts[1]),
                "data_categories": st.lists(
                    st.sampled_from(["contact_details", "forum_post"]), min_size=1, max_size=3
                ),
            }
        ),
        optional(
            {
                "legal_basis": st.sampled_from(
                    [None, {"kind": "court_order"}, {"kind": "nda", "reference": "NDA-1"}]
                )
            }
        ),
    ).map(lambda parts: parts[0] | parts[1]),
    "VisitorRegistered": st.tuples(
        st.fixed_dictionaries({"site": st.just("oslo-hq")}),
        optional({"rights_notice": st.sampled_from([None, "", "v3"]), "host": st.just("h")}),
    ).map(lambda parts: parts[0] | parts[1]),
    "ErasureRequested": optional(
        {"reason": st.just("moved"), "requested_via": st.sampled_from([None, "email"])}
    ),
}

valid_bodies = st.sampled_from(sorted(DATA_STRATEGIES)).flatmap(
    lambda kind: st.builds(
        lambda data, time, extra: event(kind, data=data, time=time) | extra,
        DATA_STRATEGIES[kind],
        st.sampled_from(TIMES),
        optional({"dataschema": st.just("https://example.org/s.json"), "x-trace": st.just("t")}),
    )
)


def paths_in(value: Any, prefix: Path = ()) -> list[Path]:
    found: list[Path] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            found.append((*prefix, key))
            found.extend(paths_in(inner, (*prefix, key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.append((*prefix, index))
            found.extend(paths_in(inner, (*prefix, index)))
    return found


def dicts_in(value: Any, prefix: Path = ()) -> list[Path]:
    if not isinstance(value, dict):
        return []
    return [prefix] + [p for key, inner in value.items() for p in dicts_in(inner, (*prefix, key))]


def mutate(body: dict[str, Any], draw: st.DataObject) -> dict[str, Any]:
    operation = draw.draw(st.sampled_from(["drop", "retype", "blank", "add"]))
    if operation == "add":
        where = draw.draw(st.sampled_from(dicts_in(body)))
        key = draw.draw(st.sampled_from(EXTRA_KEYS))
        value = draw.draw(st.sampled_from(ODD_VALUES))
        return edited(body, (*where, key), copy.deepcopy(value))
    paths = paths_in(body)
    path = draw.draw(st.sampled_from(paths))
    if operation == "drop":
        return edited(body, path)
    if operation == "blank":
        return edited(body, path, draw.draw(st.sampled_from(["", " ", "\t", "\u00a0\u2003"])))
    return edited(body, path, copy.deepcopy(draw.draw(st.sampled_from(ODD_VALUES))))


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(body=valid_bodies, mutations=st.integers(0, 3), draw=st.data())
def test_intake_and_the_models_agree(
    body: dict[str, Any], mutations: int, draw: st.DataObject
) -> None:
    for _ in range(mutations):
        if isinstance(body.get("data"), list):
            break  # a list `data` from "retype" leaves no dict to mutate into
        body = mutate(body, draw)
    assert verdict_of_intake(body) == verdict_of_the_models(body)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(raw, id=f"{reason.value}: {name}")
        for name, raw, reason in REJECTED
        if reason not in (Reason.INVALID_JSON, Reason.TOO_LARGE)  # the models see no bytes
    ]
    + [pytest.param(line(body), id=f"accepted: {name}") for name, body in ACCEPTED],
)
def test_every_table_case_agrees_with_the_models(raw: bytes) -> None:
    body = json.loads(raw)
    assert verdict_of_intake(body) == verdict_of_the_models(body)


def test_compact_json_keeps_key_order_and_exact_big_integers() -> None:
    body = {"b": 1, "a": [2**70 + 1, 1.5, "é"]}
    assert compact_json(body) == b'{"b":1,"a":[1180591620717411303425,1.5,"\\u00e9"]}'
    assert compact_json({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'.encode()
