"""A privacy officer and an analyst at the dashboard, in Chromium, against `dev --demo`.

Each test works as a person would: sign in with a token, read what the page
shows, click. Screenshots (and the report's PDF) go to the artifacts folder the
run prints. Every test also fails if a page asked another host for anything,
broke its Content-Security-Policy or threw (the ``visit`` fixture).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser.conftest import Stack, Visit

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def sign_in(visit: Visit, token: str, hash_: str = "") -> None:
    page = visit.page
    await page.goto(f"/{hash_}")
    await page.fill("#token", token)
    await page.click("#sign-in-form button[type=submit]")
    await page.wait_for_selector("#nav:not([hidden])")
    await ready(page)


async def ready(page: Any) -> None:
    """The view of the current address finished loading (app.js marks which one)."""
    await page.wait_for_function(
        "() => { const view = document.getElementById('view');"
        " return view.dataset.state === 'ready' && view.dataset.rendered === window.location.hash }"
    )


async def go(page: Any, hash_: str) -> None:
    await page.evaluate("hash => { window.location.hash = hash }", hash_)
    await ready(page)


async def test_sign_in_keeps_the_token_in_the_tab_and_sends_it_as_a_bearer_token(
    visit: Visit, stack: Stack, artifacts: Path
) -> None:
    page = visit.page
    await page.goto("/")
    assert await page.is_visible("#sign-in")
    assert not await page.is_visible("#nav")
    await page.screenshot(path=artifacts / "01-sign-in.png")

    open_before = stack.api("/v1/stats").json()["violations_open"]  # the demo goes on meanwhile
    await sign_in(visit, stack.token)
    open_after = stack.api("/v1/stats").json()["violations_open"]
    assert await page.evaluate("sessionStorage.getItem('consent-ledger.token')") == stack.token
    assert await page.evaluate("localStorage.length") == 0
    api_calls = [r for r in visit.requests if "/v1/" in r.url]
    assert api_calls
    for request in api_calls:
        assert await request.header_value("authorization") == f"Bearer {stack.token}", request.url

    # The overview: violations over time by rule and by clause, as charts and tables.
    await page.wait_for_selector("#by-rule canvas")
    await page.wait_for_selector("#by-clause canvas")
    assert await page.locator("#by-rule table.totals tbody tr").count() >= 1
    assert "Most open now" in await page.inner_text("#by-rule")
    # Over all buckets, opened minus retracted is what is open: per rule and per clause.
    for grouping in ("#by-rule", "#by-clause"):
        cells = await page.locator(
            f"{grouping} table.totals tbody td:nth-child(4)"
        ).all_inner_texts()
        assert open_before <= sum(int(cell.replace(",", "")) for cell in cells) <= open_after
    await page.screenshot(path=artifacts / "02-overview.png", full_page=True)

    # Per day, over the last 24 hours: the demo's violations all happened now.
    await page.select_option("#bucket", "day")
    await ready(page)
    await page.select_option("#range", "24h")
    await ready(page)
    assert "bucket=day" in page.url and "range=24h" in page.url
    days = await page.evaluate(
        "() => Chart.getChart(document.querySelector('#by-rule canvas')).data.labels"
    )
    assert len(days) in (1, 2)  # today (UTC), and yesterday when the run crosses midnight

    await page.click("#sign-out")
    await page.wait_for_selector("#sign-in:not([hidden])")
    assert await page.evaluate("sessionStorage.getItem('consent-ledger.token')") is None


async def test_a_token_the_api_refuses_leads_back_to_sign_in(visit: Visit, stack: Stack) -> None:
    refused = stack.client.get(
        "/v1/violations", params={"limit": 1}, headers={"Authorization": "Bearer not-a-token"}
    )
    page = visit.page
    await page.goto("/")
    await page.fill("#token", "not-a-token")
    await page.click("#sign-in-form button[type=submit]")
    if refused.status_code == 401:
        await page.wait_for_selector("#sign-in-error:has-text('refused the token')")
        assert not await page.is_visible("#nav")
    else:  # an API that checks no tokens yet (CONTRACT §7 is being built)
        assert refused.status_code == 200
        await page.wait_for_selector("#nav:not([hidden])")


async def test_open_violations_from_the_demo_with_filters_and_pages(
    visit: Visit, stack: Stack, artifacts: Path
) -> None:
    page = visit.page
    await sign_in(visit, stack.token, "#/violations")
    rows = page.locator("#violation-table tr.violation")
    assert await rows.count() >= 3
    first = rows.first
    rule = await first.get_attribute("data-rule")
    subject = await first.locator("a.subject").inner_text()
    assert subject.startswith("subj-")  # the demo's subjects
    assert "open" in (await first.get_attribute("class") or "")
    await page.screenshot(path=artifacts / "03-violations.png", full_page=True)

    # Filter by rule: every row shown breaks that rule.
    await page.select_option("#violation-filters select[name=rule]", rule)
    await page.click("#violation-filters button[type=submit]")
    await page.wait_for_function("rule => window.location.hash.includes('rule=' + rule)", arg=rule)
    await ready(page)
    rules = await rows.evaluate_all("rows => rows.map(row => row.dataset.rule)")
    assert rules and set(rules) == {rule}

    # And by subject.
    await page.fill("#violation-filters input[name=subject]", subject)
    await page.click("#violation-filters button[type=submit]")
    await page.wait_for_function("() => window.location.hash.includes('subject=')")
    await ready(page)
    subjects = await page.locator("#violation-table a.subject").all_inner_texts()
    assert subjects and set(subjects) == {subject}
    await page.screenshot(path=artifacts / "04-violations-filtered.png", full_page=True)

    # Pages of two, by cursor: the second page holds other violations, and
    # "previous" comes back to the first.
    await go(page, "#/violations?status=open&limit=2")
    first_page = await rows.evaluate_all(
        "rows => rows.map(row => row.dataset.eventId + row.dataset.rule)"
    )
    assert len(first_page) == 2
    await page.click("#next-page")
    await page.wait_for_function("() => window.location.hash.includes('cursor=')")
    await ready(page)
    second_page = await rows.evaluate_all(
        "rows => rows.map(row => row.dataset.eventId + row.dataset.rule)"
    )
    assert second_page and not set(second_page) & set(first_page)
    await page.click("#previous-page")
    await page.wait_for_function("() => !window.location.hash.includes('cursor=')")
    await ready(page)
    assert (
        await rows.evaluate_all("rows => rows.map(row => row.dataset.eventId + row.dataset.rule)")
        == first_page
    )


async def test_a_subjects_timeline_from_a_violation(
    visit: Visit, stack: Stack, artifacts: Path
) -> None:
    page = visit.page
    await sign_in(visit, stack.token, "#/violations")
    link = page.locator("#violation-table a.subject").first
    subject = await link.inner_text()
    event_id = await page.locator("#violation-table tr.violation").first.get_attribute(
        "data-event-id"
    )
    entries = f"/v1/subjects/{quote(subject, safe='')}/events"
    before = len(stack.api(entries, limit=1000).json()["items"])  # the demo goes on meanwhile
    await link.click()
    await page.wait_for_function(
        "subject => window.location.hash === '#/subject/' + encodeURIComponent(subject)",
        arg=subject,
    )
    await ready(page)
    assert await page.inner_text("#subject-id") == subject

    # The violating event is a red point on the timeline, and a row of the ledger entries.
    point = page.locator(f"#timeline circle.point.open[data-event-id='{event_id}']")
    await point.wait_for()
    row = page.locator(f"#entry-{event_id}")
    assert "(open)" in await row.inner_text()
    await point.focus()  # points close in time overlap, so the keyboard picks this one
    await page.keyboard.press("Enter")
    await page.wait_for_selector(f"#entry-{event_id}.picked")
    assert await page.locator("#timeline text.lane-name").count() >= 1
    await page.screenshot(path=artifacts / "05-subject-timeline.png", full_page=True)

    after = len(stack.api(entries, limit=1000).json()["items"])
    assert before <= await page.locator("table.entries tr.entry").count() <= after

    # Why the officer looks goes with each request, for the access log (CONTRACT §7).
    await page.fill("#subject-form input[name=purpose]", "access request 2026-17")
    async with page.expect_request(lambda request: "/events" in request.url) as asked:
        await page.click("#subject-form button[type=submit]")
    assert await (await asked.value).header_value("x-purpose") == "access request 2026-17"
    await ready(page)


async def test_the_subject_report_opens_and_prints_to_pdf(
    visit: Visit, stack: Stack, artifacts: Path
) -> None:
    subject = stack.api("/v1/violations", status="open", limit=1).json()["items"][0]["subject"]
    page = visit.page
    await sign_in(visit, stack.token, f"#/subject/{quote(subject, safe='')}")
    answer = stack.api(f"/v1/subjects/{quote(subject, safe='')}/report", format="html")
    assert answer.status_code == 200, answer.text

    async with visit.context.expect_page() as opened:
        await page.click("#open-report")
    report = await opened.value
    await report.wait_for_load_state()
    assert report.url.startswith("blob:")
    text = await report.inner_text("body")
    assert subject in text and "Disclosures and their recipients" in text
    assert await report.title() == f"Subject access report: {subject}"
    assert re.search(r"Generated at\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? UTC", text)
    assert "consent-ledger verify" in text and "Root hash" in text
    await report.screenshot(path=artifacts / "06-subject-report.png", full_page=True)
    pdf = await report.pdf(path=artifacts / "06-subject-report.pdf", format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


async def test_the_policy_and_the_ledgers_health(
    visit: Visit, stack: Stack, artifacts: Path
) -> None:
    page = visit.page
    await sign_in(visit, stack.token, "#/policy")
    policy = stack.api("/v1/policy")
    if policy.status_code == 200:
        await page.wait_for_selector("table.clauses tbody tr")
    else:
        assert policy.status_code == 404
        assert "unavailable" in await page.inner_text("#view")
    await page.screenshot(path=artifacts / "07-policy.png", full_page=True)

    await go(page, "#/health")
    accepted = await page.inner_text("#stat-accepted dd")
    assert int(accepted.replace(",", "")) > 0
    await page.wait_for_selector("#partitions tbody tr")
    stats = stack.api("/v1/stats").json()
    assert await page.locator("#stat-open dd").inner_text() != ""
    assert stats["violations_open"] >= 3
    await page.screenshot(path=artifacts / "08-health.png", full_page=True)


@pytest.mark.parametrize(
    ("path", "rendered"),
    [("/docs", ".swagger-ui .opblock"), ("/redoc", "[data-section-id] h2")],
)
async def test_the_api_docs_pages_load_everything_from_the_api(
    visit: Visit, artifacts: Path, path: str, rendered: str
) -> None:
    page = visit.page
    response = await page.goto(path)
    assert response is not None and response.ok
    assert "default-src 'self'" in (await response.header_value("content-security-policy") or "")
    await page.wait_for_selector(rendered)
    assert re.search(r"/v1/violations", await page.inner_text("body"))
    await page.screenshot(path=artifacts / f"09-{path.strip('/')}.png")


async def test_the_guard_sees_a_request_for_another_host_even_when_the_policy_refuses_it(
    visit: Visit, stack: Stack
) -> None:
    """The other host is this machine by another name: nothing leaves it, whatever happens."""
    page = visit.page
    await page.goto("/")
    other = stack.url.replace("127.0.0.1", "localhost") + "/static/favicon.svg"
    async with (
        page.expect_request(other),
        page.expect_console_message(lambda message: "Content Security Policy" in message.text),
    ):
        await page.evaluate("url => { new Image().src = url }", other)
    assert visit.foreign == [other]
    assert any("img-src" in refusal for refusal in visit.refused)
    visit.foreign.clear()  # seen, as it should be: the fixture's own check passes
    visit.refused.clear()


BUCKET_CASES = [
    ("2026-03-04T10:15:30.250+02:00", "hour", "2026-03-04T08:00:00Z"),
    ("2026-03-04T00:30:00+02:00", "day", "2026-03-03T00:00:00Z"),  # the UTC day
    ("2026-03-04T10:15:00Z", "week", "2026-03-02T00:00:00Z"),  # a Wednesday: that Monday
    ("2026-03-08T23:59:59Z", "week", "2026-03-02T00:00:00Z"),  # a Sunday ends the ISO week
    ("2026-03-09T00:00:00Z", "week", "2026-03-09T00:00:00Z"),
]


async def test_the_pages_own_arithmetic(visit: Visit) -> None:
    """The figures the page computes itself, in the browser that runs them."""
    page = visit.page
    await page.goto("/")
    for time, bucket, start in BUCKET_CASES:
        found = await page.evaluate(
            "async ([time, bucket]) => (await import('/static/js/reports.js')).bucketStart(time, bucket)",
            [time, bucket],
        )
        assert found == start, (time, bucket)

    violations = [
        {"occurred_at": "2026-03-04T10:00:00Z", "rule": "consent-missing", "status": "open"},
        {"occurred_at": "2026-03-04T10:30:00Z", "rule": "consent-missing", "status": "retracted"},
        {"occurred_at": "2026-03-04T11:00:00Z", "rule": "consent-missing", "status": "open"},
        {"occurred_at": "2026-03-04T10:10:00Z", "rule": "visitor-not-informed", "status": "open"},
    ]
    items, totals = await page.evaluate(
        """async (violations) => {
            const reports = await import('/static/js/reports.js');
            const items = reports.bucketViolations(violations, 'hour', 'rule');
            return [items, reports.totalsByGroup(items)];
        }""",
        violations,
    )
    assert items == [
        {"bucket": "2026-03-04T10:00:00Z", "group": "consent-missing", "opened": 2, "retracted": 1},
        {
            "bucket": "2026-03-04T10:00:00Z",
            "group": "visitor-not-informed",
            "opened": 1,
            "retracted": 0,
        },
        {"bucket": "2026-03-04T11:00:00Z", "group": "consent-missing", "opened": 1, "retracted": 0},
    ]
    assert [(t["group"], t["open"]) for t in totals] == [
        ("consent-missing", 2),
        ("visitor-not-informed", 1),
    ]

    metrics = (
        "# HELP consent_ledger_consumer_lag Records not processed\n"
        'consent_ledger_consumer_lag{topic="ledger.events",partition="1"} 7\n'
        'consent_ledger_http_requests_total{route="/v1/x",method="GET",status="200"} 3\n'
    )
    samples = await page.evaluate(
        "async (text) => (await import('/static/js/health.js')).parseMetrics(text)", metrics
    )
    assert samples[0] == {
        "name": "consent_ledger_consumer_lag",
        "labels": {"topic": "ledger.events", "partition": "1"},
        "value": 7,
    }
    assert len(samples) == 2

    def entry(kind: str, time: str, **data: Any) -> dict[str, Any]:
        return {
            "event_id": f"{kind}-{time}",
            "type": kind,
            "occurred_at": time,
            "event": {"data": data},
        }

    timeline = await page.evaluate(
        """async ([entries, now]) => (await import('/static/js/timeline.js')).lanesOf(entries, [], now)""",
        [
            [
                entry("ConsentGiven", "2026-03-01T00:00:00Z", purpose="marketing",
                      expires_at="2026-03-10T00:00:00Z"),
                entry("ConsentGiven", "2026-03-02T00:00:00Z", purpose="support"),
                entry("ConsentWithdrawn", "2026-03-05T00:00:00Z", purpose="support"),
                entry("DataShared", "2026-03-03T00:00:00Z", purpose="marketing",
                      recipient={"kind": "partner", "id": "p"}),
            ],
            1_800_000_000_000,
        ],
    )  # fmt: skip
    lanes = {lane["name"]: lane for lane in timeline["lanes"]}
    day = 86_400_000
    march_1 = 1_772_323_200_000  # 2026-03-01T00:00:00Z in ms
    (marketing,) = lanes["consent: marketing"]["spans"]
    assert (marketing["from"], marketing["to"]) == (march_1, march_1 + 9 * day)  # until it expired
    (support,) = lanes["consent: support"]["spans"]
    assert (support["from"], support["to"]) == (march_1 + day, march_1 + 4 * day)  # withdrawn
    assert [p["verdict"] for p in lanes["disclosures"]["points"]] == ["clean"]
