"""The subject access report (CONTRACT §8) on a real PostgreSQL, over HTTP.

The ledger is filled by the worker's own batch pipeline (reference policy): a
subject who consented, withdrew and had data disclosed to named recipients,
one disclosure allowed, one that broke rules, one whose violation a late
consent retracted; a subject erased after a disclosure; a subject whose id and
recipient name are HTML. A checkpoint is signed. Then the report is asked for
as JSON and as HTML by the roles that may and may not, and what it says is
held against what was published.
"""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent_ledger.api.app import build_server, create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.core.subject_report_html import REPORT_CSP
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.integrity.checkpoints import generate_signing_key, verify_checkpoint
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.integrity.trust import parse_trusted_checkpoint
from consent_ledger.settings import Settings
from consent_ledger.store.checkpoint_issuer import issue_checkpoint
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import issue_token, module_database, signed_in_client

pytestmark = pytest.mark.integration

MASTER_KEY = os.urandom(32)
POLICY = load_reference_policy()
ANNA = "anna"
OLA = "ola"
HOSTILE = '<script>alert("subject")</script>'
HOSTILE_NAME = "<img src=x onerror=alert(1)>Evil & Co"
NOTICE = {"id": "privacy-statement", "version": "2026-02", "content_sha256": "ab" * 32}


def event(event_id: str, subject: str, kind: str, time: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "urn:system:crm",
        "type": kind,
        "subject": subject,
        "time": time,
        "data": data,
    }


def consent(event_id: str, subject: str, time: str, purpose: str, **extra: Any) -> dict[str, Any]:
    return event(
        event_id, subject, "ConsentGiven", time,
        purpose=purpose, subject_role="user", controller="visma-software-as", **extra,
    )  # fmt: skip


def shared(
    event_id: str, subject: str, time: str, purpose: str, recipient: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return event(
        event_id, subject, "DataShared", time, purpose=purpose, subject_role="user",
        controller="visma-software-as", recipient=recipient, data_categories=["email", "name"],
        **extra,
    )  # fmt: skip


GROUP = {"kind": "group_company", "id": "visma-enterprise-as", "name": "Visma Enterprise AS"}
UNCERTIFIED = {"kind": "partner", "id": "shady-partner", "name": "Shady Partner AS"}
AUTHORITY = {"kind": "public_authority", "id": "politiet"}  # no name

# In arrival order. anna-late-consent arrives last but is dated before anna-cloud,
# so the consent-missing it caused is retracted.
EVENTS = [
    consent("anna-c1", ANNA, "2026-01-10T09:00:00Z", "marketing", channel="web", notice=NOTICE),
    shared("anna-d1", ANNA, "2026-01-12T10:00:00Z", "marketing", GROUP),
    event("anna-w1", ANNA, "ConsentWithdrawn", "2026-01-20T08:00:00Z", purpose="marketing",
          controller="visma-software-as", channel="email", reason="too many mails"),
    shared("anna-d2", ANNA, "2026-01-25T10:00:00Z", "marketing", UNCERTIFIED),
    shared("anna-d3", ANNA, "2026-02-01T10:00:00Z", "legal_disclosure", AUTHORITY,
           legal_basis={"kind": "court_order", "reference": "Oslo tingrett 26-001"}),
    shared("anna-cloud", ANNA, "2026-02-03T10:00:00Z", "cloud_access", GROUP),
    event("anna-v1", ANNA, "VisitorRegistered", "2026-02-05T08:00:00Z", site="oslo",
          rights_notice="visitor-notice-3"),
    event("anna-v2", ANNA, "VisitorRegistered", "2026-02-06T08:00:00Z", site="bergen"),
    consent("ola-c1", OLA, "2026-01-05T09:00:00Z", "marketing", channel="app"),
    shared("ola-d1", OLA, "2026-01-06T09:00:00Z", "marketing",
           {"kind": "group_company", "id": "visma-finland-oy", "name": "Ola's Recipient Oy"}),
    event("ola-erased", OLA, "ErasureRequested", "2026-01-07T09:00:00Z"),
    shared("h-d1", HOSTILE, "2026-01-08T09:00:00Z", "marketing",
           {"kind": "partner", "id": "<b>bold</b>", "name": HOSTILE_NAME}),
    consent("anna-late-consent", ANNA, "2026-02-02T10:00:00Z", "cloud_access", channel="phone"),
]  # fmt: skip
OLA_DISTINCTIVE = ("visma-finland-oy", "Ola's Recipient Oy", "ola-c1", "ola-d1", "app")


@dataclass
class Ledger:
    dsn: str
    pool: asyncpg.Pool
    signing_key: Ed25519PrivateKey
    settings: Settings
    tokens: dict[str, str]

    def client(self, role: str | None = "privacy-officer") -> Any:
        """A client signed in as ``role``; for None one that sends an empty token."""
        app = create_app(self.settings, pool=self.pool, policy=POLICY)
        return signed_in_client(app, self.tokens[role] if role else "")


@pytest.fixture(scope="module")
async def ledger(pg_server_dsn: str) -> AsyncIterator[Ledger]:
    async with module_database(pg_server_dsn, "report") as (dsn, pool):
        settings = Settings(
            master_key=base64.b64encode(MASTER_KEY).decode(), kafka_idempotence=False
        )
        pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), POLICY, settings)
        records = [Record(n % 2, n // 2, orjson.dumps(body)) for n, body in enumerate(EVENTS)]
        await pipeline.process(records[:-1])
        await pipeline.process(records[-1:])  # the late consent, in a batch of its own
        signing_key = generate_signing_key()
        await issue_checkpoint(pool, signing_key, "report-test", force=True)
        tokens = {
            role: await issue_token(pool, role, name=f"report-{role}")
            for role in ("privacy-officer", "admin", "analyst", "publisher", "auditor")
        }
        yield Ledger(dsn, pool, signing_key, settings, tokens)


def report_path(subject: str) -> str:
    return f"/v1/subjects/{quote(subject, safe='')}/report"


async def test_the_report_lists_consents_disclosures_with_recipients_and_violations(
    ledger: Ledger,
) -> None:
    async with ledger.client() as client:
        answer = await client.get(report_path(ANNA))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert answer.headers["cache-control"] == "no-store"  # a person's data: no cached copy
    assert report["subject"] == ANNA and report["erased"] is False and report["erased_at"] is None
    assert report["generated_at"].endswith("Z")

    consents = [(c["event_id"], c["action"], c["purpose"]) for c in report["consents"]]
    assert consents == [
        ("anna-c1", "given", "marketing"),
        ("anna-w1", "withdrawn", "marketing"),
        ("anna-late-consent", "given", "cloud_access"),
    ]
    given, withdrawn, late = report["consents"]
    assert given["time"] == "2026-01-10T09:00:00Z"
    assert given["clause"] == {"id": "l", "title": "To promote new products and services"}
    assert given["channel"] == "web"
    assert given["notice"] == {"id": "privacy-statement", "version": "2026-02"}
    assert withdrawn["channel"] == "email" and withdrawn["reason"] == "too many mails"
    assert withdrawn["notice"] is None
    assert late["clause"]["id"] == "k" and late["channel"] == "phone"

    by_id = {d["event_id"]: d for d in report["disclosures"]}
    assert list(by_id) == ["anna-d1", "anna-d2", "anna-d3", "anna-cloud"]  # by event time
    allowed = by_id["anna-d1"]
    assert allowed["recipient"] == GROUP
    assert allowed["verdict"] == "allowed" and allowed["violations"] == []
    assert allowed["data_categories"] == ["email", "name"]
    assert allowed["clause"]["id"] == "l" and allowed["legal_basis"] is None

    broke = by_id["anna-d2"]
    assert broke["recipient"] == UNCERTIFIED and broke["verdict"] == "violation"
    rules = {(v["rule"], v["status"]) for v in broke["violations"]}
    assert ("consent-withdrawn", "open") in rules and len(rules) >= 2  # and the partner's
    assert by_id["anna-d3"]["recipient"] == {**AUTHORITY, "name": None}
    assert by_id["anna-d3"]["legal_basis"] == {
        "kind": "court_order",
        "reference": "Oslo tingrett 26-001",
    }
    assert by_id["anna-d3"]["verdict"] == "allowed"
    retracted = by_id["anna-cloud"]
    assert retracted["verdict"] == "allowed"
    assert [(v["rule"], v["status"]) for v in retracted["violations"]] == [
        ("consent-missing", "retracted")
    ]

    stored = await ledger.pool.fetch(
        "SELECT event_id, rule, status, clause, severity FROM violations WHERE subject = $1", ANNA
    )
    listed = {
        (v["event_id"], v["rule"], v["status"], v["clause"]["id"], v["severity"])
        for v in report["violations"]
    }
    assert listed == {tuple(row) for row in stored} and len(listed) >= 3
    visits = [
        (v["event_id"], v["site"], v["rights_notice"], v["verdict"]) for v in report["visits"]
    ]
    assert visits == [
        ("anna-v1", "oslo", "visitor-notice-3", "allowed"),
        ("anna-v2", "bergen", None, "violation"),  # not told of its rights
    ]
    assert report["visits"][1]["violations"][0]["rule"] == "visitor-not-informed"
    partner = next(v for v in report["violations"] if v["rule"] == "partner-not-certified")
    assert partner["clause"] == {"id": "Visma partnere", "title": "Visma partnere"}

    # Each clause named, once, in the statement's words (Norwegian where only it has them).
    words = {c["id"]: c for c in report["clauses"]}
    assert set(words) == {"l", "k", "Visma partnere", "Offentlige myndigheter", "visitors"}
    assert words["l"]["language"] == "en" and "new products" in words["l"]["text"]
    assert words["Visma partnere"]["language"] == "no"
    times = [v["occurred_at"] for v in report["violations"]]
    assert times == sorted(times)


async def test_the_report_carries_the_latest_checkpoint_as_a_trusted_checkpoint_file(
    ledger: Ledger,
) -> None:
    async with ledger.client() as client:
        report = (await client.get(report_path(ANNA))).json()
    kept = parse_trusted_checkpoint(orjson.dumps(report["checkpoint"]), "the report")
    assert verify_checkpoint(kept.signed, ledger.signing_key.public_key())
    logs = await ledger.pool.fetch("SELECT kafka_partition, size FROM merkle_logs")
    heads = {head.partition: head.size for head in kept.signed.checkpoint.tree_heads}
    assert heads == {row["kafka_partition"]: row["size"] for row in logs}
    assert sum(heads.values()) == len(EVENTS)


async def test_the_html_report_is_a_self_contained_document_with_the_checkpoint(
    ledger: Ledger,
) -> None:
    async with ledger.client("admin") as client:
        answer = await client.get(report_path(ANNA), params={"format": "html"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == REPORT_CSP
    assert answer.headers["cache-control"] == "no-store"
    page = answer.text
    assert "<title>Subject access report: anna</title>" in page
    for needle in ("Visma Enterprise AS", "Shady Partner AS", "politiet", "consent-withdrawn",
                   "version 2026-02", "Oslo tingrett 26-001", "@media print", " UTC</time>",
                   "To promote new products and services (clause l)", "visitor-notice-3",
                   "consent-ledger verify --public-key KEY --trusted-checkpoint kept.json"):  # fmt: skip
        assert needle in page, needle
    checkpoint = (await ledger.pool.fetchrow("SELECT document FROM checkpoints"))["document"]
    signature = orjson.loads(checkpoint)["signature"]
    assert signature.replace("+", "&#x2B;") in page or signature in page
    lowered = page.lower()
    for fetching in ("<script", "<img", "<link", "src=", "href=", "url(", "@import"):
        assert fetching not in lowered, fetching


async def test_html_in_a_subject_id_or_a_recipient_name_comes_out_as_text(ledger: Ledger) -> None:
    async with ledger.client() as client:
        page = (await client.get(report_path(HOSTILE), params={"format": "html"})).text
        document = (await client.get(report_path(HOSTILE))).json()
    assert document["disclosures"][0]["recipient"]["name"] == HOSTILE_NAME
    assert "&lt;script&gt;alert(&quot;subject&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;Evil &amp; Co" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    lowered = page.lower()
    assert "<script" not in lowered and "<img" not in lowered and "<b>" not in lowered


async def test_an_erased_subjects_report_says_only_that_it_was_erased_and_when(
    ledger: Ledger,
) -> None:
    async with ledger.client() as client:
        document = await client.get(report_path(OLA))
        page = await client.get(report_path(OLA), params={"format": "html"})
    assert document.status_code == page.status_code == 200
    report = document.json()
    assert report["erased"] is True and report["erased_at"] == "2026-01-07T09:00:00Z"
    assert report["consents"] == report["disclosures"] == report["violations"] == []
    assert report["checkpoint"] is not None
    assert "asked to be forgotten" in page.text and "2026-01-07 09:00:00 UTC" in page.text
    for needle in OLA_DISTINCTIVE:
        assert needle not in document.text and needle not in page.text, needle


async def test_a_subject_the_ledger_never_saw_gets_an_empty_report(ledger: Ledger) -> None:
    async with ledger.client() as client:
        answer = await client.get(report_path("nobody"))
    assert answer.status_code == 200
    report = answer.json()
    assert (report["consents"], report["disclosures"], report["violations"]) == ([], [], [])


async def test_each_report_is_in_the_access_log_with_its_purpose(ledger: Ledger) -> None:
    async with ledger.client() as client:
        answer = await client.get(
            report_path(ANNA), params={"format": "html"}, headers={"X-Purpose": "DSAR 2026-17"}
        )
    assert answer.status_code == 200
    row = await ledger.pool.fetchrow(
        "SELECT token_name, role, endpoint, subjects, purpose FROM access_log"
        " WHERE purpose = 'DSAR 2026-17'"
    )
    assert dict(row) == {
        "token_name": "report-privacy-officer",
        "role": "privacy-officer",
        "endpoint": "GET /v1/subjects/{subject}/report",
        "subjects": [ANNA],
        "purpose": "DSAR 2026-17",
    }


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("analyst", 403), ("publisher", 403), ("auditor", 403), ("admin", 200)],
)
async def test_only_privacy_officers_and_admins_may_read_a_report(
    ledger: Ledger, role: str | None, status: int
) -> None:
    before = await ledger.pool.fetchval("SELECT count(*) FROM access_log")
    async with ledger.client(role) as client:
        answer = await client.get(report_path(ANNA))
    assert answer.status_code == status, answer.text
    if status != 200:
        assert answer.json()["error"]["code"] in ("unauthenticated", "forbidden")
        assert await ledger.pool.fetchval("SELECT count(*) FROM access_log") == before


@pytest.mark.parametrize(
    "path",
    ["/v1/subjects/anna%00/report", "/v1/subjects//report", "/v1/subjects/%20/report",
     f"/v1/subjects/{'s' * 257}/report", "/v1/subjects/anna/report?format=pdf"],
)  # fmt: skip
async def test_a_bad_subject_or_format_is_refused_naming_it(ledger: Ledger, path: str) -> None:
    async with ledger.client() as client:
        answer = await client.get(path)
    assert answer.status_code in (400, 422), answer.text
    assert answer.json()["error"]["parameter"] in ("subject", "format")


CLI = Path(sys.executable).with_name("consent-ledger")


def report_command(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("LEDGER_")}
    return subprocess.run(
        [str(CLI), "report", *arguments], env=clean | env, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip


async def test_the_report_command_writes_the_document_the_api_serves(
    ledger: Ledger, tmp_path: Path
) -> None:
    settings = replace(ledger.settings, database_url=ledger.dsn, api_port=find_free_port())
    server = build_server(settings, policy=POLICY)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), serving
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{settings.api_port}"
        env = {"LEDGER_API_URL": url, "LEDGER_TOKEN": ledger.tokens["privacy-officer"]}
        target = tmp_path / "anna.html"
        written = await asyncio.to_thread(
            report_command, ANNA, "-o", str(target), "--purpose", "CLI DSAR", env=env
        )
        as_json = await asyncio.to_thread(report_command, ANNA, "--format", "json", env=env)
        refused = await asyncio.to_thread(
            report_command, ANNA, env=env | {"LEDGER_TOKEN": ledger.tokens["analyst"]}
        )
    finally:
        server.should_exit = True
        await serving
    assert written.returncode == 0, written.stderr
    assert written.stdout == b""
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "Shady Partner AS" in page
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it names a person's data
    assert as_json.returncode == 0, as_json.stderr
    assert [d["event_id"] for d in orjson.loads(as_json.stdout)["disclosures"]] == [
        "anna-d1", "anna-d2", "anna-d3", "anna-cloud",
    ]  # fmt: skip
    assert refused.returncode == 2 and b"403" in refused.stderr and refused.stdout == b""
    logged = await ledger.pool.fetchval(
        "SELECT subjects FROM access_log WHERE purpose = 'CLI DSAR'"
    )
    assert logged == [ANNA]
