"""The policy's versions (CONTRACT §9): publish one to the running service, list them."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from consent_ledger.api.auth import granted, requires
from consent_ledger.api.errors import ApiError
from consent_ledger.api.routes.common import ERRORS, Context
from consent_ledger.core.policy import PolicyError, PolicyVersions, parse_policy
from consent_ledger.core.roles import Permission as P
from consent_ledger.core.timestamps import InvalidTimestamp, format_micros, parse_instant
from consent_ledger.core.whatif import with_draft

router = APIRouter()

# A policy is a few kilobytes; a body far larger is a mistake, not a policy.
MAX_POLICY_BYTES = 262_144
POLICY_MEDIA_TYPES = ("application/json", "application/yaml", "application/x-yaml", "text/yaml")
# The body is read as text (YAML, of which JSON is a part) and checked by the
# policy loader, so the document declares it rather than FastAPI parsing it.
POLICY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A policy in the file format of CONTRACT §3, as YAML or JSON",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


class PolicyVersionItem(BaseModel):
    version: str
    effective_from: str | None = Field(description="RFC 3339; null: in force since always")
    origin: str = Field(description="`configured` (LEDGER_POLICY) or `published`")
    revision: int | None = Field(description="Publication order; null for configured versions")
    sha256: str | None = Field(description="SHA-256 of the published text (hex)")
    publisher: str | None
    published_at: str | None
    ledger_event_id: str | None = Field(
        description="The entry of the ledger's policy log that records the hash"
    )


class PolicyVersionList(BaseModel):
    items: list[PolicyVersionItem]


def publisher_name(request: Request) -> str:
    """Who publishes: the name of the caller's token (or the identity provider's
    subject), as the access log names callers."""
    return granted(request).caller.name


Publisher = Annotated[str, Depends(publisher_name)]


@router.get(
    "/v1/policy/versions",
    dependencies=[requires(P.READ_POLICY)],
    summary="The policy's versions: configured and published, with hash, publisher, time",
    responses=ERRORS,
)
async def policy_versions(context: Context) -> PolicyVersionList:
    async with context.ledger().snapshot() as view:
        published = await view.policy_versions()
    published_names = {item.version for item in published}
    items = [
        PolicyVersionItem(
            version=policy.version,
            effective_from=None
            if policy.effective_from is None
            else format_micros(policy.effective_from),
            origin="configured",
            revision=None,
            sha256=None,
            publisher=None,
            published_at=None,
            ledger_event_id=None,
        )
        for policy in context.policy.versions
        if policy.version not in published_names
    ]
    items.extend(PolicyVersionItem(origin="published", **item.document()) for item in published)
    return PolicyVersionList(items=items)


async def _policy_text(request: Request) -> str:
    """The request's body as a policy's text: JSON or YAML, at most 262,144 bytes."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in POLICY_MEDIA_TYPES:
        raise ApiError(
            415, "unsupported-media-type", f"send the policy as {' or '.join(POLICY_MEDIA_TYPES)}"
        )
    body = await request.body()
    if len(body) > MAX_POLICY_BYTES:
        raise ApiError(413, "too-large", f"a policy is at most {MAX_POLICY_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "invalid-policy", "the policy is not UTF-8") from None


@router.post(
    "/v1/policy/whatif",
    dependencies=[requires(P.READ_POLICY, POLICY_MEDIA_TYPES)],
    openapi_extra=POLICY_BODY,
    summary="What a draft policy would change over the recorded history (nothing is written)",
    description=(
        "Body: the draft as YAML (`application/yaml`) or JSON. A draft with `effective_from` "
        "(in the body, or the query parameter, which wins) joins the versions in force from "
        "then on; one without replaces the policy. The answer lists the violations that "
        "would open and those that would close, with counts by rule, clause and recipient "
        "and examples (CONTRACT §9)."
    ),
    responses=ERRORS
    | {
        413: {"description": "The body is over 262,144 bytes"},
        415: {"description": "Not JSON or YAML"},
        422: {"description": "Not a valid policy"},
    },
)
async def policy_whatif(
    request: Request,
    context: Context,
    effective_from: Annotated[
        str | None, Query(description="RFC 3339 with an offset: when the draft would start")
    ] = None,
) -> dict[str, Any]:
    text = await _policy_text(request)
    try:
        draft = parse_policy(text, "<request body>")
    except PolicyError as exc:
        raise ApiError(422, "invalid-policy", str(exc)) from None
    if effective_from is not None:
        try:
            draft = dataclasses.replace(draft, effective_from=parse_instant(effective_from))
        except (InvalidTimestamp, ValueError):
            raise ApiError(
                400, "invalid-parameter", "effective_from: not RFC 3339 with an offset",
                details={"parameter": "effective_from"},
            ) from None  # fmt: skip
    answer = await context.ledger().whatif(
        context.policy, lambda current: with_draft(current, PolicyVersions((draft,)), folder=False),
        context.keyring,
    )  # fmt: skip
    return answer.document()


@router.post(
    "/v1/policy/versions",
    dependencies=[requires(P.PUBLISH_POLICY, POLICY_MEDIA_TYPES)],
    openapi_extra=POLICY_BODY,
    summary="Publish a policy version (YAML, or the same as JSON)",
    status_code=201,
    responses=ERRORS
    | {
        413: {"description": "The body is over 262,144 bytes"},
        415: {"description": "Not JSON or YAML"},
        422: {"description": "Not a valid policy, or it clashes with a version in force"},
    },
)
async def publish_policy_version(
    request: Request, context: Context, publisher: Publisher
) -> PolicyVersionItem:
    text = await _policy_text(request)
    try:
        published = await context.ledger().publish_policy(
            context.policy, text, publisher, "<request body>"
        )
    except PolicyError as exc:
        raise ApiError(422, "invalid-policy", str(exc)) from None
    return PolicyVersionItem(origin="published", **published.document())
