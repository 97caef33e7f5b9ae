"""Intake: turn raw bytes into a validated event, or a rejection with its reason.

This is the hot path of both ``check`` and the stream worker, so it validates
with plain dict and type checks instead of building pydantic models (a model
costs about 11 µs an event, this about 2 µs). The rules are exactly those of the
models in :mod:`consent_ledger.core.events`; ``tests/unit/test_intake.py``
checks the two agree on every input it generates.

The checks run in the order CONTRACT §2 gives; the first that fails is the
reason. A record is I-JSON (RFC 7493) or ``invalid-json``; the decoder alone
does not see all of it (it keeps the last of two equal member names and the
NUL a ``\\u0000`` escape spells), so :func:`parse_json` adds the cheap checks
ARCHITECTURE.md describes ("I-JSON at the decoder's speed"). ``id-conflict``
needs history, so it is decided by :func:`admit`
against the digest of the event accepted earlier under the same id. Digests
are the caller's to compute (:func:`content_digest`): ``check`` computes one
only when an id comes again.

Size: about 730 lines of one concept: every check of CONTRACT §1-§2 in the
order the contract gives, beside the limits and reasons they share.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NamedTuple, NoReturn, cast

import msgspec
import orjson

from consent_ledger.core.timestamps import InvalidTimestamp, parse_instant
from consent_ledger.core.vocabulary import (
    CONSENT_GIVEN,
    CONSENT_WITHDRAWN,
    DATA_SHARED,
    ERASURE_REQUESTED,
    EVENT_TYPES,
    SUBJECT_ROLES,
    VISITOR_REGISTERED,
)


class Reason(StrEnum):
    """Why an input was rejected (CONTRACT §2), in the order they are checked."""

    TOO_LARGE = "too-large"
    INVALID_JSON = "invalid-json"
    INVALID_ENVELOPE = "invalid-envelope"
    UNKNOWN_TYPE = "unknown-type"
    INVALID_DATA = "invalid-data"
    ID_CONFLICT = "id-conflict"
    UNPROCESSABLE = "unprocessable"  # the worker only: storing a valid event failed (its detail)


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input the ledger refused, with a reason code and a sentence for people."""

    reason: Reason
    detail: str
    event_id: str | None = None


class ValidEvent(NamedTuple):
    """A well-formed event: its parsed body and event time."""

    id: str
    type: str
    subject: str
    instant: int
    body: dict[str, Any]


class Admission(StrEnum):
    """What to do with a valid event, given what the ledger accepted before."""

    ACCEPT = "accept"
    DUPLICATE = "duplicate"


class InvalidRecord(ValueError):
    """A record (or line) that intake rejects: the :class:`Reason` and a detail saying why."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def content_digest(body: Mapping[str, Any]) -> bytes:
    """SHA-256 of the event as canonical JSON (sorted keys, no white space).

    Two events are the same content exactly when their digests are equal, so key
    order and white space in the input do not count.
    """
    try:
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: orjson refuses them, json does not
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).digest()


def compact_json(body: Mapping[str, Any]) -> bytes:
    """The event as compact JSON, keys in their order, exact for every number.

    orjson refuses integers beyond 64 bits (and lone surrogates from the
    standard library's parser); the standard library writes them as they are.
    """
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":")).encode("ascii")


MAX_RECORD_BYTES: Final = 262_144
"""A record (a line without its line break) over this many bytes is ``too-large``."""
MAX_DEPTH: Final = 32
"""Objects and arrays nested deeper than this (the event itself is level 1) are not I-JSON here."""
MAX_ATTRIBUTE_CHARS: Final = 256
"""The most characters ``id``, ``source`` and ``subject`` may have."""
MAX_DATA_CHARS: Final = 1_024
"""The most characters of each string CONTRACT §1 names inside ``data``."""

_DECODE_JSON: Final = msgspec.json.Decoder()
NEW_TUPLE: Final = tuple.__new__
"""``tuple.__new__``, held: compiled, naming it costs a look-up on ``tuple`` each
time (a third of what building a named tuple this way costs, by callgrind)."""
# Escapes are only ever inside strings, and a left-to-right scan pairs them as
# a JSON reader does ("\\\\u0000" is a backslash and the text u0000).
_ESCAPE: Final = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
_STRING_WITHOUT_ESCAPES: Final = re.compile(rb'"[^"]*"')
_NOT_A_BRACKET: Final = bytes(set(range(256)) - set(b"{}[]"))


class InvalidJson(ValueError):
    """The bytes are not I-JSON (RFC 7493), or not JSON at all."""


def record_size_problem(raw: bytes | str) -> Rejection | None:
    """``too-large`` when the record, without a final line break, is over
    :data:`MAX_RECORD_BYTES` bytes (UTF-8 for text)."""
    size = len(raw)
    if size <= MAX_RECORD_BYTES // 4:  # no text that short is over the limit in UTF-8
        return None
    if isinstance(raw, str):
        size = len(raw.encode("utf-8", "surrogatepass"))
        ending = raw[-2:]
        size -= 2 if ending == "\r\n" else 1 if ending[-1:] == "\n" else 0
    else:
        ending_bytes = raw[-2:]
        size -= 2 if ending_bytes == b"\r\n" else 1 if ending_bytes[-1:] == b"\n" else 0
    if size <= MAX_RECORD_BYTES:
        return None
    return Rejection(
        Reason.TOO_LARGE, f"the record is {size:,} bytes, over the limit of {MAX_RECORD_BYTES:,}"
    )


def parse_json(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one I-JSON value exactly; raise :class:`InvalidJson` saying why not.

    msgspec parses first: as fast as orjson, and exact for integers beyond 64
    bits (orjson turns those into floats, which would make two different events
    look the same). What it refuses, the standard library decides, for a
    precise reason, refusing NaN, Infinity and numbers beyond a float's range
    as msgspec does. Around the decoder, what it does not check:

    - depth: both decoders refuse a text nested deeper than the interpreter's
      recursion limit with a RecursionError, raised cleanly before their stack
      grows further; a shallower one is decoded and its depth measured on the
      value, by a walk that descends at most ``max_depth`` levels;
    - ``\\u0000`` and unpaired surrogates: only a text with a backslash can
      spell them, and only such a text is scanned (:func:`_escape_problem`);
    - a member name twice in one object, which the decoder keeps silently (the
      last wins): the same walk counts the member names and strings decoded,
      and the text's string delimiters (escaped quotes aside) are two for each
      string it spells, so a difference is a dropped member.

    One walk of the value and one count of the text's quotes cost half of what
    counting the text's brackets and encoding the value again did (callgrind).
    """
    text = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        try:
            value = _DECODE_JSON.decode(text)
        except msgspec.DecodeError:
            value = _parse_with_stdlib(text)
    except RecursionError:
        raise InvalidJson(_too_deep(max_depth)) from None
    escaped_quotes = 0
    if text.find(b"\\") >= 0:  # half the cost of `in` in the compiled core
        problem, escaped_quotes = _escape_problem(text)
        if problem:
            raise InvalidJson(problem)
    kind = type(value)
    if kind is dict or kind is list:
        strings = _strings_in(value, max_depth - 1)
        if strings < 0:
            raise InvalidJson(_too_deep(max_depth))
        if text.count(b'"') - escaped_quotes != 2 * strings:
            raise InvalidJson(_duplicate_name(text))
    return value


def _too_deep(max_depth: int) -> str:
    return f"objects and arrays are nested deeper than {max_depth} levels"


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """Parse one record or line; raise :class:`InvalidRecord` unless it is an I-JSON object."""
    try:
        value = parse_json(raw)
    except InvalidJson as exc:
        raise InvalidRecord(Reason.INVALID_JSON, str(exc)) from None
    if not isinstance(value, dict):
        raise InvalidRecord(Reason.INVALID_JSON, f"expected a JSON object, got {_json_kind(value)}")
    return value


def _parse_with_stdlib(raw: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):  # 1e400 would become inf, then null in the digest
            raise ValueError(f"{number} is out of range")
        return value

    try:
        # Records are UTF-8; json.loads(bytes) would also guess UTF-16 and UTF-32.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"not UTF-8: {exc}") from None
    try:
        return json.loads(text, parse_constant=refuse, parse_float=finite)
    except ValueError as exc:
        raise InvalidJson(f"not valid JSON: {exc}") from None


def _nesting_depth(text: bytes, limit: int) -> bool:
    """Whether objects and arrays nest deeper than ``limit`` in ``text``, read
    without a parser: escapes, then strings, are cut out, and the brackets
    left are counted. Linear in the text, whatever it holds; on text that is no
    JSON it may see more depth than a parser would reach, never less."""
    unescaped = _ESCAPE.sub(b"", text)
    brackets = _STRING_WITHOUT_ESCAPES.sub(b"", unescaped).translate(None, _NOT_A_BRACKET)
    depth = 0
    for bracket in brackets:
        if bracket == 0x7B or bracket == 0x5B:  # { [
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _escape_problem(text: bytes) -> tuple[str | None, int]:
    """What a JSON text's escapes spell that I-JSON forbids (U+0000, a surrogate
    without its other half), and how many escaped quotes it holds."""
    escaped_quotes = 0
    high = b""  # an escaped high surrogate awaiting its low half, right after it
    high_ends = -1
    for escape in _ESCAPE.finditer(text):
        code = escape.group(1)
        if high and not (
            code is not None and 0xDC00 <= int(code, 16) <= 0xDFFF and escape.start() == high_ends
        ):
            break
        if high:
            high = b""
            continue
        if code is None:
            if escape.group(0) == b'\\"':
                escaped_quotes += 1
            continue
        unit = int(code, 16)
        if unit == 0:
            return "a string holds U+0000 (\\u0000)", escaped_quotes
        if 0xD800 <= unit <= 0xDBFF:
            high, high_ends = code, escape.end()
        elif 0xDC00 <= unit <= 0xDFFF:
            return f"a string holds an unpaired surrogate (\\u{code.decode()})", escaped_quotes
    if high:
        return f"a string holds an unpaired surrogate (\\u{high.decode()})", escaped_quotes
    return None, escaped_quotes


def _strings_in(value: dict[str, Any] | list[Any], levels_below: int) -> int:
    """How many member names and strings a decoded object or array holds, at
    any depth; -1 when objects or arrays nest inside it more than
    ``levels_below`` levels deeper (the walk goes no deeper than that).

    Objects and arrays are walked apart so that the compiled core iterates
    each natively, and each item is looked at in the loop, not in a call of its
    own (callgrind: a generic iterable, or a call an item, costs it more)."""
    count = 0
    if type(value) is dict:
        count = len(value)
        for item in value.values():
            kind = type(item)
            if kind is str:
                count += 1
            elif kind is dict or kind is list:
                strings = _strings_in(item, levels_below - 1) if levels_below else -1
                if strings < 0:
                    return -1
                count += strings
        return count
    for item in cast("list[Any]", value):
        kind = type(item)
        if kind is str:
            count += 1
        elif kind is dict or kind is list:
            strings = _strings_in(item, levels_below - 1) if levels_below else -1
            if strings < 0:
                return -1
            count += strings
    return count


def _duplicate_name(text: bytes) -> str:
    """Name the member that appears twice (the text is JSON: only rejections come here)."""
    found: list[str] = []

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        if not found and len(set(names)) != len(names):
            found.append(next(name for name in names if names.count(name) > 1))
        return dict(pairs)

    with contextlib.suppress(ValueError):
        json.loads(text.decode("utf-8"), object_pairs_hook=members)
    name = repr(found[0][:64]) if found else "a member name"
    return f"{name} appears twice in one object"


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def validate(raw: bytes | str) -> ValidEvent | Rejection:
    """Check one record against CONTRACT §1-§2, all but ``id-conflict``."""
    if len(raw) > MAX_RECORD_BYTES // 4:  # the call costs more than the check
        too_large = record_size_problem(raw)
        if too_large is not None:
            return too_large
    try:
        body = parse_json_object(raw)
    except InvalidRecord as invalid:
        return Rejection(invalid.reason, invalid.detail)
    return _validated(body)


_DECODE_ARRAY: Final = msgspec.json.Decoder(list[msgspec.Raw])


def validate_request_body(body: bytes) -> list[ValidEvent | Rejection]:
    """Each event of a ``POST /v1/events`` body checked as a record: the body
    itself when it is not an array, else each element of the array.

    An event is the record it is sent as (white space around it excluded) and
    the record it is published as (its compact JSON): either over
    :data:`MAX_RECORD_BYTES` is ``too-large``. A body that is not I-JSON as a
    whole (not JSON, or nested deeper than an array of events may be) is one
    ``invalid-json`` event: its elements cannot be told apart. The caller bounds
    the body's size.
    """
    return list(_request_body_events(body))


class RequestBodyCheck(NamedTuple):
    """A ``POST /v1/events`` body checked, with only the first rejections kept."""

    events: int  # in the body
    valid: list[ValidEvent]
    rejected: list[tuple[int, Rejection]]  # (index in the body, rejection), the first ones
    rejected_total: int


def check_request_body(body: bytes, keep: int) -> RequestBodyCheck:
    """:func:`validate_request_body`, keeping the valid events and only the first
    ``keep`` rejections (with their index) but counting all: a body of a million
    invalid elements must not make a million answers."""
    valid: list[ValidEvent] = []
    rejected: list[tuple[int, Rejection]] = []
    total = 0
    events = 0
    for index, outcome in enumerate(_request_body_events(body)):
        events += 1
        if isinstance(outcome, Rejection):
            total += 1
            if len(rejected) < keep:
                rejected.append((index, outcome))
        else:
            valid.append(outcome)
    return RequestBodyCheck(events, valid, rejected, total)


def _request_body_events(body: bytes) -> Iterator[ValidEvent | Rejection]:
    if body.lstrip()[:1] != b"[":
        yield _validate_posted(body.strip())
        return
    array_depth = MAX_DEPTH + 1
    try:
        if body.count(b"{") + body.count(b"[") > array_depth and _nesting_depth(body, array_depth):
            raise InvalidJson(f"an event is nested deeper than {MAX_DEPTH} levels")
        elements = _DECODE_ARRAY.decode(body)
    except msgspec.DecodeError:
        try:
            parse_json(body, array_depth)  # for the reason
        except InvalidJson as exc:
            yield Rejection(Reason.INVALID_JSON, str(exc))
            return
        yield Rejection(Reason.INVALID_JSON, "not a JSON array of events")
        return
    except InvalidJson as exc:
        yield Rejection(Reason.INVALID_JSON, str(exc))
        return
    for element in elements:
        yield _validate_posted(bytes(element))


def _validate_posted(record: bytes) -> ValidEvent | Rejection:
    checked = validate(record)
    # Compact JSON is shorter than the text sent, but for numbers written
    # shorter than their canonical form (1e5 is 100000.0): at most 2.25 times.
    if isinstance(checked, ValidEvent) and len(record) > MAX_RECORD_BYTES // 3:
        size = len(compact_json(checked.body))
        if size > MAX_RECORD_BYTES:
            return Rejection(
                Reason.TOO_LARGE,
                f"the event is {size:,} bytes as published, over the limit of {MAX_RECORD_BYTES:,}",
                checked.id,
            )
    return checked


def validate_parsed(body: Any) -> ValidEvent | Rejection:
    """Like :func:`validate`, for an object already parsed (binary-mode records,
    events handed to the producer): it must be what an I-JSON text can hold."""
    if not isinstance(body, dict):
        return Rejection(Reason.INVALID_JSON, f"expected a JSON object, got {_json_kind(body)}")
    problem = _i_json_problem(body)
    if problem:
        return Rejection(Reason.INVALID_JSON, problem)
    return _validated(body)


def _validated(body: dict[str, Any]) -> ValidEvent | Rejection:
    try:
        return validate_object(body)
    except InvalidRecord as invalid:
        maybe_id = body.get("id")
        event_id = (
            maybe_id
            if isinstance(maybe_id, str) and _has_text(maybe_id)
            and len(maybe_id) <= MAX_ATTRIBUTE_CHARS
            else None
        )  # fmt: skip
        return Rejection(invalid.reason, invalid.detail, event_id)


def _i_json_problem(value: dict[str, Any]) -> str | None:
    """Why a parsed object could not have come from an I-JSON text, if it could
    not: walked without recursion, since nothing bounds its depth."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_DEPTH:
            return f"objects and arrays are nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, dict):
            for name, inner in item.items():
                if not isinstance(name, str) or _string_problem(name):
                    return f"a member name is not an I-JSON string: {name!r:.64}"
                pending.append((inner, depth + 1))
        elif isinstance(item, list | tuple):
            pending.extend((inner, depth + 1) for inner in item)
        elif isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                return problem
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{item} is not JSON"
        elif item is not None and not isinstance(item, bool | int | float):
            return f"a {type(item).__name__} is not JSON"
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a string holds U+0000"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a string holds an unpaired surrogate"
    return None


def validate_object(body: dict[str, Any]) -> ValidEvent:
    """Validate a parsed event object; raise :class:`InvalidRecord` with the first failure."""
    if body.get("specversion") != "1.0":
        if "specversion" not in body:
            raise InvalidRecord(Reason.INVALID_ENVELOPE, "missing attribute 'specversion'")
        raise InvalidRecord(
            Reason.INVALID_ENVELOPE, f"'specversion' must be \"1.0\", got {body['specversion']!r}"
        )
    # body.get, not a bound `get`: compiled, the first is a native look-up,
    # the second a Python call each time.
    event_id, source = body.get("id"), body.get("source")
    event_type, subject = body.get("type"), body.get("subject")
    if not (
        type(event_id) is str and _has_text(event_id)
        and type(source) is str and _has_text(source)
        and type(event_type) is str and _has_text(event_type)
        and type(subject) is str and _has_text(subject)
    ):  # fmt: skip
        _refuse_envelope_texts(body)
    if (
        len(event_id) > MAX_ATTRIBUTE_CHARS
        or len(source) > MAX_ATTRIBUTE_CHARS
        or len(subject) > MAX_ATTRIBUTE_CHARS
    ):
        for name, value in (("id", event_id), ("source", source), ("subject", subject)):
            if len(value) > MAX_ATTRIBUTE_CHARS:
                raise InvalidRecord(
                    Reason.INVALID_ENVELOPE,
                    f"'{name}' has {len(value):,} characters, over the limit of"
                    f" {MAX_ATTRIBUTE_CHARS}",
                )
    time = body.get("time", _MISSING)
    if time is _MISSING:
        raise InvalidRecord(Reason.INVALID_ENVELOPE, "missing attribute 'time'")
    try:
        instant = parse_instant(time)
    except InvalidTimestamp as exc:
        raise InvalidRecord(Reason.INVALID_ENVELOPE, f"'time': {exc}") from None
    # CloudEvents JSON format: a null attribute is decoded as unset.
    content_type, schema = body.get("datacontenttype"), body.get("dataschema")
    if content_type is not None and type(content_type) is not str:
        _refuse_optional_attribute(content_type, "datacontenttype")
    if schema is not None and type(schema) is not str:
        _refuse_optional_attribute(schema, "dataschema")
    data_rules = _DATA_RULES.get(event_type)
    if data_rules is None:
        raise InvalidRecord(
            Reason.UNKNOWN_TYPE,
            f"'type' {event_type!r} is none of {', '.join(EVENT_TYPES)}",
        )
    data = body.get("data")
    if not isinstance(data, dict):
        problem = "missing" if "data" not in body else f"{_json_kind(data)}, not an object"
        raise InvalidRecord(Reason.INVALID_DATA, f"'data' is {problem}")
    data_rules(data)
    # tuple.__new__ skips the named tuple's generated __new__ (see facts.fact_of).
    return NEW_TUPLE(ValidEvent, (event_id, event_type, subject, instant, body))


def _refuse_envelope_texts(body: dict[str, Any]) -> NoReturn:
    """Raise for the first of id, source, type and subject that is no non-empty
    string (the caller found one)."""
    for name in ("id", "source", "type", "subject"):
        _require_text(body, name, Reason.INVALID_ENVELOPE, "")
    raise AssertionError("one of the attributes was expected to be refused")


def _refuse_optional_attribute(value: object, name: str) -> None:
    if not isinstance(value, str):  # a subclass of str is a string
        raise InvalidRecord(Reason.INVALID_ENVELOPE, f"'{name}' must be a string")


def subject_named_in(raw: bytes) -> str | None:
    """The subject a record names, if it is a JSON object with a string subject
    that a valid event could hold: for keying a record and for erasing rejected
    records of a forgotten subject."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    subject = body.get("subject") if isinstance(body, dict) else None
    if not isinstance(subject, str) or len(subject) > MAX_ATTRIBUTE_CHARS or "\x00" in subject:
        return None  # no valid event names it: never a key, and not a text PostgreSQL stores
    return subject


def admit(event: ValidEvent, digest: bytes, accepted_digest: bytes | None) -> Admission | Rejection:
    """Decide a valid event, whose content digest is ``digest``, against the
    digest accepted before under its id, if any."""
    if accepted_digest is None:
        return Admission.ACCEPT
    if accepted_digest == digest:
        return Admission.DUPLICATE
    return Rejection(
        Reason.ID_CONFLICT,
        f"an event with id {event.id!r} was accepted before with different content",
        event.id,
    )


# -- data rules by type --------------------------------------------------------

_MISSING: Final = object()


def _has_text(value: str) -> bool:
    return bool(value) and not value.isspace()


def _require_text(obj: dict[str, Any], name: str, reason: Reason, where: str) -> None:
    value = obj.get(name, _MISSING)
    if value is _MISSING:
        noun = "attribute" if reason is Reason.INVALID_ENVELOPE else "field"
        raise InvalidRecord(reason, f"missing {noun} '{where}{name}'")
    if not isinstance(value, str):
        raise InvalidRecord(reason, f"'{where}{name}' must be a string, got {_json_kind(value)}")
    if not _has_text(value):
        raise InvalidRecord(reason, f"'{where}{name}' must not be empty")


def _within_limit(value: str, name: str, where: str) -> None:
    if len(value) > MAX_DATA_CHARS:
        raise InvalidRecord(
            Reason.INVALID_DATA,
            f"'{where}{name}' has {len(value):,} characters, over the limit of {MAX_DATA_CHARS:,}",
        )


def _string(data: dict[str, Any], name: str, where: str = "data.") -> None:
    value = data.get(name, _MISSING)
    if type(value) is str and len(value) <= MAX_DATA_CHARS:
        return
    if value is _MISSING:
        raise InvalidRecord(Reason.INVALID_DATA, f"missing field '{where}{name}'")
    if not isinstance(value, str):
        raise InvalidRecord(
            Reason.INVALID_DATA, f"'{where}{name}' must be a string, got {_json_kind(value)}"
        )
    _within_limit(value, name, where)


def _non_blank(data: dict[str, Any], name: str, where: str = "data.") -> None:
    value = data.get(name)
    if type(value) is str and len(value) <= MAX_DATA_CHARS and value and not value.isspace():
        return
    _require_text(data, name, Reason.INVALID_DATA, where)
    _within_limit(data[name], name, where)


def _optional(data: dict[str, Any], name: str, kind: type, where: str = "data.") -> Any:
    value = data.get(name)
    if value is not None:
        if not isinstance(value, kind):
            expected = "an object" if kind is dict else "a string"
            raise InvalidRecord(
                Reason.INVALID_DATA, f"'{where}{name}' must be {expected} or absent"
            )
        if isinstance(value, str) and len(value) > MAX_DATA_CHARS:
            _within_limit(value, name, where)
    return value


def _subject_role(data: dict[str, Any]) -> None:
    _string(data, "subject_role")
    if data["subject_role"] not in SUBJECT_ROLES:
        raise InvalidRecord(
            Reason.INVALID_DATA,
            f"'data.subject_role' {data['subject_role']!r} is none of {', '.join(SUBJECT_ROLES)}",
        )


def _consent_given(data: dict[str, Any]) -> None:
    _non_blank(data, "purpose")
    _subject_role(data)
    _non_blank(data, "controller")
    expires_at = data.get("expires_at")
    if expires_at is not None:
        if isinstance(expires_at, str):
            _within_limit(expires_at, "expires_at", "data.")
        try:
            parse_instant(expires_at)
        except InvalidTimestamp as exc:
            raise InvalidRecord(Reason.INVALID_DATA, f"'data.expires_at': {exc}") from None
    _optional(data, "channel", str)
    _optional(data, "policy_version", str)
    notice = _optional(data, "notice", dict)
    if notice is not None:
        for name in ("id", "version", "content_sha256"):
            _string(notice, name, "data.notice.")
    _optional(data, "evidence", dict)


def _consent_withdrawn(data: dict[str, Any]) -> None:
    _non_blank(data, "purpose")
    _non_blank(data, "controller")
    _optional(data, "channel", str)
    _optional(data, "reason", str)


def _data_shared(data: dict[str, Any]) -> None:
    _non_blank(data, "purpose")
    _subject_role(data)
    _non_blank(data, "controller")
    recipient = data.get("recipient")
    if not isinstance(recipient, dict):
        raise InvalidRecord(
            Reason.INVALID_DATA, "'data.recipient' must be an object with 'kind' and 'id'"
        )
    _non_blank(recipient, "kind", "data.recipient.")
    _non_blank(recipient, "id", "data.recipient.")
    _optional(recipient, "name", str, "data.recipient.")
    categories = data.get("data_categories")
    if not isinstance(categories, list) or not categories:
        raise InvalidRecord(Reason.INVALID_DATA, "'data.data_categories' must be a non-empty list")
    for category in categories:
        if not isinstance(category, str) or not category.strip():
            raise InvalidRecord(
                Reason.INVALID_DATA, "'data.data_categories' must hold only non-empty strings"
            )
        if len(category) > MAX_DATA_CHARS:
            _within_limit(category, "data_categories", "data.")
    legal_basis = _optional(data, "legal_basis", dict)
    if legal_basis is not None:
        _non_blank(legal_basis, "kind", "data.legal_basis.")
        _optional(legal_basis, "reference", str, "data.legal_basis.")


def _visitor_registered(data: dict[str, Any]) -> None:
    _non_blank(data, "site")
    _optional(data, "rights_notice", str)
    _optional(data, "host", str)


def _erasure_requested(data: dict[str, Any]) -> None:
    _optional(data, "reason", str)
    _optional(data, "requested_via", str)


_DATA_RULES: Final[dict[str, Callable[[dict[str, Any]], None]]] = {
    CONSENT_GIVEN: _consent_given,
    CONSENT_WITHDRAWN: _consent_withdrawn,
    DATA_SHARED: _data_shared,
    VISITOR_REGISTERED: _visitor_registered,
    ERASURE_REQUESTED: _erasure_requested,
}
assert tuple(_DATA_RULES) == EVENT_TYPES
