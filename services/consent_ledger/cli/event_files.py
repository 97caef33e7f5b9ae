"""The commands over a JSON Lines file of events: ``check`` judges it offline
(no broker, no database), ``publish`` sends it to the events topic."""

from __future__ import annotations

import argparse
import gc
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from consent_ledger.cli.command import (
    EXIT_OK,
    EXIT_VIOLATIONS,
    TRANSPORT,
    Commands,
    UsageError,
    add_command,
    settings_from_env,
    write_json,
)
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import load_policy_versions
from consent_ledger.core.timeline import Violation

_CHECK_EXIT = "exit status: 0 nothing open, 1 violations open, 2 usage, file or policy error"


def add_check(commands: Commands) -> None:
    check = add_command(
        commands, "check", "judge a JSON Lines file of events offline",
        "Judge a JSON Lines file of CloudEvents offline, as the service would (no broker, "
        "no database): print the open violations and rejected lines, or one JSON document.",
        "LEDGER_POLICY (the policy file or folder when --policy is not given)",
        _CHECK_EXIT,
    )  # fmt: skip
    check.add_argument("events", type=Path, help="JSON Lines file, one CloudEvent per line")
    check.add_argument("--policy", type=Path,
                       help="policy YAML, or a folder of versions, one *.yaml each "
                            "(default: LEDGER_POLICY, else the reference policy)")  # fmt: skip
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(run=_check)


def add_publish(commands: Commands) -> None:
    publish = add_command(
        commands, "publish", "send a JSON Lines file's events to ledger.events",
        "Send a JSON Lines file's events to the events topic, keyed by subject. Without "
        "--raw each line is checked first and refused lines are reported, not sent.",
        "LEDGER_KAFKA_BOOTSTRAP (required), LEDGER_EVENTS_TOPIC, LEDGER_KAFKA_IDEMPOTENCE "
        "(set it to false against the embedded broker of `consent-ledger dev`), " + TRANSPORT,
        "exit status: 0 all sent, 1 lines refused (not sent), 2 usage or broker error",
    )  # fmt: skip
    publish.add_argument("events", type=Path, help="JSON Lines file, one CloudEvent per line")
    publish.add_argument("--raw", action="store_true", help="send every non-blank line as it is")
    publish.set_defaults(run=_publish)


def _check(args: argparse.Namespace) -> int:
    policy = load_policy_versions(args.policy or settings_from_env().policy_path)
    ledger = OfflineLedger(policy)
    # The ledger only grows while reading and builds no reference cycles, so the
    # cyclic collector would only rescan it again and again (a third of the time);
    # afterwards it is frozen out of the collector's sight, for the same reason.
    gc.disable()
    try:
        with args.events.open("rb") as lines:
            ledger.ingest_file(lines)
    except OSError as exc:
        raise UsageError(f"cannot read {args.events}: {exc.strerror or exc}") from None
    finally:
        gc.freeze()
        gc.enable()
    violations = ledger.open_violations()
    if args.json:
        write_json(_check_document(ledger, violations))
    else:
        _print_summary(args.events, ledger, violations)
    return EXIT_VIOLATIONS if violations else EXIT_OK


def _check_document(ledger: OfflineLedger, violations: list[Violation]) -> dict[str, Any]:
    return {
        "violations": [violation.to_document() for violation in violations],
        "rejected": [
            {
                "line": rejected.line,
                "reason": rejected.rejection.reason.value,
                "detail": rejected.rejection.detail,
                "event_id": rejected.rejection.event_id,
            }
            for rejected in ledger.rejected
        ],
        "counts": {
            "accepted": ledger.counts.accepted,
            "duplicates": ledger.counts.duplicates,
            "rejected": ledger.counts.rejected,
            "violations": len(violations),
        },
    }


def _print_summary(path: Path, ledger: OfflineLedger, violations: list[Violation]) -> None:
    counts = ledger.counts
    out = sys.stdout
    out.write(
        f"{path}: {counts.accepted} accepted, {counts.duplicates} duplicates, "
        f"{counts.rejected} rejected, {len(violations)} open violations\n"
    )
    by_rule: dict[str, list[Violation]] = defaultdict(list)
    for violation in violations:
        by_rule[violation.rule.value].append(violation)
    if by_rule:
        out.write("\nOpen violations by rule:\n")
    for rule, found in sorted(by_rule.items(), key=lambda item: (-len(item[1]), item[0])):
        clauses = ", ".join(sorted({violation.clause for violation in found}))
        label = "clauses" if ", " in clauses else "clause"
        out.write(f"  {rule} ({found[0].severity.value}, {label} {clauses}): {len(found)}\n")
        for violation in found[:5]:
            out.write(f"    {violation.event_id} [{violation.subject}] {violation.explanation}\n")
        if len(found) > 5:
            out.write(f"    ... and {len(found) - 5} more (--json lists them all)\n")
    if ledger.rejected:
        out.write("\nRejected lines:\n")
    for rejected in ledger.rejected[:20]:
        out.write(
            f"  line {rejected.line}: {rejected.rejection.reason.value}: {rejected.rejection.detail}\n"
        )
    if len(ledger.rejected) > 20:
        out.write(f"  ... and {len(ledger.rejected) - 20} more (--json lists them all)\n")


def _publish(args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError

    from consent_ledger.kafka import IdempotenceRefused
    from consent_ledger.publishing import publish_file

    settings = settings_from_env()
    if not settings.kafka_bootstrap:
        raise UsageError("set LEDGER_KAFKA_BOOTSTRAP to the broker's address")
    if not args.events.is_file():
        raise UsageError(f"cannot read {args.events}: no such file")
    try:
        report = asyncio.run(publish_file(settings, args.events, raw=args.raw))
    except IdempotenceRefused as exc:
        raise UsageError(str(exc)) from None
    except (KafkaError, OSError) as exc:
        raise UsageError(f"cannot publish to {settings.kafka_bootstrap}: {exc!r}") from None
    for line, rejection in report.rejected:
        sys.stderr.write(f"line {line}: {rejection.reason.value}: {rejection.detail} (not sent)\n")
    sys.stdout.write(
        f"published {report.sent} events to {settings.events_topic} at {settings.kafka_bootstrap}"
        + (f"; {len(report.rejected)} rejected lines not sent\n" if report.rejected else "\n")
    )
    return EXIT_VIOLATIONS if report.rejected else EXIT_OK
