"""Prometheus metrics: the text exposition format (version 0.0.4), written by hand.

The API is stateless, so nearly every figure is read from the database at
scrape time; only the HTTP request counts live in the process (one set per
API replica, told apart by Prometheus' ``instance`` label).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consent_ledger.core.verdicts import Severity
from consent_ledger.store.batch_write import BATCH_SECONDS_BOUNDS
from consent_ledger.store.outbox import OutboxHealth
from consent_ledger.store.webhook_deliveries import HookFigures

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Mapping[str, str], int | float]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class Exposition:
    """Metric families appended one by one, rendered as one text document."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.suffixed_family(name, kind, help_text, (("", sample) for sample in samples))

    def suffixed_family(
        self, name: str, kind: str, help_text: str, samples: Iterable[tuple[str, Sample]]
    ) -> None:
        """A family whose samples carry a suffix to the name (a histogram's
        ``_bucket``, ``_sum`` and ``_count``; "" for none)."""
        help_line = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines.append(f"# HELP {name} {help_line}")
        self._lines.append(f"# TYPE {name} {kind}")
        for suffix, (labels, value) in samples:
            if labels:
                rendered = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
                self._lines.append(f"{name}{suffix}{{{rendered}}} {_number(value)}")
            else:
                self._lines.append(f"{name}{suffix} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


class RequestCounts:
    """HTTP requests answered by this process, by method, route template and status."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, int]] = Counter()

    def add(self, method: str, route: str, status: int) -> None:
        self._counts[method, route, status] += 1

    def samples(self) -> list[Sample]:
        return [
            ({"method": method, "route": route, "status": str(status)}, count)
            for (method, route, status), count in sorted(self._counts.items())
        ]


class RequestCountingMiddleware:
    """ASGI middleware counting every HTTP answer into :class:`RequestCounts`.

    The route is the matched path template (``/v1/subjects/{subject}/events``),
    never the raw path, so subjects do not become label values.
    """

    def __init__(self, app: ASGIApp, counts: RequestCounts) -> None:
        self._app = app
        self._counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_counting)
        finally:
            route = scope.get("route")
            # path_format: "/v1/subjects/{subject}/events", without the ":path" convertor.
            template = getattr(route, "path_format", None) or getattr(route, "path", None)
            self._counts.add(scope["method"], template or "unmatched", status)


def _histogram(
    labels: Mapping[str, str], slots: Sequence[int], count: int, total: float
) -> Iterator[tuple[str, Sample]]:
    """A histogram's samples (suffix, sample) from its non-cumulative slots, one per
    bound of :data:`BATCH_SECONDS_BOUNDS` and one above. ``+Inf`` is ``count``:
    batches recorded before the slots were kept count there and in no finite bucket."""
    running = 0
    for bound, in_slot in zip(BATCH_SECONDS_BOUNDS, slots, strict=False):
        running += in_slot
        yield "_bucket", ({**labels, "le": _number(bound)}, running)
    yield "_bucket", ({**labels, "le": "+Inf"}, count)
    yield "_sum", (labels, total)
    yield "_count", (labels, count)


@dataclass(frozen=True, slots=True)
class LedgerFigures:
    """What one scrape reads: the database's counts (rows as the API's reads
    return them) and the lag per partition, None when the broker did not answer."""

    topic: str
    entries_by_type: Mapping[str, int]
    rejected_by_reason: Mapping[str, int]
    violations_by_rule: Iterable[Mapping[str, Any]]  # rule, status, n
    violations_by_severity: Mapping[str, int]  # ever opened
    totals: Mapping[str, int]  # accepted, duplicates, rejected
    # kafka_partition, batches, batch_seconds, batch_seconds_buckets
    batch_times: Sequence[Mapping[str, Any]]
    lag: Mapping[int, int] | None
    requests: Iterable[Sample]
    outbox: OutboxHealth
    webhooks: Sequence[HookFigures] = ()


def exposition(figures: LedgerFigures) -> str:
    """The ``/metrics`` page: every family, in the text exposition format."""
    out = Exposition()
    out.family(
        "consent_ledger_events",
        "gauge",
        "Accepted events in the ledger, by event type.",
        (({"type": kind}, count) for kind, count in figures.entries_by_type.items()),
    )
    out.family(
        "consent_ledger_rejected_events",
        "gauge",
        "Rejected records kept, by reason.",
        (({"reason": reason}, count) for reason, count in figures.rejected_by_reason.items()),
    )
    out.family(
        "consent_ledger_violations",
        "gauge",
        "Violations by rule and status.",
        (
            ({"rule": row["rule"], "status": row["status"]}, row["n"])
            for row in figures.violations_by_rule
        ),
    )
    out.family(
        "consent_ledger_violations_opened_total",
        "counter",
        "Violations opened, by severity: one per (event, rule), counted once even if "
        "retracted since; rate() of it is violations opened per second.",
        (
            ({"severity": severity.value}, figures.violations_by_severity.get(severity.value, 0))
            for severity in Severity
        ),
    )
    out.family(
        "consent_ledger_records_total",
        "counter",
        "Records read from the events topic, by outcome (accepted, duplicate, rejected).",
        [
            ({"topic": figures.topic, "outcome": "accepted"}, figures.totals["accepted"]),
            ({"topic": figures.topic, "outcome": "duplicate"}, figures.totals["duplicates"]),
            ({"topic": figures.topic, "outcome": "rejected"}, figures.totals["rejected"]),
        ],
    )
    for name, column, meaning in (
        ("consent_ledger_batches_total", "batches",
         "Worker batches committed that held records of the partition."),
        ("consent_ledger_batch_seconds_total", "batch_seconds",
         "Summed processing time of those batches; divided by batches_total, the mean batch latency."),
    ):  # fmt: skip
        out.family(
            name,
            "counter",
            meaning,
            [
                ({"topic": figures.topic, "partition": str(row["kafka_partition"])}, row[column])
                for row in figures.batch_times
            ],
        )
    out.suffixed_family(
        "consent_ledger_batch_duration_seconds",
        "histogram",
        "Processing time of the worker batches that held records of the partition.",
        (
            sample
            for row in figures.batch_times
            for sample in _histogram(
                {"topic": figures.topic, "partition": str(row["kafka_partition"])},
                row["batch_seconds_buckets"],
                row["batches"],
                row["batch_seconds"],
            )
        ),
    )
    out.family(
        "consent_ledger_broker_up",
        "gauge",
        "1 when the broker answered for the lag figures, else 0.",
        [({}, 0 if figures.lag is None else 1)],
    )
    out.family(
        "consent_ledger_consumer_lag",
        "gauge",
        "Records on the events topic the worker has not processed yet, by partition.",
        (
            ({"topic": figures.topic, "partition": str(partition)}, lag)
            for partition, lag in (figures.lag or {}).items()
        ),
    )
    out.family(
        "consent_ledger_records_isolated_total",
        "counter",
        "Records the worker isolated from their batch and rejected as unprocessable: "
        "storing them failed for a reason of their own (also in rejected_events).",
        [({"topic": figures.topic}, figures.rejected_by_reason.get("unprocessable", 0))],
    )
    outbox = figures.outbox
    for name, value, meaning in (
        ("consent_ledger_outbox_depth", outbox.depth,
         "Messages (alerts, copies of rejected records) waiting to be relayed."),
        ("consent_ledger_outbox_oldest_age_seconds", outbox.oldest_age_s,
         "Age of the oldest message waiting; 0 when none waits."),
        ("consent_ledger_outbox_dead", outbox.dead,
         "Messages the broker refused for good (too large, invalid), kept with the reason."),
        ("consent_ledger_outbox_seconds_since_progress", outbox.since_progress_s,
         "Seconds since a relay last sent or set aside a message."),
    ):  # fmt: skip
        out.family(name, "gauge", meaning, [({}, value)])
    out.family(
        "consent_ledger_webhook_deliveries",
        "gauge",
        "Alerts queued for each webhook, by state (delivered, pending, dead); url is the "
        "hook's name or its URL without credentials.",
        (
            ({"url": hook.hook, "state": state}, count)
            for hook in figures.webhooks
            for state, count in (
                ("delivered", hook.delivered),
                ("pending", hook.pending),
                ("dead", hook.dead),
            )
        ),
    )
    out.family(
        "consent_ledger_webhook_failed_attempts_total",
        "counter",
        "POSTs to each webhook that failed (no connection, no answer in time, not 2xx).",
        (({"url": hook.hook}, hook.failed_attempts) for hook in figures.webhooks),
    )
    out.family(
        "consent_ledger_webhook_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest alert waiting for each webhook; 0 when none waits.",
        (({"url": hook.hook}, hook.oldest_pending_age_s) for hook in figures.webhooks),
    )
    out.family(
        "consent_ledger_http_requests_total",
        "counter",
        "HTTP requests answered by this API process, by method, route and status.",
        figures.requests,
    )
    return out.text()
