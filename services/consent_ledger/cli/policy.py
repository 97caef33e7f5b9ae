"""The commands over the policy in force: ``policy publish`` and ``policy
versions`` (the versions of the running service, CONTRACT §9) and ``whatif``
(what a draft would change over the recorded history, nothing written)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from consent_ledger.cli.command import (
    EXIT_OK,
    EXIT_VIOLATIONS,
    Commands,
    UsageError,
    add_command,
    on_database,
    settings_from_env,
    write_json,
)
from consent_ledger.core.policy import load_policy_versions
from consent_ledger.core.timestamps import format_micros
from consent_ledger.settings import Settings


def add_policy(commands: Commands) -> None:
    policy = add_command(
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


def add_whatif(commands: Commands) -> None:
    whatif = add_command(
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


def _policy_publish(args: argparse.Namespace) -> int:
    from consent_ledger.store.policy_versions import publish_version

    settings = settings_from_env()
    configured = load_policy_versions(settings.policy_path)
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from None
    published = on_database(
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

    versions = on_database(settings_from_env(), published_versions)
    documents = [item.document() for item in versions]
    if args.json:
        write_json({"items": documents})
        return EXIT_OK
    sys.stdout.write(version_table(documents))
    return EXIT_OK


VERSION_COLUMNS = ("revision", "version", "effective_from", "sha256", "publisher", "published_at")


def version_table(documents: list[dict[str, Any]]) -> str:
    """The published versions as tab-separated rows under a header line naming
    the columns (the ``--json`` keys), so a reader knows what each is and a
    script can still ``cut -f``; a line saying so when none is published."""
    if not documents:
        return "no version published (the configured ones are in force)\n"
    rows = ["\t".join(VERSION_COLUMNS)]
    for item in documents:
        cells = {**item, "effective_from": item["effective_from"] or "always"}
        rows.append("\t".join(str(cells[column]) for column in VERSION_COLUMNS))
    return "".join(f"{row}\n" for row in rows)


def _whatif(args: argparse.Namespace) -> int:
    from consent_ledger.core.whatif import whatif_lines, with_draft

    settings = settings_from_env()
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
        answer = on_database(settings, _whatif_recorded(settings, draft, args.draft.is_dir()))
    document = answer.document()
    if args.json:
        write_json(document)
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
    """The database what-if as a unit of work for :func:`on_database`."""
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
