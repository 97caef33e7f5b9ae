"""The ``consent-ledger`` command: a thin shell over the core and the adapters.

Exit status: 0 when all is well (``check``: nothing open), 1 when ``check``
finds open violations, ``publish`` refused lines, ``verify`` finds tampering or
nothing signed, or a checkpoint or proof does not verify, 2 on a usage, file,
policy or connection error. Heavy imports (faust, the web framework) happen inside the
command that needs them, so ``check`` starts fast.

One module per group of commands, each a composition root per subcommand:
event_files (check, publish), service (dev, worker, api, migrate), integrity
(verify, checkpoint, keys, verify-proof), read_models (rebuild), policy (policy,
whatif), access (token), report (report); command holds what they share. A new subcommand is a
module with an ``add_NAME(commands)`` that defines its arguments and sets
``run``, and one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from consent_ledger import __version__
from consent_ledger.cli import (
    access,
    event_files,
    integrity,
    policy,
    read_models,
    report,
    service,
)
from consent_ledger.cli.command import (
    EXIT_OK,
    EXIT_USAGE,
    EXIT_VIOLATIONS,
    Commands,
    UsageError,
)
from consent_ledger.core.policy import PolicyError
from consent_ledger.settings import SettingsError

__all__ = ["COMMANDS", "EXIT_OK", "EXIT_USAGE", "EXIT_VIOLATIONS", "UsageError", "main"]

COMMANDS: tuple[Callable[[Commands], None], ...] = (
    # in the order `consent-ledger --help` lists them
    event_files.add_check,
    service.add_dev,
    service.add_worker,
    service.add_api,
    event_files.add_publish,
    service.add_migrate,
    integrity.add_verify,
    read_models.add_rebuild,
    policy.add_policy,
    policy.add_whatif,
    integrity.add_checkpoint,
    integrity.add_keys,
    integrity.add_verify_proof,
    access.add_token,
    report.add_report,
)
"""Every subcommand's registration: it adds its parser and sets ``run``, the
function of the parsed arguments that returns the exit status."""


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
    for add in COMMANDS:
        add(commands)
    return parser
