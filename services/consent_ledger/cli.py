"""The ``consent-ledger`` command: a thin shell over the core and the adapters.

Exit status: 0 when all is well (``check``: nothing open), 1 when ``check``
finds open violations, ``publish`` refused lines, ``verify`` finds tampering or
nothing signed, or a checkpoint or proof does not verify, 2 on a usage, file,
policy or connection error. Heavy imports (faust, the web framework) happen inside the
command that needs them, so ``check`` starts fast.

Size: about 940 lines, an argparse definition and a composition root per
subcommand (check, publish, dev, worker, api, migrate, verify, verify-proof,
checkpoint, rebuild, token, keys, policy, whatif). It is the next module to
split: a package with one module per group of commands.
"""

from __future__ import annotations

import argparse
import gc
import getpass
import sys
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from consent_ledger import __version__
from consent_ledger.core.offline import OfflineLedger
from consent_ledger.core.policy import PolicyError, load_policy_versions
from consent_ledger.core.timeline import Violation
from consent_ledger.core.timestamps import format_micros
from consent_ledger.settings import Settings, SettingsError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from consent_ledger.integrity.trust import TrustedCheckpoint

EXIT_OK, EXIT_VIOLATIONS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except (UsageError, PolicyError, SettingsError) as exc:
        sys.stderr.write(f"consent-ledger {args.command}: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return result


_TRANSPORT = (
    "LEDGER_KAFKA_SECURITY_PROTOCOL, LEDGER_KAFKA_SASL_MECHANISM, LEDGER_KAFKA_SASL_USERNAME, "
    "LEDGER_KAFKA_SASL_PASSWORD_FILE, LEDGER_KAFKA_CA_FILE (TLS and SASL to Kafka)"
)
_CHECK_EXIT = "exit status: 0 nothing open, 1 violations open, 2 usage, file or policy error"


def _epilog(variables: str, exit_status: str) -> str:
    return "\n".join(
        textwrap.fill(text, 79, subsequent_indent="  ")
        for text in (f"environment: {variables}", exit_status)
    )


def _command(
    commands: Any, name: str, summary: str, description: str, variables: str, exit_status: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does, what it reads and how it exits."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 79),
        epilog=_epilog(variables, exit_status),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consent-ledger",
        description="Event-sourced audit ledger for personal data: consent, disclosures, proof. "
        "`consent-ledger COMMAND --help` says what a command reads and how it exits.",
        epilog="Configuration is by LEDGER_* environment variables (deploy/ledger.env.example "
        "lists them all). Exit status 2 always means a usage or configuration problem.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = _command(
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

    dev = _command(
        commands, "dev",
        "the whole service on this machine (embedded broker and PostgreSQL by default)",
        "Run the whole service on this machine: an embedded broker and PostgreSQL (unless "
        "the environment names real ones; they need the extra consent-ledger[embedded]), "
        "the stream worker(s), the API, and with --demo a demo producer. Keys and the "
        "database are kept in the data folder between runs; Ctrl-C stops everything.",
        "LEDGER_KAFKA_BOOTSTRAP, LEDGER_DATABASE_URL (use these instead of the embedded "
        "ones), LEDGER_DATA_DIR, LEDGER_API_HOST, LEDGER_API_PORT, LEDGER_PARTITIONS, "
        "LEDGER_POLICY, LEDGER_MASTER_KEY_FILE, LEDGER_SIGNING_KEY_FILE, "
        "LEDGER_SESSION_TIMEOUT_S, LEDGER_FETCH_MAX_WAIT_MS; the worker and the API it "
        "starts read the rest (see their --help)",
        "exit status: 0 stopped by Ctrl-C, 1 a process or the infrastructure failed, "
        "2 usage or configuration error",
    )  # fmt: skip
    dev.add_argument("--demo", action="store_true", help="also publish a slowly paced demo stream")
    dev.add_argument(
        "--data-dir", type=Path, help="where to keep the database and keys (default .ledger-data)"
    )
    dev.add_argument("--workers", type=int, default=1, help="stream workers to run (default 1)")
    dev.add_argument("--partitions", type=int, help="partitions of ledger.events (default 4)")
    dev.set_defaults(run=_dev)

    worker = _command(
        commands, "worker", "run a stream worker (one of a consumer group)",
        "Run a stream worker: read ledger.events in batches, judge, write each batch in one "
        "PostgreSQL transaction, relay alerts, sign checkpoints. Run as many as the topic "
        "has partitions, in one consumer group; SIGTERM stops it cleanly.",
        "LEDGER_KAFKA_BOOTSTRAP and LEDGER_DATABASE_URL (required), LEDGER_MASTER_KEY_FILE "
        "or LEDGER_MASTER_KEY (required), LEDGER_SIGNING_KEY_FILE, LEDGER_POLICY, "
        "LEDGER_EVENTS_TOPIC, LEDGER_REJECTED_TOPIC, LEDGER_VIOLATIONS_TOPIC, "
        "LEDGER_PARTITIONS, LEDGER_CONSUMER_GROUP, LEDGER_BATCH_SIZE, "
        "LEDGER_CHECKPOINT_INTERVAL_S, LEDGER_LOG_ID, LEDGER_KAFKA_IDEMPOTENCE, "
        "LEDGER_SESSION_TIMEOUT_S, LEDGER_FETCH_MAX_WAIT_MS, LEDGER_INTEGRITY, " + _TRANSPORT,
        "exit status: 0 stopped by a signal, 2 usage or configuration error or the "
        "database unusable at start, other non-zero: it crashed (restart it: it resumes "
        "where the database says it stopped)",
    )  # fmt: skip
    worker.set_defaults(run=_worker)

    api = _command(
        commands, "api", "run the HTTP API",
        "Run the HTTP API (docs at /docs once it runs). Stateless: run as many as you like.",
        "LEDGER_DATABASE_URL (required), LEDGER_KAFKA_BOOTSTRAP (publishing, readiness, "
        "lag), LEDGER_API_HOST, LEDGER_API_PORT, LEDGER_MASTER_KEY_FILE or "
        "LEDGER_MASTER_KEY (required), LEDGER_PUBLIC_KEY_FILE or LEDGER_SIGNING_KEY_FILE, "
        "LEDGER_POLICY, LEDGER_EVENTS_TOPIC, LEDGER_KAFKA_IDEMPOTENCE, "
        "LEDGER_MAX_REQUEST_BYTES, LEDGER_CHECKPOINT_INTERVAL_S, LEDGER_LOG_ID, " + _TRANSPORT,
        "exit status: 0 stopped by a signal, 2 usage or configuration error",
    )  # fmt: skip
    api.set_defaults(run=_api)

    publish = _command(
        commands, "publish", "send a JSON Lines file's events to ledger.events",
        "Send a JSON Lines file's events to the events topic, keyed by subject. Without "
        "--raw each line is checked first and refused lines are reported, not sent.",
        "LEDGER_KAFKA_BOOTSTRAP (required), LEDGER_EVENTS_TOPIC, LEDGER_KAFKA_IDEMPOTENCE "
        "(set it to false against the embedded broker of `consent-ledger dev`), " + _TRANSPORT,
        "exit status: 0 all sent, 1 lines refused (not sent), 2 usage or broker error",
    )  # fmt: skip
    publish.add_argument("events", type=Path, help="JSON Lines file, one CloudEvent per line")
    publish.add_argument("--raw", action="store_true", help="send every non-blank line as it is")
    publish.set_defaults(run=_publish)

    migrate = _command(
        commands, "migrate", "apply the database migrations (run as the owner role in production)",
        "Apply the database schema's migrations that are not applied yet (every process "
        "also does at start; in production run this as the owner role).",
        "LEDGER_DATABASE_URL (required)",
        "exit status: 0 applied or up to date, 2 usage error or the database unreachable",
    )  # fmt: skip
    migrate.set_defaults(run=_migrate)

    verify = _command(
        commands, "verify",
        "recompute every Merkle log from the stored entries and check every checkpoint",
        "Recompute every partition's Merkle log from the stored ledger entries, check every "
        "stored checkpoint and every --trusted-checkpoint against them and the public key, "
        "name the first divergence, and say per partition how many entries a signed "
        "checkpoint covers and how many follow it unsigned.",
        "LEDGER_DATABASE_URL (required), LEDGER_PUBLIC_KEY_FILE or LEDGER_SIGNING_KEY_FILE "
        "(when --public-key is not given)",
        "exit status: 0 the ledger matches its checkpoints and some are signed, 1 it does not "
        "(tampering, a forged checkpoint, a kept tree no longer held), or no checkpoint covers "
        "any entry (with --require-signed: any entry is unsigned), 2 usage error or the ledger "
        "could not be read",
    )  # fmt: skip
    verify.add_argument("--public-key", type=Path, action="append",
                        help="a public key of the ledger: PEM, or the JSON of GET "
                        "/v1/ledger/public-key (every key it lists); repeatable: each checkpoint "
                        "is checked with the key it names; default: LEDGER_PUBLIC_KEY_FILE, else "
                        "derived from LEDGER_SIGNING_KEY_FILE")  # fmt: skip
    verify.add_argument("--trusted-checkpoint", type=Path, action="extend", nargs="+", default=[],
                        metavar="FILE", help="checkpoints kept outside the database (`checkpoint "
                        "save`, a witness, the topic): the ledger must still hold every tree "
                        "each signed; one or more files, and repeatable")  # fmt: skip
    verify.add_argument("--require-signed", action="store_true",
                        help="also fail when entries follow the latest checkpoint unsigned")  # fmt: skip
    verify.set_defaults(run=_verify)

    rebuild = _command(
        commands, "rebuild", "recompute the read models from the ledger and compare them",
        "Recompute every read model (consent changes, current consents, disclosures, "
        "erasures, violations with their status, the accepted and rejected counts) from the "
        "ledger's entries in ingest order with the worker's own core, list each row where "
        "the live ones differ, and with --swap replace the live ones in one transaction "
        "(running workers wait for it). Erased subjects stay erased: their violations are "
        "kept as recorded.",
        "LEDGER_DATABASE_URL (required), LEDGER_MASTER_KEY_FILE or LEDGER_MASTER_KEY "
        "(required), LEDGER_POLICY (the worker's), LEDGER_EVENTS_TOPIC",
        "exit status: 0 the live read models equal the rebuilt ones, 1 they differed (with "
        "--swap: and were replaced), 2 usage error, or the ledger could not be read or "
        "replayed (nothing changed)",
    )  # fmt: skip
    rebuild.add_argument("--swap", action="store_true",
                         help="replace the live read models with the rebuilt ones")  # fmt: skip
    rebuild.set_defaults(run=_rebuild)

    policy = _command(
        commands, "policy", "publish a policy version to the running service, or list them",
        "Policy versions of the running service (CONTRACT §9). `policy publish FILE` checks "
        "the file against every version in force, stores it append-only with its SHA-256, "
        "records that hash in the ledger's policy log (signed by the next checkpoint) and "
        "has the workers re-judge what is dated at or after its effective_from. "
        "`policy versions` lists the published versions.",
        "LEDGER_DATABASE_URL (required), LEDGER_POLICY (the configured versions the new one "
        "must not clash with)",
        "exit status: 0 published or listed, 2 usage, policy or database error",
    )  # fmt: skip
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    policy_publish = policy_commands.add_parser("publish", help="publish a policy version")
    policy_publish.add_argument("file", type=Path, help="the version's policy YAML")
    policy_publish.add_argument("--publisher", default=getpass.getuser(),
                                help="who publishes it (default: the user running this)")  # fmt: skip
    policy_publish.set_defaults(run=_policy_publish)
    policy_versions = policy_commands.add_parser("versions", help="list the published versions")
    policy_versions.add_argument("--json", action="store_true", help="print one JSON document")
    policy_versions.set_defaults(run=_policy_versions)

    whatif = _command(
        commands, "whatif", "what a draft policy would change over the recorded history",
        "Judge the recorded history under the current policy and under a draft, and print "
        "the violations that would open and those that would close, counted by rule, clause "
        "and recipient, with examples; nothing is written. Over a JSON Lines file (offline, "
        "as check) when EVENTS is given, else over the ledger's database. A draft file with "
        "effective_from joins the current versions from then on; one without replaces the "
        "policy; a folder of versions is the whole draft.",
        "LEDGER_POLICY (the current policy when --policy is not given); over the database: "
        "LEDGER_DATABASE_URL and LEDGER_MASTER_KEY_FILE or LEDGER_MASTER_KEY (required)",
        "exit status: 0 the draft changes nothing, 1 it would open or close violations, "
        "2 usage, policy or database error",
    )  # fmt: skip
    whatif.add_argument("--draft", type=Path, required=True,
                        help="the draft: a policy YAML, or a folder of versions")  # fmt: skip
    whatif.add_argument("events", type=Path, nargs="?",
                        help="JSON Lines file of events (default: the ledger's database)")  # fmt: skip
    whatif.add_argument("--policy", type=Path,
                        help="the current policy over a file: YAML or a folder of versions "
                             "(default: LEDGER_POLICY, else the reference policy)")  # fmt: skip
    whatif.add_argument("--json", action="store_true", help="print one JSON document")
    whatif.set_defaults(run=_whatif)

    checkpoint = _command(
        commands, "checkpoint", "keep signed checkpoints outside the ledger (for verify)",
        "Keep copies of the ledger's signed checkpoints where its operators cannot change "
        "them: `checkpoint save FILE` writes the latest, which `verify --trusted-checkpoint "
        "FILE` holds the ledger to later.",
        "see `consent-ledger checkpoint save --help`",
        "exit status: that of the action",
    )  # fmt: skip
    checkpoint_commands = checkpoint.add_subparsers(dest="action", required=True, metavar="ACTION")
    save = _command(
        checkpoint_commands, "save",
        "fetch the latest signed checkpoint from the API, check it, write it to FILE",
        "Fetch GET /v1/ledger/checkpoints/latest, check its signature under the public key "
        "you pinned (never one the API hands out), and write it to FILE, which must not exist "
        "yet. Later, `verify --trusted-checkpoint FILE` fails when the ledger no longer holds "
        "what it signed.",
        "LEDGER_API_URL (else http://LEDGER_API_HOST:LEDGER_API_PORT; --api wins), "
        "LEDGER_TOKEN (sent as bearer token, if set), LEDGER_PUBLIC_KEY_FILE or "
        "LEDGER_SIGNING_KEY_FILE (when --public-key is not given)",
        "exit status: 0 saved, 1 the checkpoint's signature does not hold (nothing written), "
        "2 usage error, the API unreachable or refusing, or FILE exists",
    )  # fmt: skip
    save.add_argument("file", type=Path, help="where to keep it (a new file)")
    save.add_argument("--api", help="the API's base URL (default: LEDGER_API_URL, else "
                      "http://LEDGER_API_HOST:LEDGER_API_PORT)")  # fmt: skip
    save.add_argument("--public-key", type=Path, help="the ledger's public key: PEM, or the "
                      "JSON of GET /v1/ledger/public-key, checked out of band; default: "
                      "LEDGER_PUBLIC_KEY_FILE")  # fmt: skip
    save.set_defaults(run=_checkpoint_save)

    from consent_ledger.key_commands import add_key_commands

    add_key_commands(commands)
    commands.choices["keys"].set_defaults(run=_keys)

    verify_proof = _command(
        commands, "verify-proof", "check a saved inclusion or consistency proof offline",
        "Check a proof document saved from the API (inclusion or consistency) offline, "
        "with the ledger's public key: no database, no network.",
        "none (the key comes from --public-key)",
        "exit status: 0 the proof holds, 1 it does not, 2 usage error",
    )  # fmt: skip
    verify_proof.add_argument("proof", type=Path, help="proof document (JSON) from the API")
    verify_proof.add_argument(
        "--public-key",
        type=Path,
        action="append",
        required=True,
        help="a public key of the ledger: PEM, or the JSON of GET /v1/ledger/public-key "
        "(every key it lists); repeatable: each checkpoint is checked with the key it names",
    )
    verify_proof.add_argument("--trusted-checkpoint", type=Path, metavar="FILE",
                              help="a checkpoint kept outside the database: an inclusion proof "
                              "must be against the tree it signed, a consistency proof must "
                              "start or end at it")  # fmt: skip
    verify_proof.set_defaults(run=_verify_proof)

    from consent_ledger.token_commands import add_token_commands

    add_token_commands(commands)
    commands.choices["token"].set_defaults(run=_token)
    return parser


def _configure_logging() -> None:
    from consent_ledger.log import configure_logging  # structlog: not needed by check

    configure_logging()


def _settings() -> Settings:
    try:
        settings = Settings.from_env()
        if settings.kafka_security_protocol != "PLAINTEXT":
            from consent_ledger.kafka import kafka_security

            kafka_security(settings)  # an unreadable password or CA file: one line, now
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    return settings


def _dev(args: argparse.Namespace) -> int:
    from consent_ledger.devtools.dev import DevStack, missing_embedded

    settings = _settings()  # a configuration error is one line, before any logging
    _configure_logging()
    if args.data_dir is not None:
        settings = settings.with_(data_dir=args.data_dir)
    if args.partitions is not None:
        settings = settings.with_(partitions=args.partitions)
    missing = missing_embedded(settings)
    if missing is not None:
        raise UsageError(missing)
    load_policy_versions(settings.policy_path)  # refuse a bad policy before starting anything
    return DevStack(settings, demo=args.demo, workers=args.workers).run()


def _worker(args: argparse.Namespace) -> int:
    from consent_ledger.worker.app import WorkerNotReady, run_worker

    settings = _settings()  # a configuration error is one line, before any logging
    _configure_logging()
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

    settings = _settings()  # a configuration error is one line, before any logging
    _configure_logging()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")
    asyncio.run(serve(settings))
    return EXIT_OK


def _public_key(paths: Sequence[Path] | None, settings: Settings) -> list[Ed25519PublicKey]:
    """The public keys given (each --public-key: a PEM file, or the JSON of GET
    /v1/ledger/public-key with every key it lists), else the configured one."""
    from consent_ledger.integrity.checkpoints import load_public_key, load_signing_key

    try:
        if paths:
            return [
                load_public_key(pem)
                for path in paths
                for pem in _public_key_pems(path.read_bytes())
            ]
        if settings.public_key_file is not None:
            return [
                load_public_key(pem)
                for pem in _public_key_pems(settings.public_key_file.read_bytes())
            ]
        if settings.signing_key_file is not None:
            return [load_signing_key(Path(settings.signing_key_file)).public_key()]
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the public key: {exc}") from None
    raise UsageError(
        "give --public-key FILE, or set LEDGER_PUBLIC_KEY_FILE or LEDGER_SIGNING_KEY_FILE"
    )


def _public_key_pems(content: bytes) -> list[bytes]:
    """A PEM file's content, or every PEM inside what GET /v1/ledger/public-key
    answered (``keys``, one per signing key, else the single ``public_key_pem``)."""
    if not content.lstrip().startswith(b"{"):
        return [content]
    try:
        document = orjson.loads(content)
        listed = document.get("keys")
        pems = [key["public_key_pem"] for key in listed] if listed else [document["public_key_pem"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"a JSON key file needs public_key_pem ({exc!r})") from None
    if not all(isinstance(pem, str) for pem in pems):
        raise ValueError("public_key_pem must be a string")
    return [pem.encode("ascii", "replace") for pem in pems]


def _migrate(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from consent_ledger.store.migrate import migrate

    settings = _settings()  # a configuration error is one line, before any logging
    _configure_logging()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")

    async def run() -> list[str]:
        connection = await asyncpg.connect(settings.database_url)
        try:
            return await migrate(connection)
        finally:
            await connection.close()

    try:
        applied = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UsageError(f"cannot migrate the database: {type(exc).__name__}: {exc}") from None
    sys.stdout.write(f"applied {', '.join(applied)}\n" if applied else "the schema is up to date\n")
    return EXIT_OK


def _token(args: argparse.Namespace) -> int:
    from consent_ledger.log import configure_logging
    from consent_ledger.token_commands import TokenCommandError, run_token_command

    configure_logging("warning")  # stdout is for what the command prints; the token last
    try:
        return run_token_command(args, _settings())
    except TokenCommandError as exc:
        raise UsageError(str(exc)) from None


def _verify(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from consent_ledger.store.audit_reads import verify_ledger

    settings = _settings()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")
    public_key = _public_key(args.public_key, settings)
    trusted = [_trusted_checkpoint(path) for path in args.trusted_checkpoint]

    async def run() -> Any:
        connection = await asyncpg.connect(settings.database_url)
        try:
            # One snapshot for every statement: a running worker's commit between
            # reading the Merkle logs and the entries would look like tampering.
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                return await verify_ledger(connection, public_key, trusted)
        finally:
            await connection.close()

    try:
        report = asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # Exit 2, not 1: the ledger could not be read, which says nothing of tampering.
        raise UsageError(f"cannot read the ledger: {type(exc).__name__}: {exc}") from None
    out = sys.stdout
    for number in report.forged_checkpoints:
        other = report.signed_by_other_key.get(number)
        if other is not None:
            out.write(
                f"checkpoint {number}: signed by key {other}, which was not given: cannot be "
                "checked (give every key: --public-key again, or the JSON of "
                "GET /v1/ledger/public-key)\n"
            )
        else:
            out.write(f"checkpoint {number}: signature does not verify: forged or altered\n")
    for source, problem in report.untrusted:
        out.write(f"trusted checkpoint {source}: {problem}\n")
    for divergence in report.divergences:
        out.write(f"DIVERGES: {divergence}\n")
    for source, lost in report.trees_not_held:
        out.write(f"NOT HELD: {lost.describe()} ({source})\n")
    summary = (
        f"{report.entries} entries in {report.partitions} partitions, "
        f"{report.checkpoints} checkpoints; {report.signed_entries} signed, "
        f"{report.unsigned_entries} unsigned"
    )
    status = EXIT_OK
    if not report.ok:
        out.write(f"FAILED: {summary}\n")
        status = EXIT_VIOLATIONS
    elif report.signed_entries == 0:
        out.write(
            f"UNSIGNED: {summary}: no signed checkpoint covers any entry, so this proves "
            "nothing to an outsider\n"
        )
        status = EXIT_VIOLATIONS
    elif args.require_signed and report.unsigned_entries:
        out.write(
            f"UNSIGNED: {summary}: {report.unsigned_entries} entries follow the latest "
            "checkpoint unsigned (--require-signed)\n"
        )
        status = EXIT_VIOLATIONS
    else:
        out.write(f"OK: {summary}\n")
    for coverage in report.coverage:
        out.write(f"  {coverage.describe()}\n")
    return status


def _checkpoint_save(args: argparse.Namespace) -> int:
    from consent_ledger.checkpoint_keeping import (
        CheckpointNotFetched,
        CheckpointNotTrusted,
        save_latest_checkpoint,
    )

    settings = _settings()
    # The pinned key: the last one given (the current key, in the API's JSON of them).
    public_key = _public_key([args.public_key] if args.public_key else None, settings)[-1]
    try:
        saved = save_latest_checkpoint(
            args.api or settings.api_base_url, settings.token, public_key, args.file
        )
    except CheckpointNotTrusted as exc:
        sys.stdout.write(f"NOT SAVED: {exc}\n")
        return EXIT_VIOLATIONS
    except (CheckpointNotFetched, FileExistsError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.file}: {exc.strerror or exc}") from None
    sys.stdout.write(f"{saved.describe()}\n")
    return EXIT_OK


def _trusted_checkpoint(path: Path) -> TrustedCheckpoint:
    from consent_ledger.integrity.trust import parse_trusted_checkpoint

    try:
        return parse_trusted_checkpoint(path.read_bytes(), str(path))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _rebuild(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from consent_ledger.errors import RebuildError
    from consent_ledger.integrity.keyring import MasterKeyError, load_keyring
    from consent_ledger.store.rebuild import rebuild_read_models

    settings = _settings()
    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")
    try:
        keyring = load_keyring(settings.master_key_file, settings.master_key)
    except MasterKeyError as exc:
        raise UsageError(str(exc)) from None
    policy = load_policy_versions(settings.policy_path)  # judge as the worker judges
    database_url = settings.database_url

    async def run() -> Any:
        connection = await asyncpg.connect(database_url)
        try:
            return await rebuild_read_models(
                connection, keyring, policy, settings.events_topic, swap=args.swap
            )
        finally:
            await connection.close()

    try:
        report = asyncio.run(run())
    except RebuildError as exc:
        raise UsageError(f"cannot rebuild: {exc}") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UsageError(f"cannot read the ledger: {type(exc).__name__}: {exc}") from None
    for difference in [*report.differences, *report.count_differences]:
        sys.stdout.write(f"DIFFERS: {difference.describe()}\n")
    rows = ", ".join(f"{count} {table}" for table, count in report.rows.items())
    sys.stdout.write(
        f"replayed {report.entries} entries of {report.subjects} subjects in "
        f"{report.seconds:.1f} s: {rows}; {report.erased_subjects} erased subjects, whose "
        f"{report.carried_violations} violations are kept as recorded\n"
    )
    found = len(report.differences) + len(report.count_differences)
    if report.equal:
        sys.stdout.write("OK: the live read models equal the ledger's\n")
    elif report.swapped:
        sys.stdout.write(
            f"REPLACED: {found} differences; the live read models now equal the ledger's\n"
        )
    else:
        sys.stdout.write(f"FAILED: {found} differences; nothing changed (--swap replaces them)\n")
    return EXIT_OK if report.equal else EXIT_VIOLATIONS


def _with_database(settings: Settings, work: Any) -> Any:
    """Run ``await work(connection)`` on a migrated connection to the ledger's database."""
    import asyncio

    import asyncpg

    from consent_ledger.store.migrate import migrate

    if not settings.database_url:
        raise UsageError("set LEDGER_DATABASE_URL")

    async def run() -> Any:
        connection = await asyncpg.connect(settings.database_url)
        try:
            await migrate(connection)
            return await work(connection)
        finally:
            await connection.close()

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise UsageError(f"database error: {type(exc).__name__}: {exc}") from None


def _policy_publish(args: argparse.Namespace) -> int:
    from consent_ledger.store.policy_versions import publish_version

    settings = _settings()
    configured = load_policy_versions(settings.policy_path)
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from None
    published = _with_database(
        settings,
        lambda connection: publish_version(
            connection, configured, text, args.publisher, str(args.file)
        ),
    )
    since = (
        format_micros(published.effective_from_us)
        if published.effective_from_us is not None
        else "always"
    )
    sys.stdout.write(
        f"published version {published.version} (revision {published.revision}, in force "
        f"from {since}) sha256 {published.sha256.hex()}; ledger entry {published.event_id}; "
        "the workers re-judge what is dated at or after it\n"
    )
    return EXIT_OK


def _policy_versions(args: argparse.Namespace) -> int:
    from consent_ledger.store.policy_versions import published_versions

    versions = _with_database(_settings(), published_versions)
    documents = [item.document() for item in versions]
    if args.json:
        sys.stdout.buffer.write(orjson.dumps({"items": documents}, option=orjson.OPT_INDENT_2))
        sys.stdout.write("\n")
        return EXIT_OK
    for item in documents:
        sys.stdout.write(
            f"{item['revision']}\t{item['version']}\t{item['effective_from'] or 'always'}\t"
            f"{item['sha256']}\t{item['publisher']}\t{item['published_at']}\n"
        )
    if not documents:
        sys.stdout.write("no version published (the configured ones are in force)\n")
    return EXIT_OK


def _whatif(args: argparse.Namespace) -> int:
    from consent_ledger.core.whatif import whatif_lines, with_draft

    settings = _settings()
    draft = load_policy_versions(args.draft)
    if args.events is not None:
        current = load_policy_versions(args.policy or settings.policy_path)
        try:
            with args.events.open("rb") as lines:
                answer = whatif_lines(
                    lines, current, with_draft(current, draft, folder=args.draft.is_dir())
                )
        except OSError as exc:
            raise UsageError(f"cannot read {args.events}: {exc.strerror or exc}") from None
    else:
        if args.policy is not None:
            raise UsageError("--policy names the current policy of EVENTS; give EVENTS too")
        answer = _with_database(settings, _whatif_recorded(settings, draft, args.draft.is_dir()))
    document = answer.document()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        sys.stdout.write("\n")
    else:
        counts = document["counts"]
        sys.stdout.write(
            f"under the draft {counts['would_open']} violations would open and "
            f"{counts['would_close']} would close ({counts['open_now']} open now, "
            f"{counts['open_under_draft']} under the draft)\n"
        )
        for name in ("by_rule", "by_clause", "by_recipient"):
            for group, changed in counts[name].items():
                sys.stdout.write(
                    f"  {name[3:]} {group}: +{changed['would_open']} -{changed['would_close']}\n"
                )
    return EXIT_VIOLATIONS if document["would_open"] or document["would_close"] else EXIT_OK


def _whatif_recorded(settings: Settings, draft: Any, folder: bool) -> Any:
    """The database what-if as a unit of work for :func:`_with_database`."""
    from consent_ledger.core.whatif import with_draft
    from consent_ledger.integrity.keyring import MasterKeyError, load_keyring
    from consent_ledger.store.policy_versions import (
        published_versions,
        sealed_data_opener,
        versions_with,
    )
    from consent_ledger.store.whatif_reads import whatif_recorded

    try:
        keyring = load_keyring(settings.master_key_file, settings.master_key)
    except MasterKeyError as exc:
        raise UsageError(str(exc)) from None
    configured = load_policy_versions(settings.policy_path)

    async def work(connection: Any) -> Any:
        current = versions_with(configured, await published_versions(connection))
        return await whatif_recorded(
            connection, current, with_draft(current, draft, folder=folder),
            sealed_data_opener(keyring),
        )  # fmt: skip

    return work


def _keys(args: argparse.Namespace) -> int:
    from consent_ledger.key_commands import KeyCommandError, run_key_command

    try:
        return run_key_command(args, _settings())
    except KeyCommandError as exc:
        raise UsageError(str(exc)) from None


def _verify_proof(args: argparse.Namespace) -> int:
    from consent_ledger.integrity.proofs import (
        verify_consistency_document,
        verify_inclusion_document,
    )

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
    if result.ok and args.trusted_checkpoint is not None:
        problem = _anchor(document, args.trusted_checkpoint, public_key)
        if problem is not None:
            sys.stdout.write(f"FAILED: {result.detail}; but {problem}\n")
            return EXIT_VIOLATIONS
        result = result.success(f"{result.detail}; anchored in {args.trusted_checkpoint}")
    sys.stdout.write(f"{'OK' if result.ok else 'FAILED'}: {result.detail}\n")
    return EXIT_OK if result.ok else EXIT_VIOLATIONS


def _anchor(
    document: dict[str, Any], path: Path, public_keys: list[Ed25519PublicKey]
) -> str | None:
    """Why a verified proof document does not reach the trusted checkpoint at ``path``."""
    from consent_ledger.integrity.checkpoints import SignedCheckpoint, verify_checkpoint
    from consent_ledger.integrity.proofs import keys_by_id
    from consent_ledger.integrity.trust import anchor_consistency, anchor_inclusion

    kept = _trusted_checkpoint(path)
    key = keys_by_id(public_keys).get(kept.signed.key_id)
    if key is None or not verify_checkpoint(kept.signed, key):
        return f"the trusted checkpoint {path} does not verify under the keys given"
    if "old_checkpoint" in document:
        old = SignedCheckpoint.from_json_dict(document["old_checkpoint"])
        new = SignedCheckpoint.from_json_dict(document["new_checkpoint"])
        return anchor_consistency(old, new, kept.signed)
    proved = SignedCheckpoint.from_json_dict(document["checkpoint"])
    return anchor_inclusion(proved, document["partition"], kept.signed)


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
