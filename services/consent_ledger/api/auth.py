"""Who is calling, and may they: bearer tokens, roles per route, the access log.

Every route declares what it needs with :func:`requires` (a
:class:`~consent_ledger.core.roles.Permission`, which §7's role table maps to
roles) or :func:`public` (``/healthz``, ``/readyz``): a route that declares
neither is reachable by nobody, because :func:`undeclared_routes` lists it and
:func:`create_app <consent_ledger.api.app.create_app>` refuses to build an app
with one (a test enumerates the routes too).

The requirement runs before the route's own parameters are checked, so a
caller without a valid token learns nothing but 401, and one without the role
nothing but 403. Both are JSON errors with ``WWW-Authenticate`` (RFC 6750).
Failed sign-ins are counted by reason (``/metrics``) and, per client address,
throttled: past ``LEDGER_AUTH_FAILURES_PER_MINUTE`` failures in a minute every
request from that address that carries a token answers 429 until the minute
has passed, the right token included, so that guessing gains nothing.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

import asyncpg
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from consent_ledger.api.errors import ApiError, error_response, refuse_nul
from consent_ledger.api.metrics import Exposition
from consent_ledger.api.models import ErrorResponse
from consent_ledger.api.oidc import (
    IdentityProviderUnavailable,
    InvalidCredentials,
    OidcVerifier,
    allowed_algorithms,
)
from consent_ledger.core.roles import Caller, Permission, Role, roles_granting
from consent_ledger.settings import Settings, SettingsError
from consent_ledger.store.access_log import AccessLog
from consent_ledger.store.tokens import TokenStore, is_opaque_token

log = structlog.get_logger(__name__)

REALM: Final = "consent-ledger"
WRITE_MEDIA_TYPES: Final = frozenset(
    {"application/json", "application/cloudevents+json", "application/cloudevents-batch+json"}
)
_WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_MAX_PURPOSE_CHARS: Final = 1024
_THROTTLE_WINDOW_S: Final = 60.0
_THROTTLE_ADDRESSES: Final = 10_000  # addresses remembered at most; the oldest are forgotten

# What every route that needs a token may answer besides its own statuses.
_REFUSALS: Final[dict[int | str, str]] = {
    401: "No valid bearer token (`WWW-Authenticate` says why)",
    403: "The token's roles may not do this",
    429: "Too many failed sign-ins from this address; retry after `Retry-After` seconds",
}

# The framework's own pages: the OpenAPI document and its viewers carry no data.
DOCUMENTATION_PATHS: Final = frozenset(
    {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)


class SignInThrottle:
    """Failed sign-ins per client address in a sliding window of one minute."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        now = self._clock()
        while failures and failures[0] <= now - _THROTTLE_WINDOW_S:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        if len(failures) < self.limit:
            return None
        return failures[0] + _THROTTLE_WINDOW_S - now

    def failed(self, address: str) -> None:
        failures = self._failures.pop(address, None) or deque()
        failures.append(self._clock())
        while len(failures) > self.limit:  # older ones no longer decide anything
            failures.popleft()
        self._failures[address] = failures
        while len(self._failures) > _THROTTLE_ADDRESSES:
            self._failures.popitem(last=False)


@dataclass(slots=True)
class Grant:
    """A request let through: who called, and the role of theirs that allowed it."""

    caller: Caller
    role: Role
    permission: Permission


@dataclass(slots=True)
class Authenticator:
    """What the requirements share: the token store, the identity provider, the
    throttle, the counts for ``/metrics``, and the access log. The stores are
    attached once the app has a database pool (in its lifespan)."""

    settings: Settings
    oidc: OidcVerifier | None
    throttle: SignInThrottle
    allowed_hosts: frozenset[str] = frozenset()
    failures: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    tokens: TokenStore | None = None
    access_log: AccessLog | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        oidc = None
        if settings.oidc_issuer or settings.oidc_audience:
            if not (settings.oidc_issuer and settings.oidc_audience):
                raise SettingsError(
                    "set both LEDGER_OIDC_ISSUER and LEDGER_OIDC_AUDIENCE to accept JWTs"
                )
            try:
                algorithms = allowed_algorithms(settings.oidc_algorithms)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
            oidc = OidcVerifier(
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                roles_claim=settings.oidc_roles_claim,
                sources_claim=settings.oidc_sources_claim,
                algorithms=algorithms,
                jwks_url=settings.oidc_jwks_url,
                cache_s=settings.oidc_jwks_cache_s,
                cooldown_s=settings.oidc_jwks_cooldown_s,
            )
        hosts = frozenset(
            host.strip().lower()
            for host in (settings.allowed_hosts or "").split(",")
            if host.strip()
        )
        return cls(
            settings=settings,
            oidc=oidc,
            throttle=SignInThrottle(settings.auth_failures_per_minute),
            allowed_hosts=hosts,
        )

    def attach(self, pool: asyncpg.Pool | None) -> None:
        self.tokens = TokenStore(pool) if pool is not None else None
        self.access_log = AccessLog(pool) if pool is not None else None

    async def identify(self, token: str) -> Caller:
        if is_opaque_token(token):
            if self.tokens is None:
                raise ApiError(503, "not-started", "the API has no database connection yet")
            caller = await self.tokens.caller(token)
            if caller is None:
                raise InvalidCredentials(
                    "unknown-token", "the token is unknown, revoked or expired"
                )
            return caller
        if self.oidc is None:
            raise InvalidCredentials("unknown-token", "the token is unknown, revoked or expired")
        return await self.oidc.caller(token)

    def metric_families(self, out: Exposition) -> None:
        out.family(
            "consent_ledger_auth_failures_total",
            "counter",
            "Requests to this API process refused 401 (no valid bearer token), by reason.",
            (({"reason": reason}, count) for reason, count in sorted(self.failures.items())),
        )
        out.family(
            "consent_ledger_auth_throttled_total",
            "counter",
            "Requests refused 429 because their address failed to sign in too often.",
            [({}, self.throttled)],
        )


def authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


# Declared through FastAPI's security scheme so that /openapi.json names it and
# /docs offers to sign in; not auto_error, so that a missing token is our JSON 401.
BEARER: Final = HTTPBearer(
    scheme_name="BearerToken",
    description="A token from `consent-ledger token create` (or `POST /v1/tokens`), "
    "or a JWT of the organisation's identity provider",
    auto_error=False,
)


class Declaration:
    """What a route declares about its callers; ``permission`` None: anyone."""

    permission: Permission | None = None

    @property
    def roles(self) -> tuple[Role, ...]:
        return roles_granting(self.permission) if self.permission is not None else ()


class Requirement(Declaration):
    """A route's declaration of what it needs: a :class:`Permission`.

    Used as a FastAPI dependency; on success the request's :class:`Grant` is in
    ``request.state.grant`` (see :func:`granted`)."""

    def __init__(
        self, permission: Permission, media_types: frozenset[str] = WRITE_MEDIA_TYPES
    ) -> None:
        self.permission: Permission = permission
        self.media_types = media_types  # what a write may send (a policy: YAML too)

    def __repr__(self) -> str:
        return f"Requirement({self.permission})"

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        auth = authenticator(request)
        caller = await _authenticate(auth, request, credentials)
        role = caller.granting_role(self.permission)
        if role is None:
            may = ", ".join(role.value for role in self.roles) or "no role"
            raise ApiError(
                403,
                "forbidden",
                f"{self.permission.value} needs one of the roles {may}; "
                f"this token holds {', '.join(sorted(caller.roles)) or 'none'}",
                details={"required_roles": [role.value for role in self.roles]},
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
            )
        if request.method in _WRITE_METHODS:
            _refuse_other_media_types(request, self.media_types)
        refuse_nul(request)
        request.state.grant = Grant(caller, role, self.permission)


class Public(Declaration):
    """A route's declaration that anyone may call it: liveness and readiness only."""

    def __repr__(self) -> str:
        return "Public()"

    async def __call__(self) -> None:
        return


def requires(permission: Permission, media_types: Iterable[str] | None = None) -> Any:
    """Declare, in a route's ``dependencies``, the permission it needs (and, for a
    write whose body may be other than JSON, the media types it takes: none a web
    page can send across sites without a CORS preflight)."""
    accepted = frozenset(media_types) if media_types is not None else WRITE_MEDIA_TYPES
    cross_site = accepted & {
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    }
    if cross_site:
        raise ValueError(f"a cross-site form could send {sorted(cross_site)}")
    return Depends(Requirement(permission, accepted))


def public() -> Any:
    """Declare a route reachable without a token (liveness and readiness only)."""
    return Depends(Public())


def granted(request: Request) -> Grant:
    """The :class:`Grant` of a route that declared a permission (for handlers that
    need the caller: publishing, personal-data reads)."""
    grant: Grant | None = getattr(request.state, "grant", None)
    if grant is None:  # only a route declared public() asks for it: a bug
        raise ApiError(500, "internal-error", "this route declares no permission")
    return grant


def route_requirement(route: BaseRoute) -> Declaration | None:
    """What a route declared about its callers, or None."""
    if not isinstance(route, APIRoute):
        return None
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, Declaration):
            return dependency.call
    return None


def app_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, also those of included routers and mounts (recent FastAPI
    keeps an included router whole, as one route holding ``original_router``)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
            continue
        included = getattr(route, "original_router", None)
        nested = included.routes if included is not None else getattr(route, "routes", None)
        if nested is None:
            yield route
        else:
            yield from app_routes(nested)


def undeclared_routes(routes: Iterable[BaseRoute]) -> list[str]:
    """Routes that declare neither a permission nor public(), the framework's
    documentation pages aside: each would be reachable by nobody."""
    missing = []
    for route in app_routes(routes):
        path = getattr(route, "path", "")
        if path in DOCUMENTATION_PATHS and not isinstance(route, APIRoute):
            continue
        if route_requirement(route) is None:
            methods = ",".join(sorted(getattr(route, "methods", None) or ()))
            missing.append(f"{methods} {path}".strip())
    return missing


async def record_access(request: Request, subjects: Iterable[str], *, always: bool = False) -> None:
    """Append the access log's row for an answer that carries the personal data of
    ``subjects``, before the answer leaves: no row, no answer. Without subjects no
    row is written, unless ``always`` (rejected records: raw bytes may hold
    personal data of a subject nobody named)."""
    named = sorted(set(subjects))
    if not named and not always:
        return
    grant = granted(request)
    access_log = authenticator(request).access_log
    if access_log is None:
        raise ApiError(503, "not-started", "the API has no database connection yet")
    route = request.scope.get("route")
    template = getattr(route, "path_format", None) or request.url.path
    purpose = request.headers.get("x-purpose")
    await access_log.record(
        token_name=grant.caller.name,
        role=grant.role.value,
        endpoint=f"{request.method} {template}",
        subjects=named,
        purpose=purpose[:_MAX_PURPOSE_CHARS] if purpose is not None else None,
    )


async def _authenticate(
    auth: Authenticator, request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Caller:
    address = request.client.host if request.client is not None else "unknown"
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        auth.failures["missing-token"] += 1
        raise ApiError(
            401,
            "unauthenticated",
            "send Authorization: Bearer TOKEN (a token from `consent-ledger token create`, "
            "or a JWT of the identity provider)",
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
        )
    wait = auth.throttle.retry_after(address)
    if wait is not None:
        auth.throttled += 1
        seconds = max(1, int(wait + 0.999))
        raise ApiError(
            429,
            "too-many-failed-sign-ins",
            f"too many failed sign-ins from this address; retry in {seconds} s",
            details={"retry_after_s": seconds},
            headers={"Retry-After": str(seconds)},
        )
    try:
        return await auth.identify(token)
    except InvalidCredentials as exc:
        auth.failures[exc.reason] += 1
        auth.throttle.failed(address)
        log.info("sign-in failed", reason=exc.reason, client=address, path=request.url.path)
        raise ApiError(
            401,
            "invalid-token",
            exc.message,
            details={"reason": exc.reason},
            headers={
                "WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token", '
                f'error_description="{exc.reason}"'
            },
        ) from None
    except IdentityProviderUnavailable as exc:
        raise ApiError(503, "identity-provider-unavailable", f"{exc}; retry later") from None


def _refuse_other_media_types(request: Request, accepted: frozenset[str]) -> None:
    """Writes take JSON only: a browser cannot send these types across sites
    without a CORS preflight, which this API never grants (CSRF)."""
    declared = request.headers.get("content-type", "")
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type not in accepted:
        raise ApiError(
            415,
            "unsupported-media-type",
            f"Content-Type {declared or '(none)'!r} is not accepted here; send "
            + ", ".join(sorted(accepted)),
            details={"accepted": sorted(accepted)},
        )


class AllowedHostsMiddleware:
    """Answers 400 to a request whose Host is not in ``LEDGER_ALLOWED_HOSTS``
    (DNS rebinding: a name the attacker controls pointed at this address)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self._app = app
        self._hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._hosts:
            await self._app(scope, receive, send)
            return
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1").lower()
                break
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in self._hosts and host not in self._hosts:
            response = error_response(
                400, "host-not-allowed", f"Host {host or '(none)'!r} is not served here"
            )
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)


def install_auth(app: FastAPI, auth: Authenticator) -> None:
    """Wire ``auth`` into ``app`` and refuse an app with a route that declares
    nobody: deny by default, checked when the app is built, not when it is hit."""
    missing = undeclared_routes(app.routes)
    if missing:
        raise RuntimeError(f"routes without a declared permission: {', '.join(missing)}")
    for route in app_routes(app.routes):
        declared = route_requirement(route)
        if isinstance(route, APIRoute) and isinstance(declared, Requirement):
            refusals = dict(_REFUSALS)
            if (route.methods or set()) & _WRITE_METHODS:
                refusals[415] = "The body is none of " + ", ".join(sorted(declared.media_types))
            for status, description in refusals.items():
                route.responses.setdefault(
                    status, {"model": ErrorResponse, "description": description}
                )
    app.state.auth = auth
    if auth.allowed_hosts:
        app.add_middleware(AllowedHostsMiddleware, hosts=auth.allowed_hosts)
