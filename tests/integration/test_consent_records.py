"""`GET /v1/subjects/{subject}/consents?format=jsonld` (CONTRACT §9): the
subject's consents as ISO/IEC TS 27560 consent records in DPV's JSON-LD form,
checked against the fields the standard requires of a record (the DPVCG's
profile https://w3id.org/dpv/schema/iso-27560#record): schema version, record
identifier, data subject, creation time; the processing it covers (purpose,
legal basis, controller); its state and the events that made it."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import asyncpg
import orjson
import pytest

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import issue_token, signed_in_client

pytestmark = [pytest.mark.integration]

MASTER_KEY = os.urandom(32)
RECORD_SCHEMA = "https://w3id.org/dpv/schema/iso-27560#record"
# What ISO/IEC TS 27560 requires of a consent record, as the DPV profile names it.
REQUIRED = (
    "@id", "@type", "dct:conformsTo", "dct:identifier", "dct:created", "dpv:hasDataSubject",
    "dpv:hasPurpose", "dpv:hasLegalBasis", "dpv:hasDataController", "dpv:hasConsentStatus",
    "dpv:hasEvent",
)  # fmt: skip
STATUSES = {"dpv:ConsentGiven", "dpv:ConsentWithdrawn", "dpv:ConsentExpired"}


def event(number: int, kind: str, purpose: str, time: str, **data: Any) -> bytes:
    body = {"purpose": purpose, "controller": "visma-software-as", **data}
    if kind == "ConsentGiven":
        body |= {"subject_role": "customer_contact", "channel": "web"}
    return orjson.dumps({
        "specversion": "1.0", "id": f"c-{number}", "source": "urn:system:crm", "type": kind,
        "subject": "ingrid", "time": time, "data": body,
    })  # fmt: skip


async def test_consents_as_iso_27560_records_in_dpv_json_ld(
    pool: asyncpg.Pool, unique_name: Callable[[str], str]
) -> None:
    settings = Settings(
        master_key=base64.b64encode(MASTER_KEY).decode(), violations_topic=unique_name("v")
    )
    policy = load_reference_policy()
    lines = [
        event(1, "ConsentGiven", "marketing", "2026-03-01T08:00:00Z"),
        event(2, "ConsentWithdrawn", "marketing", "2026-04-01T08:00:00Z"),
        event(3, "ConsentGiven", "cloud_access", "2026-03-02T08:00:00+02:00",
              expires_at="2027-03-02T08:00:00Z"),
    ]  # fmt: skip
    pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), policy, settings)
    await pipeline.process([Record(0, n, line) for n, line in enumerate(lines)])
    app = create_app(settings, pool=pool, policy=policy)
    async with signed_in_client(app, await issue_token(pool, "analyst")) as client:
        plain = await client.get(
            "/v1/subjects/ingrid/consents", params={"as_of": "2026-06-01T00:00:00Z"}
        )
        linked = await client.get(
            "/v1/subjects/ingrid/consents",
            params={"as_of": "2026-06-01T00:00:00Z", "format": "jsonld"},
        )
        bad = await client.get("/v1/subjects/ingrid/consents", params={"format": "xml"})
    # Both answers carried ingrid's consents: each is in the access log.
    logged = await pool.fetch("SELECT endpoint, subjects FROM access_log ORDER BY id")
    assert [(row["endpoint"], row["subjects"]) for row in logged] == [
        ("GET /v1/subjects/{subject}/consents", ["ingrid"]),
        ("GET /v1/subjects/{subject}/consents", ["ingrid"]),
    ]
    assert linked.status_code == 200, linked.text
    assert linked.headers["content-type"].startswith("application/ld+json")
    document = linked.json()
    assert document["@context"]["dpv"] == "https://w3id.org/dpv#"
    records = {r["dpv:hasPurpose"]["dct:identifier"]: r for r in document["@graph"]}
    assert set(records) == {c["purpose"] for c in plain.json()["consents"]}
    for purpose, record in records.items():
        missing = [field for field in REQUIRED if field not in record]
        assert not missing, (purpose, missing)
        assert record["@type"] == "dpv:ConsentRecord"
        assert record["dct:conformsTo"] == {"@id": RECORD_SCHEMA}
        assert record["dpv:hasDataSubject"]["dct:identifier"] == "ingrid"
        assert record["dpv:hasPurpose"]["@id"] == policy.purposes[purpose].dpv
        assert record["dpv:hasLegalBasis"] == {"@id": "dpv:Consent"}
        assert record["dpv:hasDataController"]["dct:identifier"] == "visma-software-as"
        assert record["dpv:hasConsentStatus"]["@id"] in STATUSES
        assert all(e["dct:date"] and e["dct:identifier"] for e in record["dpv:hasEvent"])
    marketing, cloud = records["marketing"], records["cloud_access"]
    assert marketing["dpv:hasPurpose"]["@id"] == "dpv:Marketing"
    assert marketing["dpv:hasConsentStatus"] == {"@id": "dpv:ConsentWithdrawn"}
    assert [e["dct:identifier"] for e in marketing["dpv:hasEvent"]] == ["c-1", "c-2"]
    assert marketing["dct:created"] == "2026-03-01T08:00:00Z"
    assert cloud["dpv:hasConsentStatus"] == {"@id": "dpv:ConsentGiven"}
    assert cloud["dpv:hasExpiryTime"] == "2027-03-02T08:00:00Z"
    assert bad.status_code in (400, 422)
