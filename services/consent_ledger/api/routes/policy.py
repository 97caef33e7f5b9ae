"""The policy (CONTRACT §8, §9): the version in force with its clauses in the
statement's words and their coverage; its versions, published to the running
service and listed; what a draft would change."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from consent_ledger.api.auth import granted, requires
from consent_ledger.api.errors import ApiError
from consent_ledger.api.routes.common import ERRORS, Context
from consent_ledger.core.coverage import ClauseCoverage, PolicyRule, clause_coverage, policy_rules
from consent_ledger.core.policy import Clause, Policy, PolicyError, PolicyVersions, parse_policy
from consent_ledger.core.roles import Permission as P
from consent_ledger.core.timestamps import InvalidTimestamp, format_micros, parse_instant
from consent_ledger.core.verdicts import SEVERITY, Severity
from consent_ledger.core.whatif import with_draft
from consent_ledger.integrity.entry import to_micros
from consent_ledger.store.policy_versions import versions_with

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


class ClauseRef(BaseModel):
    id: str
    title: str | None = Field(
        description="The statement's title for it, in English where the statement has one, "
        "else in its own language; null when the policy gives no words for the clause"
    )


class Breach(BaseModel):
    rule: str = Field(description="A rule of CONTRACT §4 this part of the policy can find broken")
    severity: Severity


class PolicyRuleItem(BaseModel):
    """A part of the policy that can find breaches, and the clause it enforces."""

    rule: str = Field(
        description="Its key in the policy file (`purposes.marketing`, `recipients.partner`, "
        "`visitors.require_rights_notice`), or for the checks every policy has, "
        "`erasure`, `purposes` (a purpose it does not name) or `recipients` (a recipient "
        "kind it does not name)"
    )
    description: str
    clause: ClauseRef
    breaches: list[Breach]
    severity: Severity | None = Field(
        description="The gravest severity among its breaches; null when it finds none"
    )


class Translation(BaseModel):
    """A translation made for the policy: not the statement's words."""

    title: dict[str, str] = Field(description="Language tag -> translated title")
    text: dict[str, str] = Field(description="Language tag -> translated text")


class ClauseItem(BaseModel):
    """A clause of the privacy statement, its rules and its open violations."""

    id: str
    title: dict[str, str] | None = Field(
        description="Language tag -> the statement's own title; only the languages the "
        "statement has it in; null when the policy gives no words for the clause"
    )
    text: dict[str, str] | None = Field(
        description="Language tag -> the statement's own words (`[…]` marks words left out)"
    )
    display_title: str | None = Field(description="The title to show (see ClauseRef.title)")
    translation: Translation | None = Field(
        description="The policy's own translation into languages the statement lacks, if any"
    )
    rules: list[str] = Field(description="The rules (PolicyRuleItem.rule) that enforce it")
    enforced: bool = Field(description="False: no rule can find it broken")
    violations_open: int = Field(description="Violations open now that name this clause")


class PolicyDocument(BaseModel):
    """The policy in force now, rule by rule and clause by clause."""

    policy: str = Field(description="The policy's name")
    version: str
    effective_from: str | None = Field(description="RFC 3339; null: in force since always")
    origin: Literal["configured", "published"]
    sha256: str | None = Field(
        description="SHA-256 of the published text (hex); null if configured"
    )
    clauses: list[ClauseItem] = Field(
        description="The clauses whose words the policy gives, in its order, then those its "
        "rules name without words"
    )
    rules: list[PolicyRuleItem]
    unenforced: list[str] = Field(description="The ids of the clauses no rule enforces")
    violations_open: int = Field(description="All violations open now")
    violations_open_elsewhere: dict[str, int] = Field(
        description="Open violations per clause that the version in force does not name "
        "(judged under another version)"
    )


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


@router.get(
    "/v1/policy",
    dependencies=[requires(P.READ_POLICY)],
    summary="The policy in force: each rule with its clause in the statement's words, "
    "open violations per clause, and the clauses no rule enforces",
    responses=ERRORS,
)
async def policy_in_force(context: Context) -> PolicyDocument:
    async with context.ledger().snapshot() as view:
        published = await view.policy_versions()
        open_by_clause = await view.open_violations_by_clause()
    try:
        versions = versions_with(context.policy, published)
    except PolicyError as exc:  # LEDGER_POLICY changed since a publication: the worker stops too
        raise ApiError(500, "policy-versions-clash", str(exc)) from None
    policy = versions.in_force_at(to_micros(datetime.now(UTC)))
    # In one set, a configured and a published version never share a name.
    sha256 = next((item.sha256.hex() for item in published if item.version == policy.version), None)
    return policy_document(policy, sha256, open_by_clause)


def policy_document(
    policy: Policy, sha256: str | None, open_by_clause: dict[str, int]
) -> PolicyDocument:
    """``GET /v1/policy``'s answer for ``policy``, its SHA-256 if it was published,
    and the open violations per clause."""
    coverage = clause_coverage(policy)
    named = {item.id for item in coverage}
    return PolicyDocument(
        policy=policy.name,
        version=policy.version,
        effective_from=None
        if policy.effective_from is None
        else format_micros(policy.effective_from),
        origin="configured" if sha256 is None else "published",
        sha256=sha256,
        clauses=[_clause_item(item, open_by_clause.get(item.id, 0)) for item in coverage],
        rules=[_rule_item(rule, policy.clause_title(rule.clause)) for rule in policy_rules(policy)],
        unenforced=[item.id for item in coverage if not item.enforced],
        violations_open=sum(open_by_clause.values()),
        violations_open_elsewhere={
            clause: count for clause, count in sorted(open_by_clause.items()) if clause not in named
        },
    )


def _clause_item(coverage: ClauseCoverage, violations_open: int) -> ClauseItem:
    clause: Clause | None = coverage.clause
    translation = None
    if clause is not None and (clause.translated_title or clause.translated_text):
        translation = Translation(
            title=dict(clause.translated_title), text=dict(clause.translated_text)
        )
    return ClauseItem(
        id=coverage.id,
        title=None if clause is None else dict(clause.title),
        text=None if clause is None else dict(clause.text),
        display_title=None if clause is None else clause.display_title,
        translation=translation,
        rules=[rule.key for rule in coverage.rules],
        enforced=coverage.enforced,
        violations_open=violations_open,
    )


def _rule_item(rule: PolicyRule, clause_title: str | None) -> PolicyRuleItem:
    return PolicyRuleItem(
        rule=rule.key,
        description=rule.description,
        clause=ClauseRef(id=rule.clause, title=clause_title),
        breaches=[Breach(rule=str(breach), severity=SEVERITY[breach]) for breach in rule.breaches],
        severity=rule.severity,
    )


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
