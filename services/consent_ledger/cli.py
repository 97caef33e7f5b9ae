"""The ``consent-ledger`` command: a thin shell over the core and the adapters.

Exit status: 0 when all is well (``check``: nothing open), 1 when ``check``
finds open violations or ``publish`` refused lines, 2 on a usage, file or
policy error. Heavy imports (faust, the web framework) happen inside the
command that needs them, so ``check`` starts fast.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import PolicyError, load_policy_versions
from consent_ledger.core.timeline import Violation
from consent_ledger.settings import Settings, SettingsError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
    check.add_argument("--policy", type=Path,
                       help="policy YAML, or a folder of versions, one *.yaml each "
                            "(default: LEDGER_POLICY, else the reference policy)")  # fmt: skip
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(run=_check)

    dev = commands.add_parser(
        "dev", help="the whole service on this machine (embedded broker and PostgreSQL by default)"
    )
    dev.add_argument("--demo", action="store_true", help="also publish a slowly paced demo stream")
    dev.add_argument(
        "--data-dir", type=Path, help="where to keep the database and keys (default .ledger-data)"
    )
    dev.add_argument("--workers", type=int, default=1, help="stream workers to run (default 1)")
    dev.add_argument("--partitions", type=int, help="partitions of ledger.events (default 4)")
    dev.set_defaults(run=_dev)

    worker = commands.add_parser("worker", help="run a stream worker (one of a consumer group)")
    worker.set_defaults(run=_worker)

    api = commands.add_parser("api", help="run the HTTP API")
    api.set_defaults(run=_api)

    publish = commands.add_parser(
        "publish",
        help="send a JSON Lines file's events to ledger.events",
        description="Send a JSON Lines file's events to LEDGER_EVENTS_TOPIC (ledger.events) at "
        "LEDGER_KAFKA_BOOTSTRAP, keyed by subject. Exit status 1 when lines were refused (not "
        "sent), 2 on a usage or broker error. Against the embedded broker of `consent-ledger "
        "dev`, set LEDGER_KAFKA_IDEMPOTENCE=false.",
    )
    publish.add_argument("events", type=Path, help="JSON Lines file, one CloudEvent per line")
    publish.add_argument("--raw", action="store_true", help="send every non-blank line as it is")
    publish.set_defaults(run=_publish)

    migrate = commands.add_parser(
        "migrate", help="apply the database migrations (run as the owner role in production)"
    )
    migrate.set_defaults(run=_migrate)

    verify = commands.add_parser(
        "verify",
        help="recompute every Merkle log from the stored entries and check every checkpoint",
    )
    verify.add_argument("--public-key", type=Path, help="the ledger's public key: PEM, or the JSON "
                        "of GET /v1/ledger/public-key; default: LEDGER_PUBLIC_KEY_FILE, else "
                        "derived from LEDGER_SIGNING_KEY_FILE")  # fmt: skip
    verify.set_defaults(run=_verify)

    verify_proof = commands.add_parser(
        "verify-proof", help="check a saved inclusion or consistency proof offline"
    )
    verify_proof.add_argument("proof", type=Path, help="proof document (JSON) from the API")
    verify_proof.add_argument(
        "--public-key",
        type=Path,
        required=True,
        help="the ledger's public key: PEM, or the JSON of GET /v1/ledger/public-key",
    )
    verify_proof.set_defaults(run=_verify_proof)
    return parser


def _configure_logging() -> None:
    from consent_ledger.log import configure_logging  # structlog: not needed by check

    configure_logging()


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def _dev(args: argparse.Namespace) -> int:
    from consent_ledger.dev import DevStack

    _configure_logging()
    settings = _settings()
    if args.data_dir is not None:
        settings = settings.with_(data_dir=args.data_dir)
    if args.partitions is not None:
        settings = settings.with_(partitions=args.partitions)
    load_policy_versions(settings.policy_path)  # refuse a bad policy before starting anything
    return DevStack(settings, demo=args.demo, workers=args.workers).run()


def _worker(args: argparse.Namespace) -> int:
    from consent_ledger.worker.app import WorkerNotReady, run_worker

    _configure_logging()
    settings = _settings()
    if not settings.kafka_bootstrap or not settings.database_url:
        raise UsageError("set LEDGER_KAFKA_BOOTSTRAP and LEDGER_DATABASE_URL")
    try:
        run_worker(settings, load_policy_versions(settings.policy_path))
    except WorkerNotReady as exc:
        raise UsageError(f"not joining the consumer group: {exc}") from None
    return EXIT_OK


def _api(args: argparse.Namespace) -> int:
    import asyncio

    from consent_ledger.api.app import serve

    _configure_logging()
    settings = _settings()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")
    asyncio.run(serve(settings))
    return EXIT_OK


def _public_key(path: Path | None, settings: Settings) -> Ed25519PublicKey:
    from consent_ledger.ledger.checkpoints import load_public_key, load_signing_key

    try:
        if path is not None:
            return load_public_key(_public_key_pem(path.read_bytes()))
        if settings.public_key_file is not None:
            return load_public_key(_public_key_pem(settings.public_key_file.read_bytes()))
        if settings.signing_key_file is not None:
            return load_signing_key(Path(settings.signing_key_file)).public_key()
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the public key: {exc}") from None
    raise UsageError(
        "give --public-key FILE, or set LEDGER_PUBLIC_KEY_FILE or LEDGER_SIGNING_KEY_FILE"
    )


def _public_key_pem(content: bytes) -> bytes:
    """A PEM file's content, or the PEM inside what GET /v1/ledger/public-key answered."""
    if not content.lstrip().startswith(b"{"):
        return content
    try:
        pem = orjson.loads(content)["public_key_pem"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"a JSON key file needs public_key_pem ({exc!r})") from None
    if not isinstance(pem, str):
        raise ValueError("public_key_pem must be a string")
    return pem.encode("ascii", "replace")


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from consent_ledger.ledger.migrate import migrate

    _configure_logging()
    settings = _settings()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")

    async def run() -> list[str]:
        connection = await asyncpg.connect(settings.database_url)
        try:
            return await migrate(connection)
        finally:
            await connection.close()

    applied = asyncio.run(run())
    sys.stdout.write(f"applied {', '.join(applied)}\n" if applied else "the schema is up to date\n")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from consent_ledger.ledger.audit import verify_ledger

    settings = _settings()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")
    public_key = _public_key(args.public_key, settings)

    async def run() -> Any:
        connection = await asyncpg.connect(settings.database_url)
        try:
            return await verify_ledger(connection, public_key)
        finally:
            await connection.close()

    try:
        report = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Exit 2, not 1: the ledger could not be read, which says nothing of tampering.
        raise UsageError(f"cannot read the ledger: {type(exc).__name__}: {exc}") from None
    for number in report.forged_checkpoints:
        sys.stdout.write(f"checkpoint {number}: signature does not verify: forged or altered\n")
    if report.other_keys:
        sys.stdout.write(
            f"(those checkpoints name signing key {', '.join(sorted(report.other_keys))}, and the "
            "key given is another: a wrong --public-key, or a key rotated since)\n"
        )
    for divergence in report.divergences:
        sys.stdout.write(f"DIVERGES: {divergence}\n")
    verdict = "OK" if report.ok else "FAILED"
    sys.stdout.write(
        f"{verdict}: {report.entries} entries in {report.partitions} partitions, "
        f"{report.checkpoints} checkpoints\n"
    )
    return EXIT_OK if report.ok else EXIT_VIOLATIONS


def _verify_proof(args: argparse.Namespace) -> int:
    from consent_ledger.ledger.proofs import verify_consistency_document, verify_inclusion_document

    public_key = _public_key(args.public_key, _settings())
    try:
        document = orjson.loads(args.proof.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {args.proof}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{args.proof} is not JSON: {exc}") from None
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        message = document["error"].get("message", "")
        raise UsageError(f"{args.proof} is an error the API answered, not a proof: {message}")
    kind = document.get("format", "") if isinstance(document, dict) else ""
    verify = (
        verify_consistency_document if "consistency" in str(kind) else verify_inclusion_document
    )
    result = verify(document, public_key)
    sys.stdout.write(f"{'OK' if result.ok else 'FAILED'}: {result.detail}\n")
    return EXIT_OK if result.ok else EXIT_VIOLATIONS


def _publish(args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError

    from consent_ledger.kafka import IdempotenceRefused
    from consent_ledger.publishing import publish_file

    settings = _settings()
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


def _check(args: argparse.Namespace) -> int:
    policy = load_policy_versions(args.policy or _settings().policy_path)
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
        sys.stdout.buffer.write(
            orjson.dumps(_check_document(ledger, violations), option=orjson.OPT_INDENT_2)
        )
        sys.stdout.write("\n")
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


if __name__ == "__main__":
    sys.exit(main())
