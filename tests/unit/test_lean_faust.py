"""The worker's raw schema hands faust records over exactly as they arrived."""

from __future__ import annotations

import faust
from faust.types.tuples import Message

from consent_ledger.worker.lean_faust import RawRecords


async def test_raw_records_keep_key_value_and_headers_as_they_are() -> None:
    app = faust.App("lean-faust-test", broker="kafka://127.0.0.1:1", store="memory://",
                    autodiscover=False, web_enabled=False)  # fmt: skip
    decode = RawRecords().compile(app)
    value = b'{"not": "valid json'  # the ledger rejects and keeps it; faust must not drop it
    message = Message(
        "ledger.events", 2, 41, 0.0, 0, [("ce_id", b"e-1")], b"subject-1", value, None
    )
    event = await decode(message)
    assert (event.key, event.value, event.message.offset) == (b"subject-1", value, 41)
    assert event.headers == {"ce_id": b"e-1"}  # as faust.Event gives them
