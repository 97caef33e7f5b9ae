"""JWTs from the organisation's identity provider (OpenID Connect), checked with PyJWT.

Accepted only when ``LEDGER_OIDC_ISSUER`` and ``LEDGER_OIDC_AUDIENCE`` are set
(CONTRACT §7). The issuer's keys come from its JWKS, found through its
discovery document (``LEDGER_OIDC_JWKS_URL`` names it directly instead) and
cached by :class:`jwt.PyJWKClient`: the set is kept for
``LEDGER_OIDC_JWKS_CACHE_S``, and a token signed with a key id the cached set
does not list fetches the set again (at most once per
``LEDGER_OIDC_JWKS_COOLDOWN_S``), so an issuer's key rotation is picked up
without a restart, and a flood of made-up key ids is not a flood of fetches.

The token's ``alg`` must be in the allow-list before anything is fetched;
``none`` and the HMAC family are never allowed (a public key used as an HMAC
secret would let anyone sign). ``exp``, ``iss`` and ``aud`` are required,
``nbf`` checked when present.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

import jwt
import structlog

from consent_ledger.core.roles import Caller, known_roles

log = structlog.get_logger(__name__)

ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS: Final = ("RS256", "PS256", "ES256", "EdDSA")
_FETCH_TIMEOUT_S: Final = 10.0
_LEEWAY_S: Final = 30  # clock skew between the identity provider and this host


class InvalidCredentials(Exception):
    """The bearer token does not identify a caller; ``reason`` is a stable code
    (a metrics label and the ``error_description`` of ``WWW-Authenticate``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class IdentityProviderUnavailable(Exception):
    """The issuer's discovery document or key set cannot be fetched: not the
    caller's fault (503), and not counted as a failed sign-in."""


def allowed_algorithms(configured: str | None) -> tuple[str, ...]:
    """The allow-list from ``LEDGER_OIDC_ALGORITHMS`` (comma-separated), refusing
    any algorithm that is not an asymmetric signature."""
    if not configured:
        return DEFAULT_ALGORITHMS
    names = tuple(name.strip() for name in configured.split(",") if name.strip())
    refused = [name for name in names if name not in ASYMMETRIC_ALGORITHMS]
    if refused or not names:
        raise ValueError(
            f"LEDGER_OIDC_ALGORITHMS: {', '.join(refused) or 'empty'} not allowed; "
            f"choose from {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}"
        )
    return names


class OidcVerifier:
    """Checks a JWT and says who it names: roles from ``roles_claim`` (a list, or
    a space-separated string; a dotted path reaches into nested claims, e.g.
    ``realm_access.roles``), a publisher's sources from ``sources_claim``."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        roles_claim: str = "roles",
        sources_claim: str = "ledger_sources",
        algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
        jwks_url: str | None = None,
        cache_s: float = 300.0,
        cooldown_s: float = 30.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.roles_claim = roles_claim
        self.sources_claim = sources_claim
        self.algorithms = algorithms
        self._jwks_url = jwks_url
        self._cache_s = cache_s
        self._cooldown_s = cooldown_s
        self._client: jwt.PyJWKClient | None = None
        self._client_lock = asyncio.Lock()

    async def caller(self, token: str) -> Caller:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise InvalidCredentials("malformed-token", "the bearer token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise InvalidCredentials(
                "algorithm-not-allowed",
                f"the token's algorithm {algorithm!r} is not allowed here",
            )
        client = await self._jwks_client()
        try:
            # PyJWKClient fetches with urllib, which blocks: off the event loop.
            signing_key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("identity provider keys unavailable", error=str(exc))
            raise IdentityProviderUnavailable(
                f"the issuer's keys cannot be fetched: {exc}"
            ) from exc
        except (jwt.PyJWKClientError, jwt.DecodeError):
            raise InvalidCredentials(
                "unknown-key", "the token is signed with a key the issuer does not publish"
            ) from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidCredentials("token-expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidCredentials("token-not-yet-valid", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise InvalidCredentials(
                "wrong-audience", "the token is meant for another audience"
            ) from None
        except jwt.InvalidIssuerError:
            raise InvalidCredentials(
                "wrong-issuer", "the token comes from another issuer"
            ) from None
        except jwt.InvalidSignatureError:
            raise InvalidCredentials(
                "bad-signature", "the token's signature does not verify"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise InvalidCredentials("invalid-token", f"the token is not valid: {exc}") from None
        return Caller(
            name=f"oidc:{claims['sub']}",
            roles=known_roles(_strings(_claim(claims, self.roles_claim))),
            sources=frozenset(_strings(_claim(claims, self.sources_claim))),
            kind="oidc",
        )

    async def _jwks_client(self) -> jwt.PyJWKClient:
        async with self._client_lock:
            if self._client is None:
                url = self._jwks_url
                if url is None:
                    url = await asyncio.to_thread(self._discover_jwks_url)
                self._client = jwt.PyJWKClient(
                    url,
                    cache_jwk_set=True,
                    lifespan=self._cache_s,
                    timeout=_FETCH_TIMEOUT_S,
                    cooldown_duration=self._cooldown_s,
                )
            return self._client

    def _discover_jwks_url(self) -> str:
        """``jwks_uri`` of the issuer's OpenID Connect discovery document, which
        must name the same issuer (OpenID Connect Discovery §4.3)."""
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        if not url.startswith(("https://", "http://")):
            raise IdentityProviderUnavailable(f"LEDGER_OIDC_ISSUER is not an http(s) URL: {url}")
        try:
            with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as answer:  # noqa: S310  # scheme checked above
                document = json.loads(answer.read())
        except (OSError, ValueError) as exc:
            raise IdentityProviderUnavailable(f"cannot read {url}: {exc}") from exc
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise IdentityProviderUnavailable(f"{url} names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise IdentityProviderUnavailable(f"{url} has no jwks_uri")
        return jwks_uri


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []
