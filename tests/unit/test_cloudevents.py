"""CloudEvents binary mode (ce_* headers) gives the same intake decision as
structured mode, and a record whose value is not a JSON object is invalid-data."""

from __future__ import annotations

import orjson
import pytest

from consent_ledger.core.batch import Record, check_record
from consent_ledger.core.cloudevents import binary_headers, is_binary_mode, structured_from_binary
from consent_ledger.core.intake import Reason, Rejection, ValidEvent, content_digest, validate

pytestmark = pytest.mark.unit

EVENT = {
    "specversion": "1.0",
    "id": "b-1",
    "source": "urn:system:crm",
    "type": "ConsentGiven",
    "subject": "anna",
    "time": "2026-03-01T08:00:00Z",
    "datacontenttype": "application/json",
    "data": {"purpose": "marketing", "subject_role": "user", "controller": "visma-software-as"},
}


def test_binary_mode_round_trips_to_the_structured_event() -> None:
    headers = binary_headers(EVENT)
    assert is_binary_mode(headers)
    assert structured_from_binary(headers, orjson.dumps(EVENT["data"])) == EVENT


def test_binary_mode_data_keeps_integers_beyond_64_bits_exact() -> None:
    value = b'{"purpose": "marketing", "count": 1180591620717411303425}'
    assert structured_from_binary(binary_headers(EVENT), value)["data"]["count"] == 2**70 + 1


def test_binary_and_structured_records_are_the_same_event() -> None:
    binary = check_record(Record(0, 0, orjson.dumps(EVENT["data"]), binary_headers(EVENT)))
    structured = validate(orjson.dumps(EVENT))
    assert isinstance(binary.outcome, ValidEvent) and isinstance(structured, ValidEvent)
    assert content_digest(binary.outcome.body) == content_digest(structured.body)


@pytest.mark.parametrize("value", [b"not json", b"[1, 2]", b""])
def test_a_binary_record_without_a_json_object_value_is_invalid_data(value: bytes) -> None:
    outcome = check_record(Record(0, 0, value, binary_headers(EVENT))).outcome
    assert isinstance(outcome, Rejection)
    assert outcome.reason is Reason.INVALID_DATA
    assert outcome.event_id == "b-1"


def test_a_binary_record_missing_an_attribute_is_invalid_envelope() -> None:
    headers = [(name, value) for name, value in binary_headers(EVENT) if name != "ce_subject"]
    outcome = check_record(Record(0, 0, orjson.dumps(EVENT["data"]), headers)).outcome
    assert isinstance(outcome, Rejection)
    assert outcome.reason is Reason.INVALID_ENVELOPE
