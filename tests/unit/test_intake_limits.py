"""Intake at the contract's bounds (CONTRACT §1 limits, §2 ``too-large`` and
I-JSON): each boundary from both sides, and properties over arbitrary input."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent_ledger.core.batch import Record, check_record
from consent_ledger.core.intake import (
    MAX_DEPTH,
    MAX_RECORD_BYTES,
    InvalidJson,
    Reason,
    Rejection,
    ValidEvent,
    compact_json,
    parse_json,
    subject_named_in,
    validate,
    validate_parsed,
    validate_request_body,
)
from tests.unit.test_intake import event, line

pytestmark = pytest.mark.unit


def reason_of(raw: bytes | str) -> Reason | None:
    checked = validate(raw)
    return checked.reason if isinstance(checked, Rejection) else None


def padded_to(size: int, **attributes: Any) -> bytes:
    """A valid event of exactly ``size`` bytes, filled up in an extra field."""
    bare = line(event(padding="", **attributes))
    padded = line(event(padding="p" * (size - len(bare)), **attributes))
    assert len(padded) == size
    return padded


def nested(levels: int, opening: str = '{"n":', closing: str = "}") -> str:
    """``data.evidence`` nested so that the event is ``levels`` deep (event = 1, data = 2)."""
    inner = levels - 2  # evidence itself is level 3
    return opening * (inner - 1) + "{}" + closing * (inner - 1)


def with_evidence(evidence_json: str) -> bytes:
    text = line(event("ConsentGiven", data={"purpose": "m", "subject_role": "user",
                                            "controller": "c", "evidence": "EVIDENCE"}))  # fmt: skip
    return text.replace(b'"EVIDENCE"', evidence_json.encode())


# -- too-large -----------------------------------------------------------------

SIZES: list[tuple[str, bytes | str, Reason | None]] = [
    ("262,143 bytes", padded_to(MAX_RECORD_BYTES - 1), None),
    ("262,144 bytes", padded_to(MAX_RECORD_BYTES), None),
    ("262,144 bytes and a line break", padded_to(MAX_RECORD_BYTES) + b"\n", None),
    ("262,144 bytes and CR LF", padded_to(MAX_RECORD_BYTES) + b"\r\n", None),
    ("262,145 bytes", padded_to(MAX_RECORD_BYTES + 1), Reason.TOO_LARGE),
    ("262,145 bytes and a line break", padded_to(MAX_RECORD_BYTES + 1) + b"\n", Reason.TOO_LARGE),
    ("262,145 bytes of no JSON", b"x" * (MAX_RECORD_BYTES + 1), Reason.TOO_LARGE),
    ("262,144 bytes of no JSON", b"x" * MAX_RECORD_BYTES, Reason.INVALID_JSON),
    ("text of 262,144 bytes in UTF-8", padded_to(MAX_RECORD_BYTES).decode(), None),
    (
        "text of fewer characters, more bytes",
        line(event(padding="ø" * 131_100)).decode(),
        Reason.TOO_LARGE,
    ),
]


@pytest.mark.parametrize(
    ("raw", "reason"), [pytest.param(raw, reason, id=name) for name, raw, reason in SIZES]
)
def test_record_size(raw: bytes | str, reason: Reason | None) -> None:
    assert reason_of(raw) is reason


# -- I-JSON --------------------------------------------------------------------

PLAIN = line(event())
I_JSON: list[tuple[str, bytes, Reason | None]] = [
    # nesting: the event is level 1
    ("32 levels of objects", with_evidence(nested(32)), None),
    ("33 levels of objects", with_evidence(nested(33)), Reason.INVALID_JSON),
    ("32 levels, arrays inside", with_evidence('{"a":' + "[" * 29 + "]" * 29 + "}"), None),
    ("33 levels, arrays inside", with_evidence('{"a":' + "[" * 30 + "]" * 30 + "}"), Reason.INVALID_JSON),
    ("40,000 levels of objects", b'{"a":' * 40_000 + b"1" + b"}" * 40_000, Reason.INVALID_JSON),
    ("100,000 levels of arrays", b"[" * 100_000 + b"]" * 100_000, Reason.INVALID_JSON),
    ("100,000 levels, unclosed", b"[" * 100_000, Reason.INVALID_JSON),
    ("brackets inside strings are text", line(event(note="{[" * 1000 + "\\" + '"')), None),
    ("many objects side by side", line(event(items=[{"a": i} for i in range(200)])), None),
    # a member name twice in one object
    ("a name twice at the top", PLAIN.replace(b'"id": "evt-1"', b'"id": "evt-1", "id": "evt-2"'), Reason.INVALID_JSON),
    ("the same name and value twice", PLAIN.replace(b'"id": "evt-1"', b'"id": "evt-1", "id": "evt-1"'), Reason.INVALID_JSON),
    ("a name twice in data", PLAIN.replace(b'"purpose": "delivery"', b'"purpose": "delivery", "purpose": "x"'), Reason.INVALID_JSON),
    ("a name twice in recipient", PLAIN.replace(b'"kind": "partner"', b'"kind": "partner", "kind": "group_company"'), Reason.INVALID_JSON),
    ("a name twice, deep", with_evidence('{"a":{"b":{"c":{"d":[{"e":1,"e":{}}]}}}}'), Reason.INVALID_JSON),
    ("a name twice in an object in an array", line(event(items="X")).replace(b'"X"', b'[1, {"a": 1, "a": 2}]'), Reason.INVALID_JSON),
    ("a name twice, once escaped", PLAIN.replace(b'"id": "evt-1"', b'"id": "evt-1", "\\u0069d": "evt-2"'), Reason.INVALID_JSON),
    ("a name twice, space before a colon", PLAIN.replace(b'"id": "evt-1"', b'"id" : "evt-1", "id":"x"'), Reason.INVALID_JSON),
    ("a name twice, strings holding quotes", line(event(note='say "x":')).replace(b'"id": "evt-1"', b'"id": "evt-1", "id": "e"'), Reason.INVALID_JSON),
    ("a name twice, a quote escaped as \\u0022", PLAIN.replace(b'"id": "evt-1"', b'"id": "evt-1", "q": "\\u0022", "id": "e"'), Reason.INVALID_JSON),
    ("the same name in different objects", line(event(data={**event()["data"], "id": "x", "source": "y"})), None),
    ("space before every colon", PLAIN.replace(b'":', b'" :'), None),
    ("pretty-printed", json.dumps(event(), indent=2).encode(), None),
    ("strings holding quotes and colons", line(event(note='"a":"b"', other='\\":')), None),
    # U+0000 and surrogates
    ("an escaped NUL in a subject", PLAIN.replace(b'"subject-1"', b'"nul\\u0000subject"'), Reason.INVALID_JSON),
    ("an escaped NUL in an extra field", line(event(note="X")).replace(b'"X"', b'"\\u0000"'), Reason.INVALID_JSON),
    ("an escaped NUL in a name", line(event(note="X")).replace(b'"note"', b'"n\\u0000"'), Reason.INVALID_JSON),
    ("a raw NUL byte", PLAIN.replace(b'"subject-1"', b'"nul\x00subject"'), Reason.INVALID_JSON),
    ("an escaped backslash before u0000", PLAIN.replace(b'"subject-1"', b'"s\\\\u0000"'), None),
    ("an escaped lone high surrogate", PLAIN.replace(b'"subject-1"', b'"s\\ud800x"'), Reason.INVALID_JSON),
    ("an escaped lone low surrogate", PLAIN.replace(b'"subject-1"', b'"s\\udc00x"'), Reason.INVALID_JSON),
    ("a high surrogate at the end", PLAIN.replace(b'"subject-1"', b'"s\\uDBFF"'), Reason.INVALID_JSON),
    ("a surrogate pair reversed", PLAIN.replace(b'"subject-1"', b'"s\\udc00\\ud800"'), Reason.INVALID_JSON),
    ("a high surrogate, then text, then a low one", PLAIN.replace(b'"subject-1"', b'"\\ud83dx\\ude00"'), Reason.INVALID_JSON),
    ("a lone surrogate in a name", line(event(note="X")).replace(b'"note"', b'"\\ud800"'), Reason.INVALID_JSON),
    ("a surrogate encoded in UTF-8", PLAIN.replace(b'"subject-1"', b'"s\xed\xa0\x80"'), Reason.INVALID_JSON),
    ("an escaped surrogate pair", PLAIN.replace(b'"subject-1"', b'"s\\ud83d\\ude00"'), None),
    ("an escaped pair in upper case", PLAIN.replace(b'"subject-1"', b'"s\\uD83D\\uDE00"'), None),
    ("escaped non-ASCII", json.dumps(event(subject="Åse Ødegård 😀")).encode(), None),
    # the rest of I-JSON
    ("NaN nested", with_evidence('{"score": NaN}'), Reason.INVALID_JSON),
    ("-Infinity nested", with_evidence('{"score": [-Infinity]}'), Reason.INVALID_JSON),
    ("a byte order mark", b"\xef\xbb\xbf" + PLAIN, Reason.INVALID_JSON),
    ("invalid UTF-8", PLAIN.replace(b'"subject-1"', b'"s\xff"'), Reason.INVALID_JSON),
    ("a truncated UTF-8 sequence", PLAIN.replace(b'"subject-1"', b'"s\xc3"'), Reason.INVALID_JSON),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "reason"), [pytest.param(raw, reason, id=name) for name, raw, reason in I_JSON]
)
def test_i_json(raw: bytes, reason: Reason | None) -> None:
    checked = validate(raw)
    got = checked.reason if isinstance(checked, Rejection) else None
    assert got is reason, checked
    if isinstance(checked, Rejection):
        assert checked.detail.strip()


def test_the_detail_names_the_member_that_came_twice() -> None:
    checked = validate(PLAIN.replace(b'"kind": "partner"', b'"kind": "partner", "kind": "x"'))
    assert isinstance(checked, Rejection)
    assert "'kind' appears twice" in checked.detail


# -- CONTRACT §1 limits --------------------------------------------------------

DATA_STRINGS: list[tuple[str, tuple[str | int, ...]]] = [
    ("ConsentGiven", ("purpose",)),
    ("ConsentGiven", ("controller",)),
    ("ConsentGiven", ("channel",)),
    ("ConsentGiven", ("policy_version",)),
    ("ConsentGiven", ("notice", "id")),
    ("ConsentGiven", ("notice", "version")),
    ("ConsentGiven", ("notice", "content_sha256")),
    ("ConsentWithdrawn", ("purpose",)),
    ("ConsentWithdrawn", ("controller",)),
    ("ConsentWithdrawn", ("channel",)),
    ("ConsentWithdrawn", ("reason",)),
    ("DataShared", ("purpose",)),
    ("DataShared", ("controller",)),
    ("DataShared", ("recipient", "kind")),
    ("DataShared", ("recipient", "id")),
    ("DataShared", ("recipient", "name")),
    ("DataShared", ("data_categories", 0)),
    ("DataShared", ("legal_basis", "kind")),
    ("DataShared", ("legal_basis", "reference")),
    ("VisitorRegistered", ("site",)),
    ("VisitorRegistered", ("rights_notice",)),
    ("VisitorRegistered", ("host",)),
    ("ErasureRequested", ("reason",)),
    ("ErasureRequested", ("requested_via",)),
]

FULL_DATA: dict[str, dict[str, Any]] = {
    "ConsentGiven": {
        "purpose": "m", "subject_role": "user", "controller": "c", "channel": "web",
        "policy_version": "1", "notice": {"id": "n", "version": "1", "content_sha256": "ab"},
    },
    "ConsentWithdrawn": {"purpose": "m", "controller": "c", "channel": "app", "reason": "r"},
    "DataShared": {
        "purpose": "m", "subject_role": "user", "controller": "c",
        "recipient": {"kind": "partner", "id": "p", "name": "P"}, "data_categories": ["x"],
        "legal_basis": {"kind": "court_order", "reference": "r"},
    },
    "VisitorRegistered": {"site": "s", "rights_notice": "v", "host": "h"},
    "ErasureRequested": {"reason": "r", "requested_via": "email"},
}  # fmt: skip


def with_data_string(kind: str, path: tuple[str | int, ...], length: int) -> bytes:
    data = json.loads(json.dumps(FULL_DATA[kind]))
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = "ø" * length  # characters, not bytes, count
    return line(event(kind, data=data))


@pytest.mark.parametrize(
    ("kind", "path"),
    [pytest.param(k, p, id=f"{k} {'.'.join(map(str, p))}") for k, p in DATA_STRINGS],
)
def test_each_data_string_is_at_most_1024_characters(
    kind: str, path: tuple[str | int, ...]
) -> None:
    assert reason_of(with_data_string(kind, path, 1_023)) is None
    assert reason_of(with_data_string(kind, path, 1_024)) is None
    assert reason_of(with_data_string(kind, path, 1_025)) is Reason.INVALID_DATA


@pytest.mark.parametrize("attribute", ["id", "source", "subject"])
@pytest.mark.parametrize(
    ("length", "reason"), [(255, None), (256, None), (257, Reason.INVALID_ENVELOPE), (8_000, Reason.INVALID_ENVELOPE)]
)  # fmt: skip
def test_id_source_and_subject_are_at_most_256_characters(
    attribute: str, length: int, reason: Reason | None
) -> None:
    assert reason_of(line(event(**{attribute: "å" * length}))) is reason


def test_a_rejection_names_no_id_over_the_limit() -> None:
    """The id of a rejection is stored and indexed: never one no valid event has."""
    rejected = validate(line(event(id="i" * 8_000, time="never")))
    assert isinstance(rejected, Rejection)
    assert rejected.event_id is None
    assert "i" * 300 not in rejected.detail


@pytest.mark.parametrize(
    "raw",
    [
        PLAIN.replace(b'"subject-1"', b'"nul\\u0000subject"'),
        line(event(subject="s" * 257, time="never")),
        b'{"subject": "s\\ud800"}',
    ],
)
def test_no_subject_is_named_that_no_valid_event_could_hold(raw: bytes) -> None:
    assert subject_named_in(raw) is None


# -- objects that were never text: binary mode, the producer --------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (event(subject="nul\x00"), Reason.INVALID_JSON),
        (event(subject="surrogate\ud800"), Reason.INVALID_JSON),
        (event(note={"\x00": 1}), Reason.INVALID_JSON),
        (event(note=math.nan), Reason.INVALID_JSON),
        (event(note=json.loads(nested(34))), Reason.INVALID_JSON),
        (event(note=json.loads(nested(33))), None),
        (event(note=b"bytes"), Reason.INVALID_JSON),
        (event(subject="s" * 257), Reason.INVALID_ENVELOPE),
    ],
)
def test_a_parsed_object_is_held_to_i_json_too(body: dict[str, Any], reason: Reason | None) -> None:
    checked = validate_parsed(body)
    assert (checked.reason if isinstance(checked, Rejection) else None) is reason


def test_an_object_a_million_levels_deep_is_walked_without_recursion() -> None:
    deep: dict[str, Any] = {}
    for _ in range(1_000_000):
        deep = {"n": deep}
    checked = validate_parsed(event(note=deep))
    assert isinstance(checked, Rejection)
    assert checked.reason is Reason.INVALID_JSON


def test_a_binary_mode_record_is_held_to_the_same_limits() -> None:
    headers = [
        ("ce_specversion", b"1.0"), ("ce_id", b"b-1"), ("ce_source", b"urn:s"),
        ("ce_type", b"VisitorRegistered"), ("ce_subject", b"nul\x00"),
        ("ce_time", b"2026-03-01T08:00:00Z"),
    ]  # fmt: skip
    data = b'{"site": "oslo"}'
    nul = check_record(Record(0, 0, data, headers)).outcome
    assert isinstance(nul, Rejection) and nul.reason is Reason.INVALID_JSON
    headers[4] = ("ce_subject", b"s-1")
    assert isinstance(check_record(Record(0, 0, data, headers)).outcome, ValidEvent)
    big = b'{"site": "oslo", "p": "' + b"p" * MAX_RECORD_BYTES + b'"}'
    too_large = check_record(Record(0, 0, big, headers)).outcome
    assert isinstance(too_large, Rejection) and too_large.reason is Reason.TOO_LARGE


# -- POST /v1/events bodies ----------------------------------------------------


def reasons_of_body(body: bytes) -> list[Reason | None]:
    return [
        checked.reason if isinstance(checked, Rejection) else None
        for checked in validate_request_body(body)
    ]


@pytest.mark.parametrize(
    ("body", "reasons"),
    [
        (PLAIN, [None]),
        (b"  " + PLAIN + b"\r\n", [None]),
        (b"[" + PLAIN + b"," + line(event(id="e2")) + b"]", [None, None]),
        (b"[" + PLAIN + b", 1, " + PLAIN.replace(b'"id": "evt-1"', b'"id": 1, "id": 2') + b"]",
         [None, Reason.INVALID_JSON, Reason.INVALID_JSON]),
        (b"[" + padded_to(MAX_RECORD_BYTES) + b"," + padded_to(MAX_RECORD_BYTES + 1) + b"]",
         [None, Reason.TOO_LARGE]),
        (b"[" + with_evidence(nested(32)) + b"]", [None]),
        (b"[" + with_evidence(nested(33)) + b"]", [Reason.INVALID_JSON]),
        (b'{"a":' * 999 + b"1" + b"}" * 999, [Reason.INVALID_JSON]),
        (b"[" * 100_000 + b"]" * 100_000, [Reason.INVALID_JSON]),
        (b"[" + PLAIN + b",", [Reason.INVALID_JSON]),
        (b"[" + PLAIN + b", NaN]", [Reason.INVALID_JSON]),
        (b"[" + PLAIN.replace(b'"subject-1"', b'"\\u0000"') + b"]", [Reason.INVALID_JSON]),
        (b"[]", []),
    ],
)  # fmt: skip
def test_a_body_is_checked_event_by_event(body: bytes, reasons: list[Reason | None]) -> None:
    assert reasons_of_body(body) == reasons


def test_an_event_is_too_large_as_published_too() -> None:
    """1e5 is 100000.0 in compact JSON: what is published must be within the limit."""
    numbers = ",".join(["1e5"] * 60_000)
    sent = line(event(numbers="X")).replace(b'"X"', f"[{numbers}]".encode())
    assert len(sent) <= MAX_RECORD_BYTES
    assert reason_of(sent) is None
    assert reasons_of_body(sent) == [Reason.TOO_LARGE]
    assert reasons_of_body(b"[" + sent + b"]") == [Reason.TOO_LARGE]


# -- properties ----------------------------------------------------------------

PIECES = [
    b"{", b"}", b"[", b"]", b'"', b"\\", b":", b",", b" ", b"\n", b"\\u0000", b"\\ud800",
    b"\\udc00", b"\\ud83d\\ude00", b"\\\\", b'\\"', b"NaN", b"1e400", b"\xff", b"\xed\xa0\x80",
    b"\x00", b'"id":', b'"a":1', b'"subject": "s"', b"null", b"-0", b"1e5", b"\xef\xbb\xbf",
]  # fmt: skip


@st.composite
def mutated_records(draw: st.DrawFn) -> bytes:
    record = bytearray(line(draw(st.sampled_from([event(kind) for kind in FULL_DATA]))))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(record)))
        if draw(st.booleans()):
            record[at:at] = draw(st.sampled_from(PIECES)) * draw(st.sampled_from([1, 2, 33, 5000]))
        else:
            del record[at : at + draw(st.integers(1, 8))]
    return bytes(record)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(st.binary(max_size=600), mutated_records()))
def test_intake_never_raises(raw: bytes) -> None:
    checked = validate(raw)
    assert isinstance(checked, ValidEvent | Rejection)
    assert isinstance(validate_request_body(raw), list)
    assert subject_named_in(raw) is None or isinstance(subject_named_in(raw), str)
    if isinstance(checked, ValidEvent):
        # what is accepted can be stored: UTF-8 text without NUL, the limits kept
        assert b"\\u0000" not in compact_json(checked.body)
        compact_json(checked.body).decode("utf-8")
        assert len(checked.subject) <= 256 and len(checked.id) <= 256


def reference_verdict(text: bytes) -> str:
    """I-JSON by the standard library, slowly: what parse_json must decide."""

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({name for name, _ in pairs}) != len(pairs):
            raise ValueError("a name twice")
        return dict(pairs)

    def refuse(constant: str) -> Any:
        raise ValueError(constant)

    try:
        value = json.loads(text.decode("utf-8"), object_pairs_hook=members, parse_constant=refuse)
    except (ValueError, RecursionError):
        return "invalid"
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                return "invalid"
            inner = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((x, depth + 1) for x in inner)
        elif isinstance(item, str):
            if "\x00" in item or any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                return "invalid"
        elif isinstance(item, float) and not math.isfinite(item):
            return "invalid"
    return "valid"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(codec="utf-8"), max_size=5)
    | st.sampled_from(["\x00", '"', '":', "\\", "é"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["a", "b", "é", '"', ":", "\x00", "a "]), inner, max_size=4),
    max_leaves=40,
)  # fmt: skip


@st.composite
def json_texts(draw: st.DrawFn) -> bytes:
    value = draw(json_values)
    style = draw(st.sampled_from(["compact", "spaced", "ascii", "indented"]))
    text = {
        "compact": lambda: json.dumps(value, separators=(",", ":"), ensure_ascii=False),
        "spaced": lambda: json.dumps(value, ensure_ascii=False),
        "ascii": lambda: json.dumps(value),
        "indented": lambda: json.dumps(value, indent=1, ensure_ascii=False),
    }[style]()
    at = first_object_start(text)
    if draw(st.booleans()) and at is not None:
        # a member name twice: copy one member in front of the first one
        end = text.index(":", closing_quote(text, at))
        name = text[at:end]
        text = text[:at] + name + ":0," + text[at:]
    return text.encode("utf-8", "surrogatepass")


def first_object_start(text: str) -> int | None:
    """Where the first member name of an object begins (its opening quote): a
    ``{"`` outside the strings, not one inside a string value such as ``["{"]``."""
    inside = escaped = False
    for at, char in enumerate(text):
        if escaped:
            escaped = False
        elif inside:
            escaped, inside = char == "\\", char != '"'
        elif char == '"':
            inside = True
        elif char == "{" and text.startswith('"', at + 1):
            return at + 1
    return None


def closing_quote(text: str, opening: int) -> int:
    """The index of the quote that ends the string opened at ``opening``."""
    at = opening + 1
    while text[at] != '"':
        at += 2 if text[at] == "\\" else 1
    return at


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=json_texts())
def test_parse_json_decides_i_json_as_a_slow_reader_does(text: bytes) -> None:
    try:
        parse_json(text)
        verdict = "valid"
    except InvalidJson:
        verdict = "invalid"
    assert verdict == reference_verdict(text)


# -- parse_json's own fast checks, at their edges -------------------------------


def nested_arrays(levels: int, inner: str = "1") -> str:
    return "[" * levels + inner + "]" * levels


def in_objects(levels: int, inner: str) -> str:
    """``inner`` as the value of ``levels`` objects nested one in the other."""
    return '{"a":' * levels + inner + "}" * levels


PARSE_JSON_EDGES: list[tuple[str, str | bytes, bool]] = [
    # a member name twice, wherever the walk meets it
    ('"a" and "\\u0061" at the top', '{"a":1,"\\u0061":2}', False),
    ('"a" and "\\u0061" 31 objects down', in_objects(31, '{"a":1,"\\u0061":2}'), False),
    ("a name twice at level 32", in_objects(31, '{"b":"x","b":"y"}'), False),
    ("a name twice in the last array's object", nested_arrays(31, '{"b":[],"b":{}}'), False),
    ("names equal only after unescaping a quote", '{"\\"":1,"\\u0022":2}', False),
    ("names that differ only by an escape", '{"a":1,"\\u0062":2}', True),
    ("a name and a string value alike", '{"a":"a","b":"a"}', True),
    ("an empty name twice", '{"":1,"":2}', False),
    ("an empty name once, empty strings", '{"":"","b":[""]}', True),
    # depth: the value itself is level 1
    ("32 levels of arrays", nested_arrays(32), True),
    ("33 levels of arrays", nested_arrays(33), False),
    ("32 levels of objects, a string inside", in_objects(32, '"s"'), True),
    ("33 levels of objects, a number inside", in_objects(33, "1"), False),
    ("32 levels, an empty object last", in_objects(31, "{}"), True),
    ("33 levels, an empty array last", in_objects(32, "[]"), False),
    ("32 levels beside a shallow sibling", "[1," + nested_arrays(31) + ',"x"]', True),
    ("33 levels after a shallow sibling", '[{"a":[]},' + nested_arrays(32) + "]", False),
    # U+0000: the escape refuses, an escaped backslash before "u0000" does not
    ("an escaped NUL in a value", '{"a":"\\u0000"}', False),
    ("an escaped NUL in a name", '{"\\u0000":1}', False),
    ("an escaped NUL 32 levels down", in_objects(31, '["\\u0000"]'), False),
    ("a backslash, then u0000", '{"a":"\\\\u0000"}', True),
    ("two backslashes, then an escaped NUL", '{"a":"\\\\\\u0000"}', False),
    ("a raw NUL byte in a value", b'{"a":"\x00"}', False),
    ("a raw NUL byte in a name", b'{"\x00":1}', False),
    # surrogates: a pair is a character, a lone half is refused
    ("a surrogate pair in a name", '{"\\ud83d\\ude00":1}', True),
    ("a lone high surrogate in a name", '{"\\ud83d":1}', False),
    ("a lone low surrogate in a value", '["\\ude00"]', False),
    ("a high surrogate before an escaped backslash", '["\\ud83d\\\\ude00"]', False),
    ("two high surrogates", '["\\ud83d\\ud83d"]', False),
    ("a pair split across two strings", '["\\ud83d","\\ude00"]', False),
]


@pytest.mark.parametrize(
    ("text", "valid"),
    [pytest.param(text, valid, id=name) for name, text, valid in PARSE_JSON_EDGES],
)
def test_parse_json_at_the_edges_of_its_fast_checks(text: str | bytes, valid: bool) -> None:
    raw = text.encode() if isinstance(text, str) else text
    verdict = reference_verdict(raw) == "valid"
    assert verdict is valid  # the slow reader agrees with the table
    try:
        parse_json(raw)
        parsed = True
    except InvalidJson:
        parsed = False
    assert parsed is valid
