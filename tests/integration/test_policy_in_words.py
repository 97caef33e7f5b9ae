"""GET /v1/policy and the violations' clause titles, on a real PostgreSQL: the
worker's pipeline judges a few events under the reference policy; the API then
shows each rule with its clause in the statement's words, the violations open
per clause (retracted ones not counted), and the clauses no rule enforces."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from importlib import resources
from typing import Any

import asyncpg
import orjson
import pytest

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import PolicyVersions, load_reference_policy
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import bearer, issue_token, signed_in_client
from tests.integration.test_api import event

pytestmark = [pytest.mark.integration]

MASTER_KEY = os.urandom(32)
T1, T2, T3 = "2026-02-01T10:00:00Z", "2026-02-01T11:00:00Z", "2026-02-01T09:00:00Z"


def shared(event_id: str, subject: str, purpose: str, kind: str, recipient: str,
           **data: Any) -> dict[str, Any]:  # fmt: skip
    return event(
        event_id, subject, "DataShared", T1, purpose=purpose, subject_role="user",
        controller="visma-software-as", recipient={"kind": kind, "id": recipient},
        data_categories=["email"], **data,
    )  # fmt: skip


# What each event breaks under the reference policy, and the clause it names.
EVENTS = [
    # marketing without consent: consent-missing, clause l (retracted by w-9 below)
    shared("w-1", "anna", "marketing", "group_company", "visma-enterprise-as"),
    # marketing without consent: consent-missing, clause l (stays open)
    shared("w-2", "bjorn", "marketing", "group_company", "visma-enterprise-as"),
    # an uncertified partner: partner-not-certified, clause "Visma partnere"
    shared("w-3", "carl", "delivery", "partner", "cheap-it"),
    # an authority with no court order: authority-without-court-order, "Offentlige myndigheter"
    shared("w-4", "dina", "legal_disclosure", "public_authority", "politiet"),
    # a purpose the statement does not name: unknown-purpose, clause "purposes"
    shared("w-5", "erik", "profiling", "group_company", "visma-enterprise-as"),
    # a kind of recipient it does not name: recipient-not-permitted, clause "recipients"
    shared("w-6", "frida", "delivery", "data_broker", "brokers-inc"),
    # a visitor not told their rights: visitor-not-informed, clause "visitors"
    event("w-7", "gunn", "VisitorRegistered", T2, rights_notice=None),
    event("w-8", "gunn", "VisitorRegistered", T2, rights_notice="v1"),  # told: nothing
    # anna's consent, dated before w-1, arriving late: w-1 is retracted
    event(
        "w-9",
        "anna",
        "ConsentGiven",
        T3,
        purpose="marketing",
        subject_role="user",
        controller="visma-software-as",
    ),
]
OPEN_BY_CLAUSE = {
    "l": 1,
    "Visma partnere": 1,
    "Offentlige myndigheter": 1,
    "purposes": 1,
    "recipients": 1,
    "visitors": 1,
}


@pytest.fixture
async def judged(pool: asyncpg.Pool, unique_name: Callable[[str], str]) -> Settings:
    """The events judged by the worker's pipeline into this test's database."""
    settings = Settings(
        master_key=base64.b64encode(MASTER_KEY).decode(),
        violations_topic=unique_name("violations"),
    )
    policy = PolicyVersions((load_reference_policy(),))
    pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), policy, settings)
    await pipeline.process(
        [Record(0, offset, orjson.dumps(item)) for offset, item in enumerate(EVENTS)]
    )
    async with pool.acquire() as connection:
        statuses = await connection.fetch("SELECT event_id, rule, status FROM violations")
    assert ("w-1", "consent-missing", "retracted") in {tuple(row) for row in statuses}
    return settings


async def test_the_policy_shows_each_clause_its_rules_its_open_violations_and_the_unenforced(
    pool: asyncpg.Pool, judged: Settings
) -> None:
    app = create_app(judged, pool=pool, policy=load_reference_policy())
    async with signed_in_client(app, await issue_token(pool, "analyst")) as client:
        response = await client.get("/v1/policy")
        anonymous = await client.get("/v1/policy", headers={"Authorization": ""})
        stranger = await client.get("/v1/policy", headers=bearer("not-a-token"))
    async with signed_in_client(app, await issue_token(pool, "publisher")) as client:
        forbidden = await client.get("/v1/policy")
    assert response.status_code == 200, response.text
    assert anonymous.status_code == 401 and stranger.status_code == 401
    assert forbidden.status_code == 403, forbidden.text
    document = response.json()

    assert (document["policy"], document["version"], document["origin"]) == (
        "visma-privacy-statement", "1", "configured",
    )  # fmt: skip
    assert document["sha256"] is None and document["effective_from"] is None
    clauses = {clause["id"]: clause for clause in document["clauses"]}
    assert {
        clause_id: clause["violations_open"]
        for clause_id, clause in clauses.items()
        if clause["violations_open"]
    } == OPEN_BY_CLAUSE
    assert document["violations_open"] == sum(OPEN_BY_CLAUSE.values())
    assert document["violations_open_elsewhere"] == {}
    # The promises no rule checks are listed as such.
    assert document["unenforced"] == ["consent", "group-purpose-limit"]
    for clause_id in document["unenforced"]:
        assert clauses[clause_id]["enforced"] is False and clauses[clause_id]["rules"] == []
    # A clause in the statement's words, in the statement's language only, and a
    # translation kept apart from them.
    partners = clauses["Visma partnere"]
    assert partners["title"] == {"no": "Visma partnere"}
    assert partners["text"]["no"].startswith("Visma kan dele dine personopplysninger")
    assert partners["translation"]["title"] == {"en": "Visma partners"}
    assert partners["rules"] == ["recipients.partner"] and partners["enforced"] is True
    assert clauses["l"]["title"] == {"en": "To promote new products and services"}
    assert clauses["l"]["rules"] == ["purposes.marketing"]
    assert clauses["GDPR Art. 17"]["title"] is None  # a rule's clause the statements lack
    # Each rule with the clause it enforces.
    rules = {rule["rule"]: rule for rule in document["rules"]}
    assert rules["recipients.partner"]["clause"] == {
        "id": "Visma partnere",
        "title": "Visma partnere",
    }
    assert rules["purposes.marketing"]["clause"] == {
        "id": "l", "title": "To promote new products and services",
    }  # fmt: skip
    assert {breach["rule"] for breach in rules["purposes.marketing"]["breaches"]} == {
        "purpose-not-permitted-for-role", "consent-missing", "consent-withdrawn", "consent-expired",
    }  # fmt: skip
    assert rules["recipients.public_authority"]["severity"] == "critical"


async def test_violations_carry_their_clauses_title_and_a_published_version_its_hash(
    pool: asyncpg.Pool, judged: Settings
) -> None:
    app = create_app(judged, pool=pool, policy=load_reference_policy())
    async with signed_in_client(app, await issue_token(pool, "analyst")) as client:
        items = (await client.get("/v1/violations", params={"status": "open"})).json()["items"]
    titles = {item["event_id"]: (item["clause"], item["clause_title"]) for item in items}
    assert titles == {
        "w-2": ("l", "To promote new products and services"),
        "w-3": ("Visma partnere", "Visma partnere"),
        "w-4": ("Offentlige myndigheter", "Offentlige myndigheter"),
        "w-5": ("purposes", "Why we process your personal data"),
        "w-6": ("recipients", "Hvordan deler vi dine personopplysninger"),
        "w-7": ("visitors", titles["w-7"][1]),
    }
    assert titles["w-7"][1].startswith("To protect your security and ours")

    # A version published with its own words is the one in force, with its hash;
    # a violation judged under version 1 keeps version 1's words.
    reference = resources.files("consent_ledger.policies").joinpath("reference.yaml")
    text = reference.read_text("utf-8").replace(
        "version: 1\n", "version: 2\neffective_from: 2026-01-01T00:00:00Z\n"
    )
    text = text.replace('{"no": "Visma partnere"}', '{"no": "Våre partnere"}')
    async with signed_in_client(app, await issue_token(pool, "admin")) as client:
        published = await client.post(
            "/v1/policy/versions", content=text, headers={"Content-Type": "application/yaml"}
        )
        assert published.status_code == 201, published.text
        document = (await client.get("/v1/policy")).json()
        items = (await client.get("/v1/violations", params={"status": "open"})).json()["items"]
    assert (document["version"], document["origin"]) == ("2", "published")
    assert document["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert document["effective_from"] == "2026-01-01T00:00:00Z"
    assert {c["id"]: c["display_title"] for c in document["clauses"]}["Visma partnere"] == (
        "Våre partnere"
    )
    assert {item["event_id"]: item["clause_title"] for item in items}["w-3"] == "Visma partnere"
