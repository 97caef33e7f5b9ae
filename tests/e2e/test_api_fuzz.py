"""A schema-driven fuzz run of the HTTP API (schemathesis) against a real API
process on real PostgreSQL and the embedded broker, with a worker that has
ingested the hostile-input and erasure scenarios (rejected records, violations,
an erased subject, ledger entries, checkpoints to prove against).

Every operation of ``/openapi.json`` gets requests generated from its schema,
valid ones and ones that break it; schemathesis's checks hold each answer to
the document: no 5xx, a status, content type, body and headers the operation
declares. Two of its checks are left out:
- that every request the schema allows is accepted: the event schemas give the
  shape, and intake's further rules (white space only, limits, I-JSON) answer
  422 as documented;
- that every request breaking the schema is refused: the API ignores query
  parameters it does not know, as HTTP APIs do, and the run sends a token with
  every request, also those generated as lacking the Authorization header (it
  found exactly these two, on GET /v1/violations). Refusals of unknown callers
  are the role matrix's (tests/integration/test_api_auth.py).
Bounded: a few hundred requests in all.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from tests.e2e.conftest import SCENARIOS, LedgerService

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES: dict[GenerationMode, int] = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}


def fuzz(schema: Any, api_url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """Run every operation's examples with ``headers`` on every request: the requests
    sent, and each failure (all are collected, so that one report names every
    operation that broke)."""
    failures: list[str] = []
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES.items():

            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,  # the same requests every run: a failure reproduces
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                nonlocal sent
                sent += 1
                case.call_and_validate(
                    base_url=api_url,
                    headers=headers,
                    timeout=30,
                    excluded_checks=[positive_data_acceptance, negative_data_rejection],
                )

            try:
                call()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label
                continue  # no parameter and no body: nothing to send that breaks the schema
            except Exception as failure:  # schemathesis's FailureGroup, or a transport error
                failures.append(f"{operation.label} ({mode.value}): {failure}")
    return sent, failures


async def test_every_generated_request_is_answered_within_the_schema(
    ledger_service: LedgerService,
) -> None:
    ledger_service.start_worker()
    records = 0
    for scenario in ("hostile-input", "erasure"):
        path = SCENARIOS / scenario / "events.jsonl"
        published = ledger_service.publish(path)
        assert published.returncode == 0, published.stderr
        records += sum(1 for line in path.read_bytes().splitlines() if line.strip())
    await ledger_service.wait_counted(records)
    # Every role (CONTRACT §7), so that each operation is reached past its 401/403:
    # an admin for the tokens and every read, a publisher and eraser of the
    # scenarios' sources for POST /v1/events. A name no generated one will hit.
    token = ledger_service.create_token(f"fuzz-{uuid.uuid4().hex}", "admin,publisher,eraser")
    schema = schemathesis.openapi.from_url(f"{ledger_service.api_url}/openapi.json")
    sent, failures = await asyncio.to_thread(
        fuzz, schema, ledger_service.api_url, {"Authorization": f"Bearer {token}"}
    )
    assert sent >= 200, f"only {sent} requests generated"
    assert not failures, "\n\n".join(failures) + "\n" + ledger_service.logs()[-3000:]
