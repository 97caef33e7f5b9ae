"""JWTs of an identity provider served by a real local HTTP server: discovery,
the JWKS fetched and cached, a rotated key picked up, and every way a token is
refused (wrong audience or issuer, expired, not yet valid, alg none, a key the
JWKS does not list)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from consent_ledger.api.oidc import IdentityProviderUnavailable, InvalidCredentials, OidcVerifier
from consent_ledger.core.roles import Role
from tests.identity_provider import AUDIENCE, IdentityProvider, unsigned_token

pytestmark = pytest.mark.integration


@pytest.fixture
def provider() -> Iterator[IdentityProvider]:
    with IdentityProvider().serving() as served:
        yield served


def verifier(provider: IdentityProvider, **options: float) -> OidcVerifier:
    return OidcVerifier(issuer=provider.issuer, audience=AUDIENCE, **options)  # type: ignore[arg-type]


async def test_a_valid_token_names_its_caller_and_roles_and_the_keys_are_cached(
    provider: IdentityProvider,
) -> None:
    check = verifier(provider)
    caller = await check.caller(
        provider.token(roles=["analyst", "wiki-editor"], ledger_sources=["urn:system:crm"])
    )
    assert caller.name == "oidc:alice@example.org"
    assert caller.roles == {Role.ANALYST}  # roles of other applications are ignored
    assert caller.sources == {"urn:system:crm"}
    assert caller.kind == "oidc"
    for _ in range(3):
        await check.caller(provider.token(roles=["auditor"]))
    assert provider.jwks_fetches == 1


async def test_a_rotated_key_is_fetched_when_a_token_names_it(provider: IdentityProvider) -> None:
    check = verifier(provider, cooldown_s=0)
    await check.caller(provider.token(roles=["analyst"]))
    provider.rotate()
    caller = await check.caller(provider.token(roles=["operator"]))
    assert caller.roles == {Role.OPERATOR}
    assert provider.jwks_fetches == 2


async def test_roles_may_come_from_a_nested_claim(provider: IdentityProvider) -> None:
    check = OidcVerifier(
        issuer=provider.issuer, audience=AUDIENCE, roles_claim="realm_access.roles"
    )
    token = provider.token(roles=[], realm_access={"roles": ["privacy-officer"]})
    assert (await check.caller(token)).roles == {Role.PRIVACY_OFFICER}


@pytest.mark.parametrize(
    ("reason", "claims"),
    [
        ("wrong-audience", {"audience": "another-api"}),
        ("wrong-issuer", {"issuer": "https://evil.example.org/realm"}),
        ("token-expired", {"expires_in": -120}),
        ("token-not-yet-valid", {"not_before": 600}),
    ],
)
async def test_refused_claims(
    provider: IdentityProvider, reason: str, claims: dict[str, object]
) -> None:
    with pytest.raises(InvalidCredentials) as refused:
        await verifier(provider).caller(provider.token(roles=["admin"], **claims))  # type: ignore[arg-type]
    assert refused.value.reason == reason


async def test_alg_none_is_refused_before_anything_is_fetched(provider: IdentityProvider) -> None:
    token = unsigned_token(
        iss=provider.issuer, aud=AUDIENCE, sub="mallory", exp=2**31, roles=["admin"]
    )
    with pytest.raises(InvalidCredentials) as refused:
        await verifier(provider).caller(token)
    assert refused.value.reason == "algorithm-not-allowed"
    assert provider.jwks_fetches == 0


async def test_a_key_the_jwks_does_not_list_is_refused(provider: IdentityProvider) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    check = verifier(provider)
    with pytest.raises(InvalidCredentials) as unknown_kid:
        await check.caller(provider.token(roles=["admin"], kid="not-listed", key=stranger))
    assert unknown_kid.value.reason == "unknown-key"
    # A listed key id with another key's signature: the signature does not verify.
    with pytest.raises(InvalidCredentials) as forged:
        await check.caller(provider.token(roles=["admin"], kid=provider.current_kid, key=stranger))
    assert forged.value.reason == "bad-signature"


async def test_garbage_is_not_a_jwt(provider: IdentityProvider) -> None:
    with pytest.raises(InvalidCredentials) as refused:
        await verifier(provider).caller("garbage")
    assert refused.value.reason == "malformed-token"


async def test_an_unreachable_issuer_is_unavailable_not_a_failed_sign_in() -> None:
    provider = IdentityProvider()
    provider.close()  # nothing listens at the issuer's address any more
    with pytest.raises(IdentityProviderUnavailable):
        await verifier(provider).caller(provider.token(roles=["admin"]))
