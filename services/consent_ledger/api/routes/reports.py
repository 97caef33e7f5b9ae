"""The analysts' reports (CONTRACT §8): violations over time, disclosures by whom
and for what. Counts only, no subject named: nothing here goes to the access log.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from consent_ledger.api.auth import requires
from consent_ledger.api.errors import invalid_parameter
from consent_ledger.api.routes.common import (
    ERRORS,
    Context,
    instant_parameter,
    versions_for_titles,
)
from consent_ledger.core.reports import Bucket, DisclosureGroup, TimeRange, ViolationGroup
from consent_ledger.core.roles import Permission as P
from consent_ledger.core.timestamps import format_micros

router = APIRouter()

#: The most items a report answers with: a year of hours by recipient would be
#: hundreds of thousands, more than a chart can show or the API should hold.
MAX_REPORT_ITEMS: Final = 100_000

_INSTANT: Final = (
    "RFC 3339 instant with an offset, e.g. 2026-03-01T00:00:00Z (URL-encode a '+' "
    "offset as %2B), compared with each event's time"
)
Since = Annotated[str | None, Query(alias="from", description=f"Inclusive; {_INSTANT}")]
Until = Annotated[str | None, Query(alias="to", description=f"Exclusive; {_INSTANT}")]


class ViolationReportItem(BaseModel):
    """Violations of one bucket and group."""

    bucket: str = Field(
        description="Start of the bucket, RFC 3339 in UTC (weeks start on Monday, ISO)",
        examples=["2026-03-02T00:00:00Z"],
    )
    group: str | None = Field(
        description=(
            "The rule, clause, recipient kind, recipient id, purpose or severity; null "
            "when grouping by an attribute of the disclosure and the violation has "
            "none: a visitor registration's, or that of a subject since erased, whose "
            "disclosures the ledger no longer keeps"
        )
    )
    recipient_kind: str | None = Field(
        default=None,
        description="With group_by=recipient: the kind the recipient id belongs to",
    )
    clause_title: str | None = Field(
        default=None,
        description=(
            "With group_by=clause: the clause's title in the privacy statement's words, "
            "from the latest policy version that gives words for it; null when none does"
        ),
    )
    opened: int = Field(
        description="Violations whose event's time falls in the bucket, retracted or not", ge=0
    )
    retracted: int = Field(description="How many of those were retracted since", ge=0)


class ViolationReport(BaseModel):
    """Summed over every bucket, `opened - retracted` is what is open now (within
    `from`/`to`: of the events in that range)."""

    bucket: Bucket
    group_by: ViolationGroup
    items: list[ViolationReportItem] = Field(description="By bucket, then group (null last)")


class DisclosureReportItem(BaseModel):
    group: str = Field(description="The recipient kind, recipient id, purpose or data category")
    recipient_kind: str | None = Field(
        default=None,
        description="With group_by=recipient: the kind the recipient id belongs to",
    )
    disclosures: int = Field(description="Disclosures whose event's time is in range", ge=0)
    violating: int = Field(
        description=(
            "How many of them broke a rule: have at least one violation open now. A "
            "disclosure whose violations were all retracted (a later consent or policy "
            "version cleared them) does not count"
        ),
        ge=0,
    )


class DisclosureReport(BaseModel):
    group_by: DisclosureGroup
    items: list[DisclosureReportItem] = Field(description="By group")


def time_range(since: str | None, until: str | None) -> TimeRange:
    """``from`` and ``to`` as a range of event times; a 400 naming the parameter
    that is not an instant, or ``to`` when it is not after ``from``."""
    span = TimeRange(instant_parameter("from", since), instant_parameter("to", until))
    if span.empty:
        raise invalid_parameter("to", f"{until} is not after from ({since}); to is exclusive")
    return span


def _within_limit(count: int, parameter: str, advice: str) -> None:
    if count > MAX_REPORT_ITEMS:
        raise invalid_parameter(
            parameter, f"the report would hold more than {MAX_REPORT_ITEMS:,} items; {advice}"
        )


@router.get(
    "/v1/reports/violations",
    dependencies=[requires(P.READ_REPORTS)],
    summary="Violations opened and retracted per hour, day or week, by a grouping",
    description=(
        "Counts of violations per bucket of their event's time (not the time they "
        "were found: a late event lands in an old bucket) and per group. `opened` "
        "counts every violation of the bucket, `retracted` those of them retracted "
        "since, so that over all buckets `opened - retracted` is what is open now. "
        "A violation retracted and opened again counts as open. Buckets are UTC; weeks "
        "start on Monday. Buckets and groups without violations are left out. "
        f"At most {MAX_REPORT_ITEMS:,} items: more is a 400 asking for a wider bucket "
        "or a shorter range."
    ),
    responses=ERRORS,
)
async def violations_report(
    context: Context,
    since: Since = None,
    until: Until = None,
    bucket: Annotated[Bucket, Query(description="UTC hours, days or ISO weeks")] = Bucket.DAY,
    group_by: Annotated[ViolationGroup, Query()] = ViolationGroup.RULE,
) -> ViolationReport:
    span = time_range(since, until)
    async with context.ledger().snapshot(heavy=True) as view:
        cells = await view.violation_report(bucket, group_by, span, MAX_REPORT_ITEMS + 1)
        _within_limit(len(cells), "bucket", "choose a wider bucket or a shorter range (from, to)")
        titles = await versions_for_titles(view, context.policy) if group_by == "clause" else None
    items = [
        ViolationReportItem(
            bucket=format_micros(cell.bucket),
            group=cell.group,
            recipient_kind=cell.recipient_kind,
            clause_title=titles.clause_title(cell.group) if titles and cell.group else None,
            opened=cell.opened,
            retracted=cell.retracted,
        )
        for cell in cells
    ]
    return ViolationReport(bucket=bucket, group_by=group_by, items=items)


@router.get(
    "/v1/reports/disclosures",
    dependencies=[requires(P.READ_REPORTS)],
    summary="Disclosures, and how many broke a rule, by recipient, purpose or data category",
    description=(
        "Per group, the disclosures whose event's time is in range and how many of "
        "them have a violation open now. A disclosure of several data categories "
        "counts in each. Erased subjects' disclosures are not counted: the ledger "
        "keeps no read model of them."
    ),
    responses=ERRORS,
)
async def disclosures_report(
    context: Context,
    since: Since = None,
    until: Until = None,
    group_by: Annotated[DisclosureGroup, Query()] = DisclosureGroup.RECIPIENT_KIND,
) -> DisclosureReport:
    span = time_range(since, until)
    async with context.ledger().snapshot(heavy=True) as view:
        groups = await view.disclosure_report(group_by, span, MAX_REPORT_ITEMS + 1)
    _within_limit(len(groups), "group_by", "group by something with fewer values")
    items = [
        DisclosureReportItem(
            group=count.group,
            recipient_kind=count.recipient_kind,
            disclosures=count.disclosures,
            violating=count.violating,
        )
        for count in groups
    ]
    return DisclosureReport(group_by=group_by, items=items)
