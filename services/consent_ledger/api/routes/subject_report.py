"""``GET /v1/subjects/{subject}/report``: the subject access report (CONTRACT §8),
as JSON or as an HTML document to send or print.

One snapshot reads what the other subject routes read (the erasure, consent
changes, violations, the subject key) and what only the report needs (the
disclosures, the sealed payloads that name recipients and notices, the latest
checkpoint); :mod:`consent_ledger.core.subject_report` decides what the report
says and :mod:`consent_ledger.core.subject_report_html` writes the document.
Unlike the consents and events routes, an erased subject is not a 410: the
report says that it was erased, and when, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from consent_ledger.api import models
from consent_ledger.api.auth import record_access, requires
from consent_ledger.api.models import ErrorResponse
from consent_ledger.api.routes.common import ERRORS, ApiContext, Context, subject_parameter
from consent_ledger.api.routes.subjects import open_event, unwrap_subject_key
from consent_ledger.core.consent_records import RecordedConsentChange
from consent_ledger.core.policy import PolicyError, PolicyVersions
from consent_ledger.core.roles import Permission as P
from consent_ledger.core.subject_report import (
    Clause,
    LatestCheckpoint,
    RecordedViolation,
    SubjectReport,
    ViolationEntry,
    erased_report,
    subject_report,
)
from consent_ledger.core.subject_report_html import REPORT_CSP, render_html
from consent_ledger.core.timestamps import format_micros, to_micros
from consent_ledger.core.vocabulary import VISITOR_REGISTERED
from consent_ledger.errors import UnknownCheckpoint
from consent_ledger.store.api_reads import LedgerView, Row
from consent_ledger.store.policy_versions import versions_with

log = structlog.get_logger(__name__)
router = APIRouter()

_LAST_INSTANT: Final = 2**63 - 1
_VIOLATIONS_PAGE: Final = 1_000
_HTML_HEADERS: Final = {
    "Content-Security-Policy": REPORT_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # personal data: no copy in a shared cache or the history
}


@router.get(
    "/v1/subjects/{subject:id}/report",
    dependencies=[requires(P.READ_SUBJECT_REPORT)],
    summary="The subject access report (GDPR Art. 15): consents, disclosures with their "
    "recipients, violations, erasure",
    description=(
        "Every consent the subject gave and withdrew (time, purpose and its clause, channel, "
        "notice), every disclosure of its data with the recipient named (kind, id, and the "
        "name the event gave), purpose, data categories, legal basis, time and verdict, its "
        "registrations as a visitor, the violations about it with rule, clause, severity and status, and the ledger's latest "
        "signed checkpoint to hold the report to later. An erased subject's report says "
        "only that it was erased, and when. `format=html`: the same as a self-contained "
        "document (no script, nothing loaded) that prints to PDF from a browser."
    ),
    response_model=models.SubjectReport,
    responses=ERRORS
    | {
        200: {
            "description": "The report; with `format=html` an HTML document",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        500: {"model": ErrorResponse},
    },
)
async def get_subject_report(
    subject: str,
    request: Request,
    context: Context,
    format: Annotated[
        Literal["json", "html"],
        Query(description="`html`: a document to send or print (text/html)"),
    ] = "json",
) -> Any:
    subject = subject_parameter(subject)
    report = await read_subject_report(context, subject)
    await record_access(request, [subject])
    if format == "html":
        return HTMLResponse(render_html(report), headers=_HTML_HEADERS)
    # Serialised once here: returned as a model, FastAPI would validate it again
    # against response_model (a third of a long report's time).
    return Response(
        report_model(report).model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def read_subject_report(context: ApiContext, subject: str) -> SubjectReport:
    """The report of ``subject`` as the ledger stands, from one snapshot."""
    generated_at = to_micros(datetime.now(UTC))
    async with context.ledger().snapshot() as view:
        checkpoint = await _latest_checkpoint(view)
        erasure = await view.erasure(subject)
        if erasure is not None:
            return erased_report(subject, erasure["erased_us"], generated_at, checkpoint)
        consents = await view.consent_changes_until(subject, _LAST_INSTANT)
        disclosures = await view.subject_disclosures(subject)
        violations = await _violations_of(view, subject)
        payloads = await view.subject_payloads(subject)
        wrapped = await view.subject_key(subject) if payloads else None
        published = await view.policy_versions()
    key = unwrap_subject_key(context.keyring, subject, wrapped)
    event_data = {
        entry.event_id: _data(open_event(key, subject, entry.event_id, entry.payload))
        for entry in payloads
    }
    return subject_report(
        subject,
        generated_at=generated_at,
        consents=map(_consent, consents),
        disclosures=disclosures,
        visits=[(e.event_id, e.instant) for e in payloads if e.type == VISITOR_REGISTERED],
        violations=map(_violation, violations),
        event_data=event_data,
        policies=_policies(context.policy, published),
        checkpoint=checkpoint,
    )


async def _latest_checkpoint(view: LedgerView) -> LatestCheckpoint | None:
    try:
        number, signed = await view.checkpoint(None)
    except UnknownCheckpoint:
        return None
    return LatestCheckpoint.from_document({"id": number, "checkpoint": signed.to_json_dict()})


async def _violations_of(view: LedgerView, subject: str) -> list[Row]:
    """Every violation about ``subject``, through the listing's own pages."""
    found: list[Row] = []
    after = 0
    while True:
        page = await view.violations(
            after_id=after, limit=_VIOLATIONS_PAGE, status=None, subject=subject, rule=None
        )
        found.extend(page)
        if len(page) < _VIOLATIONS_PAGE:
            return found
        after = page[-1]["id"]


def _policies(configured: PolicyVersions, published: Any) -> PolicyVersions:
    """The versions in force: configured and published, as the workers judge."""
    try:
        return versions_with(configured, published)
    except PolicyError as exc:  # the workers refuse such a set too; clauses of the configured
        log.error("published policy versions clash with the configured ones", error=str(exc))
        return configured


def _data(event: dict[str, Any] | None) -> dict[str, Any] | None:
    data = event.get("data") if event is not None else None
    return data if isinstance(data, dict) else None


def _consent(row: Row) -> RecordedConsentChange:
    return RecordedConsentChange(
        row["event_id"], row["purpose"], row["occurred_us"], row["granted"], row["expires_us"],
        row["controller"], row["channel"],
    )  # fmt: skip


def _violation(row: Row) -> RecordedViolation:
    return RecordedViolation(
        event_id=row["event_id"],
        rule=row["rule"],
        severity=row["severity"],
        status=row["status"],
        clause=row["clause"],
        explanation=row["explanation"],
        instant=row["occurred_us"],
        detected_at=to_micros(row["detected_at"]),
        policy_version=row["policy_version"],
    )


def _clause(clause: Clause | None) -> models.ReportClause | None:
    return models.ReportClause(id=clause.id, title=clause.title) if clause is not None else None


def _caused(violations: Iterable[ViolationEntry]) -> list[models.ReportVerdictViolation]:
    return [
        models.ReportVerdictViolation(
            rule=v.rule,
            clause=models.ReportClause(id=v.clause.id, title=v.clause.title),
            severity=v.severity,
            status=models.ViolationStatus(v.status),
        )
        for v in violations
    ]


def _instant(micros: int | None) -> str | None:
    return format_micros(micros) if micros is not None else None


def report_model(report: SubjectReport) -> models.SubjectReport:
    """The report as the API's JSON answer."""
    checkpoint = report.checkpoint
    return models.SubjectReport(
        subject=report.subject,
        generated_at=format_micros(report.generated_at),
        erased=report.erased,
        erased_at=_instant(report.erased_at),
        consents=[
            models.ReportConsent(
                event_id=entry.event_id,
                action=entry.action,
                time=format_micros(entry.instant),
                purpose=entry.purpose,
                clause=_clause(entry.clause),
                controller=entry.controller,
                channel=entry.channel,
                notice=models.ReportNotice(id=entry.notice.id, version=entry.notice.version)
                if entry.notice is not None
                else None,
                expires_at=_instant(entry.expires_at),
                reason=entry.reason,
            )
            for entry in report.consents
        ],
        disclosures=[
            models.ReportDisclosure(
                event_id=entry.event_id,
                time=format_micros(entry.instant),
                recipient=models.ReportRecipient(**entry.recipient._asdict()),
                purpose=entry.purpose,
                clause=_clause(entry.clause),
                controller=entry.controller,
                data_categories=list(entry.data_categories),
                legal_basis=models.ReportLegalBasis(
                    kind=entry.legal_basis_kind, reference=entry.legal_basis_reference
                )
                if entry.legal_basis_kind is not None
                else None,
                verdict=entry.verdict,
                violations=_caused(entry.violations),
            )
            for entry in report.disclosures
        ],
        visits=[
            models.ReportVisit(
                event_id=entry.event_id,
                time=format_micros(entry.instant),
                site=entry.site,
                rights_notice=entry.rights_notice,
                clause=models.ReportClause(id=entry.clause.id, title=entry.clause.title),
                verdict=entry.verdict,
                violations=_caused(entry.violations),
            )
            for entry in report.visits
        ],
        violations=[
            models.ReportViolation(
                event_id=v.event_id,
                rule=v.rule,
                clause=models.ReportClause(id=v.clause.id, title=v.clause.title),
                severity=v.severity,
                status=models.ViolationStatus(v.status),
                explanation=v.explanation,
                occurred_at=format_micros(v.instant),
                detected_at=format_micros(v.detected_at),
                policy_version=v.policy_version,
            )
            for v in report.violations
        ],
        clauses=[models.ReportClauseWords(**words._asdict()) for words in report.clauses],
        checkpoint=models.StoredCheckpoint.model_validate(dict(checkpoint.document))
        if checkpoint is not None
        else None,
    )
