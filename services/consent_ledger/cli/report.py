"""``report SUBJECT``: the subject access report (GDPR Art. 15, CONTRACT §8) of
one subject, fetched from the running API as a privacy officer and written as
it came: an HTML document to send or print, or its JSON.

Through the API rather than the database, like ``token`` without a database:
the API checks the caller's role and records the access in its access log, with
``--purpose`` as the reason given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import quote

from consent_ledger.cli.command import Commands, UsageError, add_command, settings_from_env

ACCEPT = {"html": "text/html", "json": "application/json"}


def add_report(commands: Commands) -> None:
    report = add_command(
        commands, "report", "the subject access report of one subject (GDPR Art. 15)",
        "Fetch the subject access report of SUBJECT from the running API (GET "
        "/v1/subjects/SUBJECT/report): every consent given and withdrawn, every disclosure "
        "with its recipient named, purpose, data categories, legal basis and verdict, the "
        "violations about the subject, or only the erasure, and the ledger's latest signed "
        "checkpoint with how to check the report against it. HTML (default) is a "
        "self-contained document that prints to PDF from a browser. The API records the "
        "access in its access log.",
        "LEDGER_TOKEN (a privacy officer's or an admin's; required), LEDGER_API_URL "
        "(default http://LEDGER_API_HOST:LEDGER_API_PORT)",
        "exit status: 0 written, 2 usage error, or the API refused or could not be reached",
    )  # fmt: skip
    report.add_argument("subject", metavar="SUBJECT", help="the subject id, as events name it")
    report.add_argument("--format", choices=tuple(ACCEPT), default="html",
                        help="html (default): a document to send or print; json")  # fmt: skip
    report.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write to FILE (mode 0600: it holds personal data) instead of "
                             "standard output")  # fmt: skip
    report.add_argument("--purpose", help="why it is read, sent as X-Purpose for the access log")
    report.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> int:
    from consent_ledger.api_client import ApiCallFailed, fetch_from_api

    if not args.subject.strip():
        raise UsageError("SUBJECT is empty; name a subject")
    path = f"/v1/subjects/{quote(args.subject, safe='')}/report?format={args.format}"
    headers = {"X-Purpose": args.purpose} if args.purpose else {}
    try:
        content = fetch_from_api(
            settings_from_env(), "GET", path, accept=ACCEPT[args.format], headers=headers
        )
    except ApiCallFailed as exc:
        raise UsageError(str(exc)) from None
    if args.output is None:
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
    else:
        _write_private(args.output, content)
        sys.stderr.write(f"wrote the report of {args.subject!r} to {args.output}\n")
    return 0


def _write_private(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path``, readable by its owner only (a report names
    a person's data); an existing file is replaced."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            # An existing file keeps its mode on open: narrow it before the report
            # is in it, not after (others could read it meanwhile, or for good if
            # the write failed).
            os.fchmod(file.fileno(), 0o600)
            file.write(content)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from None
