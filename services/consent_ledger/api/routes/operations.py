"""What operators watch: counts and lag, liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from consent_ledger.api import models
from consent_ledger.api.auth import authenticator, public, requires
from consent_ledger.api.broker import (
    BROKER_TIMEOUT_S,
    BrokerUnavailable,
    broker_answers,
    consumer_lag,
)
from consent_ledger.api.errors import ApiError, error_body
from consent_ledger.api.metrics import CONTENT_TYPE, Exposition, LedgerFigures, exposition
from consent_ledger.api.routes.common import Context
from consent_ledger.core.roles import Permission as P
from consent_ledger.kafka import kafka_security
from consent_ledger.store.webhook_deliveries import HookFigures

router = APIRouter()

_READY_TIMEOUT_S: Final = BROKER_TIMEOUT_S
OUTBOX_STUCK_S: Final = 60.0


@router.get(
    "/v1/stats",
    dependencies=[requires(P.READ_STATS)],
    summary="Counts of records, violations and the worker's lag",
)
async def stats(context: Context) -> models.Stats:
    topic = context.settings.events_topic
    async with context.ledger().snapshot() as view:
        totals = await view.position_totals(topic)
        by_status = (await view.row_counts()).violations_by_status()
        next_offsets = await view.next_offsets(topic)
        outbox = await view.outbox_health()
        hooks = await view.webhook_figures()
    # Asked after the database, so the lag is never below the truth.
    log_end = await context.log_end.of(topic)
    lag = sum(consumer_lag(log_end, next_offsets).values()) if log_end is not None else None
    return models.Stats(
        accepted=totals["accepted"],
        duplicates=totals["duplicates"],
        rejected=totals["rejected"],
        violations_open=by_status.get("open", 0),
        violations_retracted=by_status.get("retracted", 0),
        lag=lag,
        outbox=models.OutboxStats(
            depth=outbox.depth, oldest_age_s=round(outbox.oldest_age_s, 3), dead=outbox.dead
        ),
        webhooks=_webhook_stats(hooks),
    )


def _webhook_stats(hooks: Sequence[HookFigures]) -> models.WebhooksStats:
    return models.WebhooksStats(
        delivered=sum(hook.delivered for hook in hooks),
        failed_attempts=sum(hook.failed_attempts for hook in hooks),
        pending=sum(hook.pending for hook in hooks),
        dead=sum(hook.dead for hook in hooks),
        urls=[
            models.WebhookStats(
                url=hook.hook,
                delivered=hook.delivered,
                failed_attempts=hook.failed_attempts,
                pending=hook.pending,
                dead=hook.dead,
                oldest_pending_age_s=round(hook.oldest_pending_age_s, 3),
                last_error=hook.last_error,
            )
            for hook in hooks
        ],
    )


@router.get("/healthz", dependencies=[public()], summary="The process is alive")
async def healthz() -> models.Health:
    return models.Health()


@router.get(
    "/readyz",
    dependencies=[public()],
    summary="The database and the broker answer; degraded when the outbox is stuck",
    description=(
        "503 when the database or the broker does not answer. 200 otherwise, with "
        "`status` `degraded` (and why, under `checks.outbox`) when messages have "
        f"waited in the outbox for {OUTBOX_STUCK_S:g} s while no relay made progress: "
        "alerts and copies of rejected records are late, but the API serves, so it "
        "stays in rotation; alert on it from `/metrics`."
    ),
    responses={503: {"model": models.NotReady, "description": "Which dependency failed"}},
)
async def readyz(context: Context) -> Response:
    async def database() -> None:
        await asyncio.wait_for(context.ledger().ping(), _READY_TIMEOUT_S)

    async def broker() -> None:
        if not context.settings.kafka_bootstrap:
            raise BrokerUnavailable("LEDGER_KAFKA_BOOTSTRAP is not set")
        await broker_answers(
            context.settings.kafka_bootstrap,
            _READY_TIMEOUT_S,
            security=kafka_security(context.settings),
        )

    names = ("database", "broker")
    outcomes = await asyncio.gather(database(), broker(), return_exceptions=True)
    checks = {
        name: "ok" if outcome is None else _failure(outcome)
        for name, outcome in zip(names, outcomes, strict=True)
    }
    failed = [name for name, check in checks.items() if check != "ok"]
    if failed:
        body = error_body("not-ready", f"not ready: {', '.join(failed)} failed", failed=failed)
        return JSONResponse({**body, "checks": checks}, status_code=503)
    try:
        outbox = await asyncio.wait_for(context.ledger().outbox_health(), _READY_TIMEOUT_S)
    except Exception as exc:  # the database answered a moment ago: no verdict
        checks["outbox"] = f"unknown: {_failure(exc)}"
        return JSONResponse(models.Readiness(checks=checks).model_dump())
    if outbox.stuck_for(OUTBOX_STUCK_S):
        checks["outbox"] = (
            f"no relay progress for {outbox.since_progress_s:.0f} s; {outbox.depth} messages "
            f"waiting, the oldest for {outbox.oldest_age_s:.0f} s"
        )
        return JSONResponse(models.Readiness(status="degraded", checks=checks).model_dump())
    checks["outbox"] = "ok"
    return JSONResponse(models.Readiness(checks=checks).model_dump())


def _failure(outcome: BaseException | None) -> str:
    if isinstance(outcome, ApiError):
        return outcome.message
    if isinstance(outcome, TimeoutError):
        return f"no answer within {_READY_TIMEOUT_S:g} s"
    return f"{type(outcome).__name__}: {outcome}"


@router.get(
    "/metrics",
    dependencies=[requires(P.READ_METRICS)],
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}}},
)
async def metrics(request: Request, context: Context) -> Response:
    topic = context.settings.events_topic
    async with context.ledger().snapshot() as view:
        counts = await view.row_counts()
        totals = await view.position_totals(topic)
        next_offsets = await view.next_offsets(topic)
        batch_times = await view.batch_times(topic)
        outbox = await view.outbox_health()
        hooks = await view.webhook_figures()
    log_end = await context.log_end.of(topic)
    figures = LedgerFigures(
        topic=topic,
        entries_by_type=counts.entries_by_type,
        rejected_by_reason=counts.rejected_by_reason,
        violations_by_rule=counts.violations_by_rule_and_status(),
        violations_by_severity=counts.violations_by_severity(),
        totals=totals,
        batch_times=batch_times,
        lag=consumer_lag(log_end, next_offsets) if log_end is not None else None,
        requests=context.requests.samples(),
        outbox=outbox,
        webhooks=hooks,
    )
    sign_ins = Exposition()  # this process's own counts, beside the ledger's figures
    authenticator(request).metric_families(sign_ins)
    return Response(exposition(figures) + sign_ins.text(), media_type=CONTENT_TYPE)
