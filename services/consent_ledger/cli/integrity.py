"""The commands that hold the ledger to its proofs: ``verify`` (the whole
ledger against its checkpoints), ``verify-proof`` (one saved proof, offline),
``checkpoint save`` (a signed checkpoint kept outside the ledger) and ``keys``
(rotating the master and the signing key, in key_commands.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from consent_ledger.cli.command import (
    EXIT_OK,
    EXIT_VIOLATIONS,
    Commands,
    UsageError,
    add_command,
    settings_from_env,
)
from consent_ledger.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from consent_ledger.integrity.trust import TrustedCheckpoint


def add_verify(commands: Commands) -> None:
    verify = add_command(
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


def add_checkpoint(commands: Commands) -> None:
    checkpoint = add_command(
        commands, "checkpoint", "keep signed checkpoints outside the ledger (for verify)",
        "Keep copies of the ledger's signed checkpoints where its operators cannot change "
        "them: `checkpoint save FILE` writes the latest, which `verify --trusted-checkpoint "
        "FILE` holds the ledger to later.",
        "see `consent-ledger checkpoint save --help`",
        "exit status: that of the action",
    )  # fmt: skip
    checkpoint_commands = checkpoint.add_subparsers(dest="action", required=True, metavar="ACTION")
    save = add_command(
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


def add_keys(commands: Commands) -> None:
    from consent_ledger.key_commands import add_key_commands

    add_key_commands(commands)
    commands.choices["keys"].set_defaults(run=_keys)


def add_verify_proof(commands: Commands) -> None:
    verify_proof = add_command(
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


def _trusted_checkpoint(path: Path) -> TrustedCheckpoint:
    from consent_ledger.integrity.trust import parse_trusted_checkpoint

    try:
        return parse_trusted_checkpoint(path.read_bytes(), str(path))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _verify(args: argparse.Namespace) -> int:
    import asyncio

    import asyncpg

    from consent_ledger.store.audit_reads import verify_ledger

    settings = settings_from_env()
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
    for kept in report.trusted_still_held:
        out.write(f"{trusted_checkpoint_held_line(kept)}\n")
    return status


MAX_PARTITIONS_NAMED = 6  # beyond, the held line gives totals: it stays one line


def trusted_checkpoint_held_line(kept: TrustedCheckpoint) -> str:
    """The line saying a ``--trusted-checkpoint`` was checked and still holds:
    without it the output would read as if the option had not been given."""
    checkpoint = kept.signed.checkpoint
    issued = checkpoint.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    heads = checkpoint.tree_heads
    if not heads:
        trees = "it signed no partition"
    elif len(heads) <= MAX_PARTITIONS_NAMED:
        first, *rest = heads
        trees = ", ".join(
            [f"partition {first.partition}: {first.size} entries"]
            + [f"{head.partition}: {head.size}" for head in rest]
        )
    else:
        trees = f"{len(heads)} partitions, {sum(head.size for head in heads)} entries"
    return (
        f"trusted checkpoint {kept.source} (issued {issued}, key {kept.signed.key_id}): "
        f"every partition still holds its signed tree ({trees})"
    )


def _checkpoint_save(args: argparse.Namespace) -> int:
    from consent_ledger.checkpoint_keeping import (
        CheckpointNotFetched,
        CheckpointNotTrusted,
        save_latest_checkpoint,
    )

    settings = settings_from_env()
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


def _keys(args: argparse.Namespace) -> int:
    from consent_ledger.key_commands import KeyCommandError, run_key_command

    try:
        return run_key_command(args, settings_from_env())
    except KeyCommandError as exc:
        raise UsageError(str(exc)) from None


def _verify_proof(args: argparse.Namespace) -> int:
    from consent_ledger.integrity.proofs import (
        verify_consistency_document,
        verify_inclusion_document,
    )

    public_key = _public_key(args.public_key, settings_from_env())
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
