"""The parts of sign-in that need no server: tokens, the throttle, the algorithm
allow-list, and the check that every route declares who may call it."""

from __future__ import annotations

import base64

import pytest
from fastapi import APIRouter, FastAPI

from consent_ledger.api.auth import (
    SignInThrottle,
    app_routes,
    public,
    requires,
    undeclared_routes,
)
from consent_ledger.api.oidc import DEFAULT_ALGORITHMS, allowed_algorithms
from consent_ledger.core.roles import Permission
from consent_ledger.store.tokens import TOKEN_PREFIX, is_opaque_token, new_token, token_digest

pytestmark = pytest.mark.unit


def test_a_token_holds_256_random_bits_and_is_told_from_a_jwt() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert is_opaque_token(token)
        random = token.removeprefix(TOKEN_PREFIX)
        assert len(base64.urlsafe_b64decode(random + "=")) == 32
        assert "." not in token  # never mistaken for a JWT
    assert not is_opaque_token("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")


def test_only_a_digest_is_kept() -> None:
    token = new_token()
    assert len(token_digest(token)) == 32
    assert token_digest(token) == token_digest(token)
    assert token.encode() not in token_digest(token)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_blocks_an_address_for_the_rest_of_its_minute() -> None:
    clock = Clock()
    throttle = SignInThrottle(3, clock)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
        clock.now += 1
    assert throttle.retry_after("10.0.0.1") == pytest.approx(57.0)
    assert throttle.retry_after("10.0.0.2") is None  # per address
    clock.now += 57
    assert throttle.retry_after("10.0.0.1") is None  # the first failure left the window


def test_the_throttle_forgets_the_oldest_addresses_first() -> None:
    throttle = SignInThrottle(1, Clock())
    for number in range(10_001):
        throttle.failed(f"address-{number}")
    assert throttle.retry_after("address-0") is None
    assert throttle.retry_after("address-10000") is not None


def test_algorithms_are_asymmetric_only() -> None:
    assert allowed_algorithms(None) == DEFAULT_ALGORITHMS
    assert allowed_algorithms("ES256, RS256") == ("ES256", "RS256")
    for refused in ("none", "HS256", "RS256,none", " , "):
        with pytest.raises(ValueError, match="LEDGER_OIDC_ALGORITHMS"):
            allowed_algorithms(refused)


def test_a_route_without_a_declaration_is_found() -> None:
    router = APIRouter()

    @router.get("/v1/declared", dependencies=[requires(Permission.READ_STATS)])
    async def declared() -> None: ...

    @router.get("/healthz", dependencies=[public()])
    async def health() -> None: ...

    @router.get("/v1/forgotten")
    async def forgotten() -> None: ...

    app = FastAPI()
    app.include_router(router)
    assert undeclared_routes(app.routes) == ["GET /v1/forgotten"]
    paths = {getattr(route, "path", "") for route in app_routes(app.routes)}
    assert {"/v1/declared", "/healthz", "/v1/forgotten", "/docs"} <= paths
