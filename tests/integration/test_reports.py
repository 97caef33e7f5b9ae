"""The analyst reports (CONTRACT §8) over HTTP, on a real database the worker's
pipeline filled from events: buckets of the event's time (hour, day and ISO week
boundaries, a late event in an old bucket, a retraction), every grouping, from/to,
the sums against /v1/violations, validation and who may ask.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from consent_ledger.api.app import create_app
from consent_ledger.api.routes import reports as report_routes
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import PolicyVersions, load_reference_policy
from consent_ledger.core.reports import (
    ALL_TIME,
    Bucket,
    DisclosureGroup,
    ViolationGroup,
    bucket_start,
)
from consent_ledger.core.timestamps import format_micros, parse_instant
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.store.api_reads import HEAVY_READS, LedgerView
from consent_ledger.store.reports import disclosure_report, violation_report
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import issue_token, module_database, signed_in_client

pytestmark = [pytest.mark.integration]

MASTER_KEY = os.urandom(32)
POLICY = PolicyVersions((load_reference_policy(),))
VIOLATION_GROUPS = ("rule", "clause", "recipient_kind", "recipient", "purpose", "severity")


def shared(
    event_id: str, subject: str, time: str, purpose: str, kind: str, recipient: str,
    categories: tuple[str, ...] = ("contact_details",),
) -> dict[str, Any]:  # fmt: skip
    return event(event_id, subject, "DataShared", time, {
        "purpose": purpose, "subject_role": "customer_contact",
        "controller": "visma-software-as", "recipient": {"kind": kind, "id": recipient},
        "data_categories": list(categories),
    })  # fmt: skip


def event(
    event_id: str, subject: str, kind: str, time: str, data: dict[str, Any]
) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "source": "urn:system:test", "type": kind,
            "subject": subject, "time": time, "data": data}  # fmt: skip


# In the order the ledger receives them; the comments say what the reference policy finds.
EVENTS = [
    # Marketing without consent (consent-missing, clause l): the last microsecond of
    # Sunday 1 March, then the first of Monday 2 March, a new hour, day and ISO week.
    shared("sun-last", "anna", "2026-03-01T23:59:59.999999Z", "marketing", "group_company",
           "visma-software-as", ("contact_details", "usage_data", "contact_details")),
    shared("mon-first", "anna", "2026-03-02T00:00:00Z", "marketing", "group_company",
           "visma-software-as"),
    # Given as +01:00 (00:30 UTC on Monday), cleared below by a late consent: retracted.
    shared("cleared", "bo", "2026-03-02T01:30:00+01:00", "marketing", "group_company",
           "visma-software-as"),
    # A partner that is not certified (partner-not-certified, clause "Visma partnere").
    shared("uncertified", "cy", "2026-03-02T08:15:00Z", "delivery", "partner", "acme-partner"),
    # A certified partner for a purpose partners may not have: two rules at once.
    shared("two-rules", "cy", "2026-03-03T12:00:00Z", "marketing", "partner",
           "northwind-consulting", ("usage_data",)),
    # Nothing broken.
    shared("clean-1", "dag", "2026-03-02T09:00:00Z", "delivery", "group_company",
           "visma-software-as"),
    shared("clean-2", "dag", "2026-03-04T09:00:00Z", "delivery", "partner",
           "northwind-consulting", ("payment_details",)),
    # A visitor not told their rights (visitor-not-informed): no disclosure, no recipient.
    event("visitor", "eva", "VisitorRegistered", "2026-03-02T10:00:00Z", {"site": "oslo"}),
    # Late: bo's consent, dated before the disclosure above, retracts its violation.
    event("bo-consent", "bo", "ConsentGiven", "2026-03-01T00:00:00Z",
          {"purpose": "marketing", "subject_role": "user", "controller": "acme"}),
    # Late: a disclosure of January, which lands in an old bucket.
    shared("january", "fia", "2026-01-05T10:00:00Z", "marketing", "group_company",
           "visma-software-as"),
]  # fmt: skip


@pytest.fixture(scope="module")
async def reports_pool(pg_server_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """One database for the module, filled once by the worker's pipeline."""
    async with module_database(pg_server_dsn, "test_reports") as (_, pool):
        pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), POLICY, settings())
        records = [Record(0, offset, orjson.dumps(body)) for offset, body in enumerate(EVENTS)]
        for record in records:  # one batch each: the late events come after the rest
            await pipeline.process([record])
        yield pool


def settings() -> Settings:
    return Settings(master_key=base64.b64encode(MASTER_KEY).decode())


@pytest.fixture(scope="module")
async def analyst(reports_pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings(), pool=reports_pool, policy=POLICY)
    async with signed_in_client(app, await issue_token(reports_pool, "analyst")) as client:
        yield client


async def report(client: httpx.AsyncClient, path: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/reports/{path}", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def cells(items: list[dict[str, Any]]) -> dict[tuple[str, Any], tuple[int, int]]:
    return {(item["bucket"], item["group"]): (item["opened"], item["retracted"]) for item in items}


async def test_a_violation_counts_in_the_bucket_of_its_events_time(
    analyst: httpx.AsyncClient,
) -> None:
    by_day = cells(await report(analyst, "violations", bucket="day", group_by="rule"))
    assert by_day == {
        # the late January disclosure, in its own old bucket
        ("2026-01-05T00:00:00Z", "consent-missing"): (1, 0),
        ("2026-03-01T00:00:00Z", "consent-missing"): (1, 0),
        # mon-first and the retracted one (00:30 UTC, given as 01:30+01:00)
        ("2026-03-02T00:00:00Z", "consent-missing"): (2, 1),
        ("2026-03-02T00:00:00Z", "partner-not-certified"): (1, 0),
        ("2026-03-02T00:00:00Z", "visitor-not-informed"): (1, 0),
        ("2026-03-03T00:00:00Z", "consent-missing"): (1, 0),
        ("2026-03-03T00:00:00Z", "recipient-purpose-mismatch"): (1, 0),
    }
    by_week = cells(await report(analyst, "violations", bucket="week", group_by="severity"))
    # ISO weeks start on Monday: Sunday 1 March is in the week of 23 February.
    assert by_week == {
        ("2026-01-05T00:00:00Z", "high"): (1, 0),
        ("2026-02-23T00:00:00Z", "high"): (1, 0),
        ("2026-03-02T00:00:00Z", "high"): (4, 1),
        ("2026-03-02T00:00:00Z", "medium"): (2, 0),
    }
    by_clause = await report(analyst, "violations", bucket="hour", group_by="clause")
    by_hour = cells(by_clause)
    assert by_hour[("2026-03-01T23:00:00Z", "l")] == (1, 0)
    assert by_hour[("2026-03-02T00:00:00Z", "l")] == (2, 1)
    assert by_hour[("2026-03-02T08:00:00Z", "Visma partnere")] == (1, 0)
    assert by_hour[("2026-03-02T10:00:00Z", "visitors")] == (1, 0)
    # Each clause with its title in the statement's words, as the policy gives them.
    titles = {item["group"]: item["clause_title"] for item in by_clause}
    assert titles == {clause: POLICY.clause_title(clause) for clause in titles}
    assert titles["l"] == "To promote new products and services"
    rules = await report(analyst, "violations", group_by="rule")
    assert {item["clause_title"] for item in rules} == {None}


async def every_violation(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get("/v1/violations", params={"limit": 1000})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    items: list[dict[str, Any]] = response.json()["items"]
    return items


@pytest.mark.parametrize("group_by", VIOLATION_GROUPS)
@pytest.mark.parametrize("bucket", ["hour", "day", "week"])
async def test_each_grouping_sums_to_what_is_open_now(
    analyst: httpx.AsyncClient, bucket: str, group_by: str
) -> None:
    items = await report(analyst, "violations", bucket=bucket, group_by=group_by)
    listed = await every_violation(analyst)
    assert sum(item["opened"] - item["retracted"] for item in items) == sum(
        violation["status"] == "open" for violation in listed
    )
    # Each item's bucket is the start of the bucket of its violations' event times.
    expected: Counter[str] = Counter(
        format_micros(bucket_start(parse_instant(violation["occurred_at"]), Bucket(bucket)))
        for violation in listed
    )
    opened: Counter[str] = Counter()
    for item in items:
        opened[item["bucket"]] += item["opened"]
    assert opened == expected
    assert [item["bucket"] for item in items] == sorted(item["bucket"] for item in items)


async def test_groups_of_the_disclosure_and_none_for_a_visitor(
    analyst: httpx.AsyncClient,
) -> None:
    def totals(items: list[dict[str, Any]]) -> dict[Any, tuple[int, int]]:
        summed: dict[Any, tuple[int, int]] = {}
        for item in items:
            kind = item["recipient_kind"]
            key = (kind, item["group"]) if kind else item["group"]
            opened, retracted = summed.get(key, (0, 0))
            summed[key] = (opened + item["opened"], retracted + item["retracted"])
        return summed

    week = {"bucket": "week"}
    assert totals(await report(analyst, "violations", group_by="recipient_kind", **week)) == {
        "group_company": (4, 1),
        "partner": (3, 0),
        None: (1, 0),
    }
    assert totals(await report(analyst, "violations", group_by="recipient", **week)) == {
        ("group_company", "visma-software-as"): (4, 1),
        ("partner", "acme-partner"): (1, 0),
        ("partner", "northwind-consulting"): (2, 0),
        None: (1, 0),
    }
    assert totals(await report(analyst, "violations", group_by="purpose", **week)) == {
        "marketing": (6, 1),
        "delivery": (1, 0),
        None: (1, 0),
    }
    items = await report(analyst, "violations", group_by="purpose", **week)
    assert items[-1]["group"] is None  # no group last within its bucket


async def test_from_and_to_bound_the_events_time(analyst: httpx.AsyncClient) -> None:
    items = await report(
        analyst, "violations", bucket="day", group_by="rule",
        **{"from": "2026-03-01T23:59:59.999999Z", "to": "2026-03-02T08:15:00Z"},
    )  # fmt: skip
    # from is inclusive, to exclusive: sun-last in, uncertified (08:15) out.
    assert cells(items) == {
        ("2026-03-01T00:00:00Z", "consent-missing"): (1, 0),
        ("2026-03-02T00:00:00Z", "consent-missing"): (2, 1),
    }
    # A range given with an offset is the same instant.
    later = await report(analyst, "violations", group_by="rule", **{"from": "2026-03-03T13:00:00+01:00"})  # fmt: skip
    assert cells(later) == {
        ("2026-03-03T00:00:00Z", "consent-missing"): (1, 0),
        ("2026-03-03T00:00:00Z", "recipient-purpose-mismatch"): (1, 0),
    }
    # Joined groupings take the same range (their disclosures too).
    joined = await report(analyst, "violations", group_by="recipient", **{"to": "2026-02-01T00:00:00Z"})  # fmt: skip
    assert joined == [{"bucket": "2026-01-05T00:00:00Z", "group": "visma-software-as",
                       "recipient_kind": "group_company", "clause_title": None, "opened": 1,
                       "retracted": 0}]  # fmt: skip
    assert await report(analyst, "violations", **{"from": "2027-01-01T00:00:00Z"}) == []


async def test_the_defaults_are_days_by_rule_over_all_time(analyst: httpx.AsyncClient) -> None:
    response = await analyst.get("/v1/reports/violations")
    assert response.status_code == 200
    assert response.json()["bucket"] == "day"
    assert response.json()["group_by"] == "rule"
    assert response.json()["items"] == await report(analyst, "violations", bucket="day", group_by="rule")  # fmt: skip


async def test_disclosures_and_how_many_broke_a_rule(analyst: httpx.AsyncClient) -> None:
    def by_group(items: list[dict[str, Any]]) -> dict[Any, tuple[int, int]]:
        return {
            (item["recipient_kind"], item["group"]) if item["recipient_kind"] else item["group"]: (
                item["disclosures"], item["violating"])
            for item in items
        }  # fmt: skip

    # "cleared" had its only violation retracted: a disclosure, not a violating one.
    assert by_group(await report(analyst, "disclosures", group_by="recipient_kind")) == {
        "group_company": (5, 3),
        "partner": (3, 2),
    }
    assert by_group(await report(analyst, "disclosures", group_by="recipient")) == {
        ("group_company", "visma-software-as"): (5, 3),
        ("partner", "acme-partner"): (1, 1),
        ("partner", "northwind-consulting"): (2, 1),
    }
    assert by_group(await report(analyst, "disclosures", group_by="purpose")) == {
        "delivery": (3, 1),
        "marketing": (5, 4),
    }
    # Every category a disclosure names counts it once, even one named twice.
    assert by_group(await report(analyst, "disclosures", group_by="data_category")) == {
        "contact_details": (6, 4),
        "payment_details": (1, 0),
        "usage_data": (2, 2),
    }
    march_2 = {"from": "2026-03-02T00:00:00Z", "to": "2026-03-03T00:00:00Z"}
    assert by_group(await report(analyst, "disclosures", group_by="purpose", **march_2)) == {
        "delivery": (2, 1),
        "marketing": (2, 1),
    }


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("violations", {"bucket": "month"}, "bucket"),
        ("violations", {"group_by": "subject"}, "group_by"),
        ("violations", {"from": "yesterday"}, "from"),
        ("violations", {"to": "2026-03-01"}, "to"),
        ("violations", {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
        ("violations", {"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "to"),
        ("disclosures", {"group_by": "rule"}, "group_by"),
        ("disclosures", {"from": "2026-13-01T00:00:00Z"}, "from"),
    ],
)
async def test_a_bad_parameter_is_a_400_naming_it(
    analyst: httpx.AsyncClient, path: str, params: dict[str, str], parameter: str
) -> None:
    response = await analyst.get(f"/v1/reports/{path}", params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid-parameter"
    assert error["parameter"] == parameter
    assert parameter in error["message"]


async def test_a_report_too_large_asks_for_wider_buckets(
    analyst: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_routes, "MAX_REPORT_ITEMS", 3)
    response = await analyst.get("/v1/reports/violations", params={"bucket": "hour"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["parameter"] == "bucket"
    assert "more than 3 items" in response.json()["error"]["message"]
    assert (
        await analyst.get("/v1/reports/violations", params={"bucket": "week"})
    ).status_code == 400
    answer = await analyst.get("/v1/reports/violations", params={"bucket": "week", "group_by": "severity", "from": "2026-02-01T00:00:00Z"})  # fmt: skip
    assert len(answer.json()["items"]) == 3
    many = await analyst.get("/v1/reports/disclosures", params={"group_by": "recipient"})
    assert many.json()["items"] and len(many.json()["items"]) == 3
    monkeypatch.setattr(report_routes, "MAX_REPORT_ITEMS", 2)
    refused = await analyst.get("/v1/reports/disclosures", params={"group_by": "recipient"})
    assert refused.status_code == 400 and refused.json()["error"]["parameter"] == "group_by"


@pytest.mark.parametrize("path", ["violations", "disclosures"])
async def test_reports_need_a_token_of_a_role_that_reads_them(
    reports_pool: asyncpg.Pool, path: str
) -> None:
    app = create_app(settings(), pool=reports_pool, policy=POLICY)
    async with signed_in_client(app, await issue_token(reports_pool, "auditor")) as auditor:
        refused = await auditor.get(f"/v1/reports/{path}")
        anonymous = await auditor.get(f"/v1/reports/{path}", headers={"Authorization": ""})
    assert refused.status_code == 403, refused.text
    assert anonymous.status_code == 401, anonymous.text
    async with signed_in_client(app, await issue_token(reports_pool, "privacy-officer")) as reader:
        assert (await reader.get(f"/v1/reports/{path}")).status_code == 200


async def test_the_openapi_document_describes_both_reports(analyst: httpx.AsyncClient) -> None:
    document = (await analyst.get("/openapi.json")).json()
    for path, model in (("violations", "ViolationReport"), ("disclosures", "DisclosureReport")):
        answer = document["paths"][f"/v1/reports/{path}"]["get"]["responses"]
        schema = answer["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}
        assert {"400", "401", "403"} <= set(answer)
    item = document["components"]["schemas"]["ViolationReportItem"]
    assert {"bucket", "group", "opened", "retracted"} <= set(item["required"])


async def test_a_joined_report_leaves_the_planners_settings_as_they_were(
    reports_pool: asyncpg.Pool,
) -> None:
    """Joined reports merge in one process, in their transaction only."""
    settings_now = "SELECT current_setting('enable_hashjoin'), current_setting('max_parallel_workers_per_gather')"
    async with reports_pool.acquire() as connection:
        before = tuple(await connection.fetchrow(settings_now))
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            await violation_report(connection, Bucket.DAY, ViolationGroup.PURPOSE, ALL_TIME, 10)
            assert tuple(await connection.fetchrow(settings_now)) == before
        assert await disclosure_report(connection, DisclosureGroup.PURPOSE, ALL_TIME, 10)
        assert tuple(await connection.fetchrow(settings_now)) == before
        assert not connection.is_in_transaction()


async def test_reports_at_once_leave_the_pool_to_quick_reads(
    analyst: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Analysts asking many reports at once (each can take seconds over millions of
    rows) hold at most HEAVY_READS of the pool's connections: the module's pool has
    4, so four held reports would starve every other read without the limit."""
    inside, release = 0, asyncio.Event()
    two_inside = asyncio.Event()
    real = LedgerView.violation_report

    async def held(self: LedgerView, *args: Any) -> Any:
        nonlocal inside
        inside += 1
        if inside == HEAVY_READS:
            two_inside.set()
        await release.wait()
        return await real(self, *args)

    monkeypatch.setattr(LedgerView, "violation_report", held)
    reports = [
        asyncio.create_task(analyst.get("/v1/reports/violations", params={"group_by": group}))
        for group in ("rule", "clause", "severity", "purpose")
    ]
    await asyncio.wait_for(two_inside.wait(), timeout=30)
    quick = await asyncio.wait_for(analyst.get("/v1/violations", params={"limit": 1}), timeout=30)
    assert quick.status_code == 200, quick.text
    assert inside == HEAVY_READS  # the other two wait their turn
    release.set()
    answers = await asyncio.wait_for(asyncio.gather(*reports), timeout=60)
    assert [answer.status_code for answer in answers] == [200] * 4
    assert inside == 4
