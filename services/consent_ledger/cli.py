"""The ``consent-ledger`` command: a thin shell over the core and the adapters.

Exit status: 0 when all is well (``check``: nothing open), 1 when ``check``
finds open violations, 2 on a usage, file or policy error.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import Policy, PolicyError, load_policy, load_reference_policy
from consent_ledger.core.timeline import Violation
from consent_ledger.core.timestamps import format_micros

EXIT_OK, EXIT_VIOLATIONS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except (UsageError, PolicyError) as exc:
        sys.stderr.write(f"consent-ledger {args.command}: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consent-ledger",
        description="Event-sourced audit ledger for personal data: consent, disclosures, proof.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="judge a JSON Lines file of events offline")
    check.add_argument("events", type=Path, help="JSON Lines file, one CloudEvent per line")
    check.add_argument("--policy", type=Path, help="policy YAML (default: the reference policy)")
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(run=_check)
    return parser


def resolve_policy(path: Path | None) -> Policy:
    """The policy at ``path``, or the reference policy shipped with the package."""
    return load_policy(path) if path is not None else load_reference_policy()


def _check(args: argparse.Namespace) -> int:
    policy = resolve_policy(args.policy)
    ledger = OfflineLedger(policy)
    # The ledger only grows while reading and builds no reference cycles, so the
    # cyclic collector would only rescan it again and again (a third of the time).
    gc.disable()
    try:
        with args.events.open("rb") as lines:
            ledger.ingest_lines(lines)
    except OSError as exc:
        raise UsageError(f"cannot read {args.events}: {exc.strerror or exc}") from None
    violations = ledger.open_violations()
    if args.json:
        sys.stdout.buffer.write(
            orjson.dumps(_check_document(ledger, violations), option=orjson.OPT_INDENT_2)
        )
        sys.stdout.write("\n")
    else:
        _print_summary(args.events, ledger, violations)
    return EXIT_VIOLATIONS if violations else EXIT_OK


def violation_document(violation: Violation) -> dict[str, Any]:
    return {
        "event_id": violation.event_id,
        "rule": violation.rule.value,
        "subject": violation.subject,
        "severity": violation.severity.value,
        "clause": violation.clause,
        "explanation": violation.explanation,
        "occurred_at": format_micros(violation.occurred_at),
    }


def _check_document(ledger: OfflineLedger, violations: list[Violation]) -> dict[str, Any]:
    return {
        "violations": [violation_document(violation) for violation in violations],
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
        first = found[0]
        out.write(f"  {rule} ({first.severity.value}, clause {first.clause}): {len(found)}\n")
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


if __name__ == "__main__":
    sys.exit(main())
