"""Who may do what (CONTRACT §7), asked of the app on a real PostgreSQL and broker.

Every route of the app is enumerated: each must declare a permission (or be
public), the one this file reads §7's table as; then every route is called by
every kind of caller (anonymous, each role, an expired and a revoked token,
JWTs of an identity provider served on a local port: valid, wrong audience,
wrong issuer, expired, ``alg: none``, a key its JWKS does not list) and must
answer 401, 403 or neither exactly as the table says. Then what binds a
publisher, what the access log records, and the throttle, the content types,
the Host allow-list, and the same over a real socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.routing import APIRoute

from consent_ledger.api.app import build_server, create_app
from consent_ledger.api.auth import DOCUMENTATION_PATHS, app_routes, route_requirement
from consent_ledger.core.roles import Permission, Role, roles_granting
from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.settings import Settings
from tests.conftest import TEST_SOURCE, bearer, issue_token
from tests.identity_provider import AUDIENCE, IdentityProvider, unsigned_token
from tests.integration.test_api import (
    MASTER_KEY_TEXT,
    POLICY,
    LedgerRows,
    assert_error,
    event,
    topic_size,
)

pytestmark = pytest.mark.integration

P = Permission

# CONTRACT §7, read route by route. A route missing here fails the enumeration
# test: say here who may call it.
EXPECTED: dict[tuple[str, str], Permission | None] = {
    ("POST", "/v1/events"): P.PUBLISH_EVENTS,
    ("GET", "/v1/violations"): P.READ_VIOLATIONS,
    ("GET", "/v1/subjects/{subject}/consents"): P.READ_CONSENTS,
    ("GET", "/v1/subjects/{subject}/events"): P.READ_SUBJECT_EVENTS,
    ("GET", "/v1/subjects/{subject}/report"): P.READ_SUBJECT_REPORT,
    ("GET", "/v1/rejected"): P.READ_REJECTED,
    ("GET", "/v1/ledger/public-key"): P.READ_LEDGER,
    ("GET", "/v1/ledger/checkpoints"): P.READ_LEDGER,
    ("GET", "/v1/ledger/checkpoints/latest"): P.READ_LEDGER,
    ("GET", "/v1/ledger/checkpoints/{checkpoint_id}"): P.READ_LEDGER,
    ("GET", "/v1/ledger/proofs/inclusion/{event_id}"): P.READ_LEDGER,
    ("GET", "/v1/ledger/proofs/consistency"): P.READ_LEDGER,
    ("GET", "/v1/stats"): P.READ_STATS,
    ("GET", "/v1/reports/violations"): P.READ_REPORTS,
    ("GET", "/v1/reports/disclosures"): P.READ_REPORTS,
    ("GET", "/metrics"): P.READ_METRICS,
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    # The dashboard's page, its files and the API docs: no data, which the page
    # fetches with the token its user signs in with.
    ("GET", "/"): None,
    ("GET", "/static/{asset}"): None,
    ("GET", "/docs"): None,
    ("GET", "/redoc"): None,
    ("GET", "/v1/tokens"): P.MANAGE_TOKENS,
    ("POST", "/v1/tokens"): P.MANAGE_TOKENS,
    ("DELETE", "/v1/tokens/{name}"): P.MANAGE_TOKENS,
    ("GET", "/v1/access-log"): P.READ_ACCESS_LOG,
    ("GET", "/v1/policy"): P.READ_POLICY,
    ("GET", "/v1/policy/versions"): P.READ_POLICY,
    ("POST", "/v1/policy/whatif"): P.READ_POLICY,
    ("POST", "/v1/policy/versions"): P.PUBLISH_POLICY,
}
PATH_VALUES = {
    "subject": "anna",
    "checkpoint_id": "1",
    "event_id": "e-1",
    "name": "nobody",
    "asset": "dashboard.css",
}
QUERIES = {"/v1/ledger/proofs/consistency": {"from": "1", "to": "1"}}


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    with IdentityProvider().serving() as served:
        yield served


@pytest.fixture
def settings(
    unique_name: Callable[[str], str], kafka_bootstrap: str, provider: IdentityProvider
) -> Settings:
    return Settings(
        master_key=MASTER_KEY_TEXT,
        kafka_bootstrap=kafka_bootstrap,
        events_topic=unique_name("events"),
        kafka_idempotence=False,
        oidc_issuer=provider.issuer,
        oidc_audience=AUDIENCE,
        oidc_jwks_cooldown_s=0,
        auth_failures_per_minute=100_000,  # the matrix fails on purpose, many times
    )


@asynccontextmanager
async def client_of(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client,
    ):
        yield client


def declared_routes(app: FastAPI) -> dict[tuple[str, str], Permission | None]:
    """(method, path) of every route the app serves, with the permission it declares."""
    declared: dict[tuple[str, str], Permission | None] = {}
    for route in app_routes(app.routes):
        if not isinstance(route, APIRoute):
            assert getattr(route, "path", None) in DOCUMENTATION_PATHS, route
            continue
        requirement = route_requirement(route)
        assert requirement is not None, f"{route.path} declares nobody: reachable by none"
        for method in route.methods - {"HEAD"}:
            declared[method, route.path_format] = requirement.permission
    return declared


async def test_every_route_declares_the_permission_of_the_contract(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    declared = declared_routes(create_app(settings, pool=pool, policy=POLICY))
    unknown = sorted(set(declared) - set(EXPECTED))
    assert not unknown, f"routes this test does not know: say in EXPECTED who may call {unknown}"
    assert sorted(set(EXPECTED) - set(declared)) == []
    assert declared == EXPECTED


def test_an_app_with_a_route_that_declares_nobody_is_refused(settings: Settings) -> None:
    app = create_app(settings, policy=POLICY)

    @app.get("/v1/forgotten")
    async def forgotten() -> None: ...

    with pytest.raises(AssertionError, match="declares nobody"):
        declared_routes(app)


class Callers:
    """Every kind of caller, each with the roles it holds, or None when its
    credentials must be refused (401)."""

    def __init__(self) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        self.roles: dict[str, frozenset[Role] | None] = {}

    def add(self, name: str, headers: dict[str, str], roles: frozenset[Role] | None) -> None:
        self.headers[name] = headers
        self.roles[name] = roles


async def every_caller(pool: asyncpg.Pool, provider: IdentityProvider) -> Callers:
    callers = Callers()
    callers.add("anonymous", {}, None)
    callers.add("garbage", {"Authorization": "Bearer garbage"}, None)
    callers.add("basic", {"Authorization": "Basic YWRtaW46YWRtaW4="}, None)
    for role in Role:
        token = await issue_token(pool, role.value, name=f"only-{role.value}")
        callers.add(f"token:{role.value}", bearer(token), frozenset({role}))
    expired = await issue_token(pool, "admin", name="expired-admin")
    await pool.execute(
        "UPDATE api_tokens SET expires_at = now() - interval '1 s' WHERE name = 'expired-admin'"
    )
    callers.add("token:expired", bearer(expired), None)
    revoked = await issue_token(pool, "admin", name="revoked-admin")
    await pool.execute("UPDATE api_tokens SET revoked_at = now() WHERE name = 'revoked-admin'")
    callers.add("token:revoked", bearer(revoked), None)

    jwt_admin = provider.token(roles=["admin"])
    callers.add("jwt:admin", bearer(jwt_admin), frozenset({Role.ADMIN}))
    jwt_publisher = provider.token(roles=["publisher"], ledger_sources=[TEST_SOURCE])
    callers.add("jwt:publisher", bearer(jwt_publisher), frozenset({Role.PUBLISHER}))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused_jwts = {
        "jwt:wrong-audience": provider.token(roles=["admin"], audience="another-api"),
        "jwt:wrong-issuer": provider.token(roles=["admin"], issuer="https://idp.example.org"),
        "jwt:expired": provider.token(roles=["admin"], expires_in=-120),
        "jwt:alg-none": unsigned_token(
            iss=provider.issuer, aud=AUDIENCE, sub="mallory", exp=2**31, roles=["admin"]
        ),
        "jwt:unlisted-key": provider.token(roles=["admin"], kid="not-listed", key=stranger),
    }
    for name, token in refused_jwts.items():
        callers.add(name, bearer(token), None)
    return callers


def request_for(method: str, path: str, number: int) -> tuple[str, dict[str, Any]]:
    url = path.format(**{key: value for key, value in PATH_VALUES.items() if f"{{{key}}}" in path})
    options: dict[str, Any] = {"params": QUERIES.get(path, {})}
    if (method, path) == ("POST", "/v1/events"):
        options["json"] = event(f"matrix-{number}", "anna")
    elif (method, path) == ("POST", "/v1/tokens"):
        options["json"] = {"name": f"matrix-{number}", "roles": ["analyst"]}
    return url, options


async def test_the_role_matrix_of_every_endpoint(
    settings: Settings, pool: asyncpg.Pool, provider: IdentityProvider
) -> None:
    await ensure_topics(settings.kafka_bootstrap or "", {settings.events_topic: 1})
    callers = await every_caller(pool, provider)
    app = create_app(settings, pool=pool, policy=POLICY)
    wrong: list[str] = []
    number = 0
    async with client_of(app) as client:
        for (method, path), permission in sorted(EXPECTED.items()):
            allowed = set(roles_granting(permission)) if permission is not None else None
            for name, headers in callers.headers.items():
                number += 1
                url, options = request_for(method, path, number)
                response = await client.request(method, url, headers=headers, **options)
                roles = callers.roles[name]
                if allowed is None:
                    expected = "answered"
                elif roles is None:
                    expected = "401"
                elif roles & allowed:
                    expected = "answered"
                else:
                    expected = "403"
                status = response.status_code
                got = str(status) if status in (401, 403) else "answered"
                if got != expected:
                    wrong.append(f"{method} {path} by {name}: {status}, expected {expected}")
                    continue
                if status in (401, 403):
                    assert response.headers["www-authenticate"].startswith("Bearer realm=")
                    assert_error(response, status)
                if status == 403:
                    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert wrong == []


# -- a publisher and its sources -------------------------------------------------


async def test_a_publisher_is_refused_for_another_source_and_nothing_is_published(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await ensure_topics(settings.kafka_bootstrap or "", {settings.events_topic: 1})
    token = await issue_token(pool, "publisher", sources=[TEST_SOURCE])
    foreign = {**event("e-2", "bo"), "source": "urn:system:crm"}
    async with client_of(create_app(settings, pool=pool, policy=POLICY)) as client:
        refused = await client.post(
            "/v1/events", json=[event("e-1", "anna"), foreign], headers=bearer(token)
        )
        body = assert_error(refused, 403, "source-not-allowed")
        assert "urn:system:crm" in body["error"]["message"]
        assert body["error"]["event_id"] == "e-2"
        assert await topic_size(settings.kafka_bootstrap or "", settings.events_topic) == 0
        accepted = await client.post("/v1/events", json=event("e-1", "anna"), headers=bearer(token))
        assert accepted.status_code == 202, accepted.text
    assert await topic_size(settings.kafka_bootstrap or "", settings.events_topic) == 1


async def test_an_erasure_needs_eraser_as_well(settings: Settings, pool: asyncpg.Pool) -> None:
    await ensure_topics(settings.kafka_bootstrap or "", {settings.events_topic: 1})
    publisher = await issue_token(pool, "publisher")
    eraser = await issue_token(pool, "publisher", "eraser")
    erasure = event("erase-anna", "anna", "ErasureRequested")
    async with client_of(create_app(settings, pool=pool, policy=POLICY)) as client:
        refused = await client.post("/v1/events", json=erasure, headers=bearer(publisher))
        assert "eraser" in assert_error(refused, 403, "erasure-not-allowed")["error"]["message"]
        accepted = await client.post("/v1/events", json=erasure, headers=bearer(eraser))
        assert accepted.status_code == 202, accepted.text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_writes_that_are_not_json_are_415(
    settings: Settings, pool: asyncpg.Pool, content_type: str | None
) -> None:
    token = await issue_token(pool, "publisher", "admin")
    headers = bearer(token) | ({"Content-Type": content_type} if content_type else {})
    body = httpx.Response(200, json=event("e-1", "anna")).content
    async with client_of(create_app(settings, pool=pool, policy=POLICY)) as client:
        for path in ("/v1/events", "/v1/tokens"):
            response = await client.post(path, content=body, headers=headers)
            assert_error(response, 415, "unsupported-media-type")
        # Without a token a write is 401 first: nothing under /v1 answers more to strangers.
        anonymous = await client.post(
            "/v1/events", content=body, headers={"Content-Type": "text/plain"}
        )
        assert anonymous.status_code == 401


async def test_cloudevents_media_types_are_writes_too(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    await ensure_topics(settings.kafka_bootstrap or "", {settings.events_topic: 1})
    token = await issue_token(pool, "publisher")
    async with client_of(create_app(settings, pool=pool, policy=POLICY)) as client:
        for number, media_type in enumerate(
            ["application/cloudevents+json", "application/cloudevents-batch+json; charset=utf-8"]
        ):
            body = httpx.Response(200, json=[event(f"e-{number}", "anna")]).content
            response = await client.post(
                "/v1/events", content=body, headers=bearer(token) | {"Content-Type": media_type}
            )
            assert response.status_code == 202, response.text


# -- the access log ----------------------------------------------------------------


async def test_every_personal_data_read_is_in_the_access_log(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as connection:
        rows = LedgerRows(connection)
        await rows.entry(event("e-1", "anna"))
        await rows.consent("e-1", "anna", "marketing", "2026-01-01T00:00:00Z")
        await rows.violation("e-2", "consent-missing", "bo")
        await rows.violation("e-3", "consent-missing", "anna")
        await connection.execute(
            "INSERT INTO rejected_events (kafka_partition, kafka_offset, reason, detail, subject,"
            " raw, recorded_at) VALUES (0, 7, 'invalid-json', 'truncated', 'cleo', $1, now())",
            b'{"id": "bad", "subject": "cleo"',
        )
    officer = await issue_token(pool, "privacy-officer", name="dpo")
    analyst = await issue_token(pool, "analyst", name="bi")
    purpose = {"X-Purpose": "art-15 request 2026-17"}
    async with client_of(create_app(settings, pool=pool, policy=POLICY)) as client:
        reads = [
            ("/v1/subjects/anna/consents", analyst, {}),
            ("/v1/violations", analyst, {}),
            ("/v1/subjects/anna/events", officer, purpose),
            ("/v1/rejected", officer, purpose),
        ]
        for path, token, headers in reads:
            response = await client.get(path, headers=bearer(token) | headers)
            assert response.status_code == 200, response.text
        # Answers that name nobody's personal data leave no row.
        for path in ("/v1/stats", "/v1/violations?subject=nobody", "/v1/ledger/checkpoints"):
            assert (await client.get(path, headers=bearer(officer))).status_code == 200

        log = await client.get("/v1/access-log", headers=bearer(officer))
        assert log.status_code == 200, log.text
        items = log.json()["items"]
        assert [
            (item["token_name"], item["role"], item["endpoint"], item["subjects"], item["purpose"])
            for item in items
        ] == [
            ("bi", "analyst", "GET /v1/subjects/{subject}/consents", ["anna"], None),
            ("bi", "analyst", "GET /v1/violations", ["anna", "bo"], None),
            ("dpo", "privacy-officer", "GET /v1/subjects/{subject}/events", ["anna"],
             "art-15 request 2026-17"),
            ("dpo", "privacy-officer", "GET /v1/rejected", ["cleo"], "art-15 request 2026-17"),
        ]  # fmt: skip

        by_subject = await client.get(
            "/v1/access-log", params={"subject": "bo"}, headers=bearer(officer)
        )
        assert [item["endpoint"] for item in by_subject.json()["items"]] == ["GET /v1/violations"]
        by_token = await client.get(
            "/v1/access-log", params={"token": "dpo", "limit": 1}, headers=bearer(officer)
        )
        first = by_token.json()
        assert [item["subjects"] for item in first["items"]] == [["anna"]]
        second = await client.get(
            "/v1/access-log",
            params={"token": "dpo", "limit": 1, "cursor": first["next_cursor"]},
            headers=bearer(officer),
        )
        assert [item["subjects"] for item in second.json()["items"]] == [["cleo"]]
        assert second.json()["next_cursor"] is None
        window = await client.get(
            "/v1/access-log",
            params={"from": items[2]["accessed_at"], "to": "2999-01-01T00:00:00Z"},
            headers=bearer(officer),
        )
        assert len(window.json()["items"]) >= 2
        bad = await client.get(
            "/v1/access-log", params={"from": "yesterday"}, headers=bearer(officer)
        )
        assert_error(bad, 400, "invalid-parameter")
        assert (await client.get("/v1/access-log", headers=bearer(analyst))).status_code == 403


async def test_an_erased_subject_leaves_no_access_row(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as connection:
        rows = LedgerRows(connection)
        await rows.erasure("dora", "e-9", "2026-01-05T00:00:00Z")
    officer = await issue_token(pool, "privacy-officer")
    async with client_of(create_app(settings, pool=pool, policy=POLICY)) as client:
        gone = await client.get("/v1/subjects/dora/events", headers=bearer(officer))
        assert gone.status_code == 410
    assert await pool.fetchval("SELECT count(*) FROM access_log") == 0


# -- failed sign-ins ---------------------------------------------------------------


async def test_failed_sign_ins_are_counted_and_throttled_per_address(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    operator = await issue_token(pool, "operator")
    app = create_app(settings.with_(auth_failures_per_minute=3), pool=pool, policy=POLICY)
    async with client_of(app) as client:
        for _ in range(3):
            refused = await client.get("/v1/stats", headers=bearer("clt_guess"))
            assert refused.status_code == 401
            assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        throttled = await client.get("/v1/stats", headers=bearer(operator))
        assert_error(throttled, 429, "too-many-failed-sign-ins")
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        # Another address is not held back (httpx's ASGI transport names the client).
        other = httpx.ASGITransport(app, client=("10.1.2.3", 5000))
        async with httpx.AsyncClient(transport=other, base_url="http://api") as elsewhere:
            metrics = await elsewhere.get("/metrics", headers=bearer(operator))
    assert metrics.status_code == 200
    assert 'consent_ledger_auth_failures_total{reason="unknown-token"} 3' in metrics.text
    assert "consent_ledger_auth_throttled_total 1" in metrics.text


async def test_the_host_allow_list(settings: Settings, pool: asyncpg.Pool) -> None:
    token = await issue_token(pool, "operator")
    app = create_app(
        settings.with_(allowed_hosts="ledger.example.org, api"), pool=pool, policy=POLICY
    )
    async with client_of(app) as client:
        assert (await client.get("/v1/stats", headers=bearer(token))).status_code == 200
        rebound = await client.get(
            "/v1/stats", headers=bearer(token) | {"Host": "attacker.example:8080"}
        )
        assert_error(rebound, 400, "host-not-allowed")
        named = await client.get("/healthz", headers={"Host": "ledger.example.org:8080"})
        assert named.status_code == 200


async def test_over_a_real_socket(settings: Settings, database_url: str) -> None:
    """uvicorn on a port, its own pool: the same answers as through the ASGI transport."""
    token = await issue_token(database_url, "admin")
    port = find_free_port()
    server = build_server(settings.with_(database_url=database_url, api_port=port), policy=POLICY)
    serving = asyncio.create_task(server.serve())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = asyncio.get_running_loop().time() + 20
            while not server.started:
                assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start"
                assert not serving.done(), serving
                await asyncio.sleep(0.05)
            anonymous = await client.get("/v1/violations")
            assert_error(anonymous, 401, "unauthenticated")
            assert anonymous.headers["www-authenticate"] == 'Bearer realm="consent-ledger"'
            assert (await client.get("/healthz")).status_code == 200
            listed = await client.get("/v1/tokens", headers=bearer(token))
            assert listed.status_code == 200, listed.text
            issued = await client.post(
                "/v1/tokens",
                json={"name": "bi", "roles": ["analyst"], "expires_in_days": 7},
                headers=bearer(token),
            )
            assert issued.status_code == 201, issued.text
            analyst = issued.json()["token"]
            assert (await client.get("/v1/violations", headers=bearer(analyst))).status_code == 200
            assert (await client.delete("/v1/tokens/bi", headers=bearer(token))).status_code == 204
            assert (await client.get("/v1/violations", headers=bearer(analyst))).status_code == 401
    finally:
        server.should_exit = True
        await serving


def test_settings_for_jwts_need_issuer_and_audience(settings: Settings) -> None:
    from consent_ledger.settings import SettingsError

    with pytest.raises(SettingsError, match="LEDGER_OIDC_AUDIENCE"):
        create_app(settings.with_(oidc_audience=None), policy=POLICY)
    with pytest.raises(SettingsError, match="LEDGER_OIDC_ALGORITHMS"):
        create_app(settings.with_(oidc_algorithms="HS256"), policy=POLICY)


async def test_openapi_names_the_refusals_of_every_route_that_needs_a_token(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    schema = create_app(settings, pool=pool, policy=POLICY).openapi()
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            responses = set(operation["responses"])
            if path in ("/healthz", "/readyz"):
                assert not responses & {"401", "403", "429"}, path
            else:
                assert {"401", "403", "429"} <= responses, path


@pytest.mark.parametrize(
    "path",
    ["/v1/subjects/anna%00/consents", "/v1/violations?subject=a%00b", "/v1/rejected?cursor=%00"],
)
async def test_a_nul_without_a_token_is_401_before_it_is_400(
    settings: Settings, pool: asyncpg.Pool, path: str
) -> None:
    """The parameter checks run once the caller is known: to a stranger, nothing
    under /v1 answers but 401, a malformed request included."""
    token = await issue_token(pool, "privacy-officer")
    async with client_of(create_app(settings, pool=pool, policy=POLICY)) as client:
        stranger = await client.get(path)
        known = await client.get(path, headers=bearer(token))
    assert_error(stranger, 401, "unauthenticated")
    assert_error(known, 400, "invalid-parameter")
