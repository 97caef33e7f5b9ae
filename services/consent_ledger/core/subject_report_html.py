"""The subject report as a document a privacy officer can send (CONTRACT §8).

One self-contained HTML page: the stylesheet inline, no script, no image, no
font, no link to fetch, so that it reads the same saved to a file, opened from
the dashboard or printed to PDF from a browser (``@media print``: A4, each part
on a page of its own, table headers repeated, no colour needed to read a
verdict). It is titled with the subject id, dated in UTC, and carries the
ledger's latest signed checkpoint with the steps to check it later.

Every value from the ledger goes through :func:`html.escape`: a subject id or
a recipient name is data an upstream system chose, and ``<script>`` in one must
come out as text. The page's own Content-Security-Policy (:data:`REPORT_CSP`,
also sent as a header by the API) allows nothing but this stylesheet, by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from html import escape
from typing import Final

from consent_ledger.core.subject_report import (
    Clause,
    ConsentEntry,
    DisclosureEntry,
    LatestCheckpoint,
    SubjectReport,
    ViolationEntry,
    VisitEntry,
)
from consent_ledger.core.timestamps import format_micros

POLICY_LOG_PARTITION: Final = 2**31 - 1  # store/policy_versions.py: the policy log's number

STYLE: Final = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6574; --rule: #d5dae1; --bad: #9b1c1c; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 62rem; padding: 2rem 1.5rem 3rem; color: var(--ink);
  font: 10.5pt/1.45 "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans", sans-serif; }
header { border-bottom: 2px solid var(--ink); padding-bottom: .8rem; margin-bottom: 1.2rem; }
.kind { margin: 0; color: var(--muted); text-transform: uppercase; letter-spacing: .06em;
  font-size: 8.5pt; }
h1 { margin: .2rem 0 .6rem; font-size: 18pt; font-weight: 600; }
h2 { font-size: 13pt; margin: 1.6rem 0 .5rem; border-bottom: 1px solid var(--rule);
  padding-bottom: .2rem; }
h3 { font-size: 11pt; margin: 1rem 0 .4rem; }
.id, code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 9pt; }
h1 .id { font-size: 16pt; }
.id, code { overflow-wrap: anywhere; }
td, dd { overflow-wrap: break-word; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
p.note, p.empty { color: var(--muted); }
table { width: 100%; border-collapse: collapse; margin: .4rem 0 1rem; font-size: 9.5pt; }
th, td { text-align: left; vertical-align: top; padding: .3rem .4rem;
  border-bottom: 1px solid var(--rule); }
th { font-weight: 600; border-bottom: 1.5px solid var(--ink); }
td small { display: block; color: var(--muted); }
.violation { color: var(--bad); font-weight: 600; }
.erased { border: 2px solid var(--ink); padding: 1rem 1.2rem; margin: 1.5rem 0; }
ol.steps li { margin-bottom: .4rem; }
dl.clauses dt { font-weight: 600; margin-top: .8rem; }
dl.clauses dd { margin: .2rem 0 0; white-space: pre-line; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f4f6f8;
  border: 1px solid var(--rule); padding: .6rem; }
footer { margin-top: 2rem; border-top: 1px solid var(--rule); padding-top: .5rem;
  color: var(--muted); font-size: 8.5pt; }
@page { size: A4; margin: 16mm 14mm 18mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 9.5pt; }
  section { break-before: page; }
  section.first { break-before: auto; }
  h2, h3 { break-after: avoid; }
  tr, pre, .erased { break-inside: avoid; }
  thead { display: table-header-group; }
  pre { background: none; }
}
"""

_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(STYLE.encode("utf-8")).digest()).decode()
_META_CSP: Final = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'"
)
"""The page's own policy, kept in a saved copy: nothing may load or run; only
:data:`STYLE`, by its hash, may style the page."""
REPORT_CSP: Final = f"{_META_CSP}; frame-ancestors 'none'"
"""The header the API sends: the same, and no other site may frame the page
(a ``<meta>`` policy cannot say that; browsers ignore it there)."""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _when(micros: int) -> str:
    """An instant for a reader, in UTC and saying so, exact to the microsecond when
    the event was: ``2026-03-01 08:00:00 UTC``."""
    text = format_micros(micros)
    return f'<time datetime="{_e(text)}">{_e(text[:-1].replace("T", " "))} UTC</time>'


def _clause(clause: Clause | None) -> str:
    if clause is None:
        return "<small>not a purpose of the policy then in force</small>"
    if clause.title:
        return f"<small>{_e(clause.title)} (clause {_e(clause.id)})</small>"
    return f"<small>clause {_e(clause.id)}</small>"


def _event(event_id: str) -> str:
    return f"<small>event <code>{_e(event_id)}</code></small>"


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table of cells already made safe (every value escaped by the caller)."""
    header = "".join(f"<th>{_e(name)}</th>" for name in head)
    body = "\n".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _consent_row(entry: ConsentEntry) -> list[str]:
    details = []
    if entry.expires_at is not None:
        details.append(f"expires {_when(entry.expires_at)}")
    if entry.reason:
        details.append(f"reason: {_e(entry.reason)}")
    notice = "none recorded"
    if entry.notice is not None:
        notice = (
            " ".join(
                part
                for part in (
                    _e(entry.notice.id) if entry.notice.id else "",
                    f"version {_e(entry.notice.version)}" if entry.notice.version else "",
                )
                if part
            )
            or "recorded without id or version"
        )
    return [
        _when(entry.instant) + _event(entry.event_id),
        "given" if entry.action == "given" else "<strong>withdrawn</strong>",
        _e(entry.purpose) + _clause(entry.clause),
        _e(entry.channel) if entry.channel else "not recorded",
        notice if entry.action == "given" else "",
        _e(entry.controller) + ("<small>" + "; ".join(details) + "</small>" if details else ""),
    ]


def _recipient(entry: DisclosureEntry) -> str:
    recipient = entry.recipient
    named = f"<strong>{_e(recipient.name)}</strong><br>" if recipient.name else ""
    return f"{named}{_e(recipient.kind)}: <code>{_e(recipient.id)}</code>"


def _verdict(entry: DisclosureEntry | VisitEntry) -> str:
    if not entry.violations:
        return "allowed"
    listed = "".join(f"<small>{_e(v.rule)} ({_e(v.status)})</small>" for v in entry.violations)
    head = (
        '<span class="violation">violation</span>'
        if entry.verdict == "violation"
        else "allowed <small>(a violation was retracted)</small>"
    )
    return head + listed


def _disclosure_row(entry: DisclosureEntry) -> list[str]:
    basis = "none given"
    if entry.legal_basis_kind:
        basis = _e(entry.legal_basis_kind)
        if entry.legal_basis_reference:
            basis += f"<small>{_e(entry.legal_basis_reference)}</small>"
    return [
        _when(entry.instant) + _event(entry.event_id),
        _recipient(entry),
        _e(entry.purpose) + _clause(entry.clause),
        ", ".join(_e(category) for category in entry.data_categories),
        basis,
        _verdict(entry),
    ]


def _visit_row(entry: VisitEntry) -> list[str]:
    verdict = _verdict(entry)
    return [
        _when(entry.instant) + _event(entry.event_id),
        _e(entry.site) if entry.site else "not recorded",
        _e(entry.rights_notice) if entry.rights_notice else "none shown",
        _clause(entry.clause),
        verdict,
    ]


def _violation_row(entry: ViolationEntry) -> list[str]:
    status = '<span class="violation">open</span>' if entry.status == "open" else _e(entry.status)
    clause = (
        f"{_e(entry.clause.title)}<small>clause {_e(entry.clause.id)}</small>"
        if entry.clause.title
        else _e(entry.clause.id)
    )
    version = f"<small>policy {_e(entry.policy_version)}</small>" if entry.policy_version else ""
    return [
        _when(entry.instant) + _event(entry.event_id),
        _e(entry.rule),
        clause,
        _e(entry.severity),
        status + f"<small>found {_when(entry.detected_at)}</small>",
        _e(entry.explanation) + version,
    ]


def _recipients_summary(disclosures: Iterable[DisclosureEntry]) -> str:
    """One row per recipient (kind and id), with every name the events gave it."""
    counts: Counter[tuple[str, str]] = Counter()
    names: dict[tuple[str, str], set[str]] = {}
    for entry in disclosures:
        recipient = (entry.recipient.kind, entry.recipient.id)
        counts[recipient] += 1
        names.setdefault(recipient, set())
        if entry.recipient.name:
            names[recipient].add(entry.recipient.name)
    rows = [
        [
            "<br>".join(f"<strong>{_e(name)}</strong>" for name in sorted(names[recipient]))
            or "<small>no name recorded</small>",
            _e(recipient[0]),
            f"<code>{_e(recipient[1])}</code>",
            _e(f"{n:,}"),
        ]
        for recipient, n in sorted(counts.items())
    ]
    return _table(("Recipient", "Kind", "Id", "Disclosures"), rows)


def _count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def _summary(report: SubjectReport) -> str:
    recipients = len({(entry.recipient.kind, entry.recipient.id) for entry in report.disclosures})
    broke = sum(1 for entry in report.disclosures if entry.verdict == "violation")
    disclosures = _count(len(report.disclosures), "disclosure", "disclosures")
    violations = _count(len(report.violations), "violation", "violations")
    return (
        '<section class="first" id="summary">\n<h2>Summary</h2>\n<ul>'
        f"<li>{_count(len(report.consents), 'consent event', 'consent events')} "
        "(given or withdrawn)</li>"
        f"<li>{disclosures} to {_count(recipients, 'recipient', 'recipients')}, "
        f"{broke:,} of them breaking a rule of the policy</li>"
        f"<li>{_count(len(report.visits), 'visit', 'visits')} to the premises</li>"
        f"<li>{violations} about the subject, {report.open_violations:,} of them open</li>"
        "</ul>\n"
        '<p class="note">All times are UTC. Each row names its ledger event, which an '
        "auditor can prove is in the ledger (part 6).</p>\n</section>"
    )


def _part(part_id: str, title: str, body: str) -> str:
    return f'<section id="{part_id}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _consents(report: SubjectReport) -> str:
    if not report.consents:
        return _part("consents", "1. Consents given and withdrawn",
                     '<p class="empty">The ledger holds no consent events of this subject.</p>')  # fmt: skip
    table = _table(
        ("Time", "Consent", "Purpose", "Channel", "Notice", "Controller"),
        map(_consent_row, report.consents),
    )
    return _part("consents", "1. Consents given and withdrawn", table)


def _disclosures(report: SubjectReport) -> str:
    if not report.disclosures:
        body = '<p class="empty">The ledger holds no disclosure of this subject\'s data.</p>'
    else:
        body = (
            "<h3>Recipients</h3>\n"
            + _recipients_summary(report.disclosures)
            + "\n<h3>Every disclosure</h3>\n"
            + _table(
                ("Time", "Recipient", "Purpose", "Data categories", "Legal basis", "Verdict"),
                map(_disclosure_row, report.disclosures),
            )
        )
    return _part("disclosures", "2. Disclosures and their recipients", body)


def _visits(report: SubjectReport) -> str:
    if not report.visits:
        body = '<p class="empty">The ledger holds no visitor registration of this subject.</p>'
    else:
        body = _table(
            ("Time", "Site", "Notice of rights", "Clause", "Verdict"),
            map(_visit_row, report.visits),
        )
    return _part("visits", "3. Visits to the premises", body)


def _violations(report: SubjectReport) -> str:
    if not report.violations:
        body = '<p class="empty">The ledger found no violation about this subject.</p>'
    else:
        body = (
            '<p class="note">A violation is retracted when a later or late event '
            "(a consent recorded after the fact, a new policy version) cleared it.</p>\n"
            + _table(
                ("Event time", "Rule", "Clause", "Severity", "Status", "Explanation"),
                map(_violation_row, report.violations),
            )
        )
    return _part("violations", "4. Violations of the policy about the subject", body)


def _clauses(report: SubjectReport) -> str:
    title = "5. The clauses named above, in the privacy statement's words"
    if not report.clauses:
        return _part("clauses", title, '<p class="empty">The policy gives no words for them.</p>')
    entries = "\n".join(
        f"<dt>{_e(words.title)} <small>(clause {_e(words.id)})</small></dt>"
        + (f'<dd lang="{_e(words.language)}">{_e(words.text)}</dd>' if words.text else "")
        for words in report.clauses
    )
    return _part("clauses", title, f'<dl class="clauses">\n{entries}\n</dl>')


def _partition_name(partition: int) -> str:
    return "policy log" if partition == POLICY_LOG_PARTITION else str(partition)


def _verification(checkpoint: LatestCheckpoint | None, erased: bool) -> str:
    number = "6." if not erased else "2."
    title = f"{number} How to check this report against the ledger"
    if checkpoint is None:
        return _part("verification", title, (
            '<p class="note">The ledger had signed no checkpoint yet when this report was '
            "made: there is nothing yet to hold it to. Ask for the report again once "
            "the ledger has signed one (<code>GET /v1/ledger/checkpoints/latest</code>).</p>"
        ))  # fmt: skip
    heads = _table(
        ("Partition", "Tree size (entries)", "Root hash (SHA-256, base64)"),
        (
            [_e(_partition_name(head.partition)), _e(f"{head.size:,}"), f"<code>{_e(head.root)}</code>"]
            for head in checkpoint.tree_heads
        ),
    )  # fmt: skip
    document = json.dumps(checkpoint.document, indent=2, sort_keys=True, ensure_ascii=False)
    steps = (
        '<ol class="steps">'
        "<li>Keep the checkpoint below as a file, say <code>kept.json</code> (the block is its "
        "whole content, as <code>consent-ledger checkpoint save</code> writes it).</li>"
        "<li>Get the ledger's public key from its operator, not from the same server "
        "(<code>GET /v1/ledger/public-key</code> lists each key with its id; compare "
        f"<code>{_e(checkpoint.key_id)}</code> out of band).</li>"
        "<li>Check the ledger still holds what was signed: <code>consent-ledger verify "
        "--public-key KEY --trusted-checkpoint kept.json</code> (exit 0; a partition it no "
        "longer holds is named).</li>"
        + (
            ""
            if erased
            else "<li>Check that an event this report lists is in the ledger: "
            f"<code>GET /v1/ledger/proofs/inclusion/EVENT_ID?checkpoint={_e(checkpoint.id)}</code> "
            "saved as <code>proof.json</code>, then <code>consent-ledger verify-proof proof.json "
            "--public-key KEY --trusted-checkpoint kept.json</code>.</li>"
        )
        + "</ol>"
    )
    body = (
        "<dl class=\"meta\">"
        f"<dt>Checkpoint</dt><dd>number {_e(checkpoint.id)} of log <code>{_e(checkpoint.log_id)}</code></dd>"
        f"<dt>Signed at</dt><dd>{_signed_at(checkpoint)}</dd>"
        f"<dt>Key id</dt><dd><code>{_e(checkpoint.key_id)}</code></dd>"
        "</dl>\n"
        f"{heads}\n{steps}\n<h3>The signed checkpoint</h3>\n<pre>{_e(document)}</pre>"
    )  # fmt: skip
    return _part("verification", title, body)


def _erased(report: SubjectReport) -> str:
    assert report.erased_at is not None
    return (
        '<section class="first" id="erasure">\n<h2>1. Erased</h2>\n<div class="erased">'
        f"<p>The subject asked to be forgotten (GDPR Art. 17) at {_when(report.erased_at)}.</p>"
        "<p>The ledger destroyed the key its personal data was sealed with: it can no longer "
        "read what it recorded about the subject, and this report therefore holds none of "
        "it.</p></div>\n</section>"
    )


def _signed_at(checkpoint: LatestCheckpoint) -> str:
    text = checkpoint.issued_at  # RFC 3339 in UTC, as signed
    readable = text[:-1].replace("T", " ") + " UTC" if text.endswith("Z") else text
    return f'<time datetime="{_e(text)}">{_e(readable)}</time>'


def _checkpoint_line(checkpoint: LatestCheckpoint | None) -> str:
    if checkpoint is None:
        return "none signed yet"
    return (
        f"number {_e(checkpoint.id)}, signed at {_signed_at(checkpoint)} by key "
        f"<code>{_e(checkpoint.key_id)}</code>"
    )


def _status(report: SubjectReport) -> str:
    """Erased, recorded, or unknown to the ledger (a mistyped id, say): a report of
    nothing must not read as if the ledger knew the subject."""
    if report.erased:
        return "erased"
    if report.consents or report.disclosures or report.visits or report.violations:
        return "recorded in the ledger"
    return "no event about this subject in the ledger"


def render_html(report: SubjectReport) -> str:
    """The whole document, UTF-8 text."""
    subject = _e(report.subject)
    parts = (
        [_erased(report), _verification(report.checkpoint, erased=True)]
        if report.erased
        else [
            _summary(report),
            _consents(report),
            _disclosures(report),
            _visits(report),
            _violations(report),
            _clauses(report),
            _verification(report.checkpoint, erased=False),
        ]
    )
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(_META_CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Subject access report: {subject}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<p class="kind">Subject access report · GDPR Art. 15</p>
<h1>Subject <span class="id">{subject}</span></h1>
<dl class="meta">
<dt>Generated at</dt><dd>{_when(report.generated_at)}</dd>
<dt>Status</dt><dd>{_status(report)}</dd>
<dt>Ledger checkpoint</dt><dd>{_checkpoint_line(report.checkpoint)}</dd>
</dl>
</header>
{body}
<footer>Made by consent-ledger from its ledger and read models. What the ledger
holds is what upstream systems reported to it; a disclosure not reported is not
here.</footer>
</body>
</html>
"""
