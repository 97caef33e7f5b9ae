"""``token create|list|revoke``: the API's bearer tokens (CONTRACT §7), in
token_commands.py; this registers them and turns their errors into usage errors."""

from __future__ import annotations

import argparse

from consent_ledger.cli.command import Commands, UsageError, settings_from_env


def add_token(commands: Commands) -> None:
    from consent_ledger.token_commands import add_token_commands

    add_token_commands(commands)
    commands.choices["token"].set_defaults(run=_token)


def _token(args: argparse.Namespace) -> int:
    from consent_ledger.log import configure_logging
    from consent_ledger.token_commands import TokenCommandError, run_token_command

    configure_logging("warning")  # stdout is for what the command prints; the token last
    try:
        return run_token_command(args, settings_from_env())
    except TokenCommandError as exc:
        raise UsageError(str(exc)) from None
