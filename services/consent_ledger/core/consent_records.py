"""A subject's consents as ISO/IEC TS 27560 consent records in the W3C Data
Privacy Vocabulary's JSON-LD form (CONTRACT §9), what
``GET /v1/subjects/{subject}/consents?format=jsonld`` answers.

One record per purpose, following the DPVCG's profile
``https://w3id.org/dpv/schema/iso-27560#record``: the record's header (schema
version as ``dct:conformsTo``, identifier, data subject, creation and last
change), its processing (the purpose as the policy's DPV concept, consent as
legal basis, the controller) and its state (``dpv:hasConsentStatus``, expiry),
with every consent event of the purpose as the record's history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote

from consent_ledger.core.consents import ConsentState, PurposeConsent
from consent_ledger.core.policy import Policy
from consent_ledger.core.timestamps import format_micros

RECORD_SCHEMA = "https://w3id.org/dpv/schema/iso-27560#record"
CONTEXT: dict[str, Any] = {
    "dpv": "https://w3id.org/dpv#",
    "dct": "http://purl.org/dc/terms/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "dct:created": {"@type": "xsd:dateTime"},
    "dct:modified": {"@type": "xsd:dateTime"},
    "dct:date": {"@type": "xsd:dateTime"},
    "dpv:hasExpiryTime": {"@type": "xsd:dateTime"},
}
_STATUS = {
    ConsentState.GRANTED: "dpv:ConsentGiven",
    ConsentState.WITHDRAWN: "dpv:ConsentWithdrawn",
    ConsentState.EXPIRED: "dpv:ConsentExpired",
}
_URN = "urn:consent-ledger"


class RecordedConsentChange(NamedTuple):
    """A consent event as the ledger keeps it, with who and how."""

    event_id: str
    purpose: str
    instant: int
    granted: bool
    expires_at: int | None
    controller: str
    channel: str | None


def consent_records(
    subject: str,
    statuses: Sequence[PurposeConsent],
    changes: Iterable[RecordedConsentChange],
    policy: Policy,
) -> dict[str, Any]:
    """The JSON-LD document: one ``dpv:ConsentRecord`` per purpose in ``statuses``."""
    history: dict[str, list[RecordedConsentChange]] = {}
    for change in changes:
        history.setdefault(change.purpose, []).append(change)
    graph = []
    for status in statuses:
        events = sorted(history.get(status.purpose, ()), key=lambda c: c.instant)
        if not events:
            continue
        latest = events[-1]
        purpose = policy.purposes.get(status.purpose)
        record: dict[str, Any] = {
            "@id": f"{_URN}:consent-record:{_quote(subject)}:{_quote(status.purpose)}",
            "@type": "dpv:ConsentRecord",
            "dct:conformsTo": {"@id": RECORD_SCHEMA},
            "dct:identifier": f"{subject}/{status.purpose}",
            "dct:created": format_micros(events[0].instant),
            "dct:modified": format_micros(latest.instant),
            "dpv:hasDataSubject": {
                "@id": f"{_URN}:subject:{_quote(subject)}",
                "@type": "dpv:DataSubject",
                "dct:identifier": subject,
            },
            "dpv:hasDataController": {
                "@id": f"{_URN}:controller:{_quote(latest.controller)}",
                "@type": "dpv:DataController",
                "dct:identifier": latest.controller,
            },
            "dpv:hasPurpose": {
                "@id": purpose.dpv if purpose is not None and purpose.dpv else "dpv:Purpose",
                "dct:identifier": status.purpose,
            },
            "dpv:hasLegalBasis": {"@id": "dpv:Consent"},
            "dpv:hasConsentStatus": {"@id": _STATUS[status.state]},
            "dpv:hasEvent": [_event(change) for change in events],
        }
        if status.expires_at is not None:
            record["dpv:hasExpiryTime"] = format_micros(status.expires_at)
        graph.append(record)
    return {"@context": CONTEXT, "@graph": graph}


def _event(change: RecordedConsentChange) -> dict[str, Any]:
    event: dict[str, Any] = {
        "@id": f"{_URN}:event:{_quote(change.event_id)}",
        "@type": "dpv:ConsentGiven" if change.granted else "dpv:ConsentWithdrawn",
        "dct:identifier": change.event_id,
        "dct:date": format_micros(change.instant),
    }
    if change.channel:
        event["dct:source"] = change.channel
    return event


def _quote(text: str) -> str:
    """``text`` safe inside a URN (RFC 8141): percent-encoded outside unreserved characters."""
    return quote(text, safe="")
