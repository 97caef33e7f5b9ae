"""A realistic stream of events: customers, users, jobseekers, visitors, partners,
authorities and acquirers, with consent given, withdrawn and expiring, and the
occasional disclosure that breaks the reference policy.

Used by ``make run`` (the demo producer), the benchmarks and the tests that need
volume. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

_GROUP = ["visma-software-as", "visma-enterprise-as", "visma-finland-oy", "visma-spcs-ab"]
_CONSENT_PURPOSES = {
    "customer_contact": ["cloud_access", "marketing"],
    "user": ["cloud_access", "marketing"],
    "jobseeker": ["skills_analysis", "candidate_evaluation"],
}
_CONTRACT_PURPOSES = ["delivery", "support", "invoicing", "offers", "communication"]
_CATEGORIES = ["contact_details", "account_data", "invoice_history", "usage_logs"]


class EventFactory:
    """Builds CloudEvents for a population of subjects, one plausible step at a time."""

    def __init__(
        self,
        seed: int = 7,
        subjects: int = 1_000,
        start: datetime | None = None,
        *,
        live: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.live = live  # events happen now (the demo), not on a simulated clock
        self.clock = start or datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
        self.subjects = [f"subj-{seed}-{n:06d}" for n in range(subjects)]
        self.roles = {
            s: self.rng.choice(["customer_contact", "user", "user", "jobseeker", "visitor"])
            for s in self.subjects
        }
        self.erased: set[str] = set()

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _envelope(
        self, kind: str, subject: str, source: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        if self.live:
            self.clock = datetime.now(UTC)
        else:
            self.clock += timedelta(milliseconds=self.rng.randint(1, 2_000))
        return {
            "specversion": "1.0",
            "id": self._id(),
            "source": source,
            "type": kind,
            "subject": subject,
            "time": self.clock.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "data": data,
        }

    def next_event(self) -> dict[str, Any]:
        """One event for a random subject, shaped by its role."""
        rng = self.rng
        subject = rng.choice(self.subjects)
        role = self.roles[subject]
        if role == "visitor":
            if rng.random() < 0.7:
                notice = "visitor-notice-v3" if rng.random() < 0.9 else None
                return self._envelope(
                    "VisitorRegistered",
                    subject,
                    "urn:system:visitor-kiosk",
                    {
                        "site": rng.choice(["oslo-hq", "helsinki", "stockholm"]),
                        "host": "reception",
                        "rights_notice": notice,
                    },
                )
            return self._share(
                subject,
                role,
                "premises_security",
                {"kind": "group_company", "id": rng.choice(_GROUP)},
            )
        roll = rng.random()
        purposes = _CONSENT_PURPOSES[role]
        if roll < 0.30:
            return self._envelope(
                "ConsentGiven",
                subject,
                "urn:system:crm",
                {
                    "purpose": rng.choice(purposes),
                    "subject_role": role,
                    "controller": rng.choice(_GROUP),
                    "channel": "web",
                    "policy_version": "2026-01",
                    **(
                        {
                            "expires_at": (
                                self.clock + timedelta(hours=rng.randint(1, 48))
                            ).isoformat()
                        }
                        if rng.random() < 0.15
                        else {}
                    ),
                },
            )
        if roll < 0.40:
            return self._envelope(
                "ConsentWithdrawn",
                subject,
                "urn:system:crm",
                {
                    "purpose": rng.choice(purposes),
                    "controller": rng.choice(_GROUP),
                    "channel": "web",
                },
            )
        if roll < 0.401 and subject not in self.erased:
            self.erased.add(subject)
            return self._envelope(
                "ErasureRequested",
                subject,
                "urn:system:privacy-portal",
                {"requested_via": "self-service"},
            )
        if role == "jobseeker":
            return self._share(
                subject,
                role,
                rng.choice(purposes),
                {"kind": "group_company", "id": rng.choice(_GROUP)},
            )
        return self._share(subject, role, *self._disclosure(purposes))

    def _disclosure(
        self, consent_purposes: list[str]
    ) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            return (
                rng.choice(consent_purposes + _CONTRACT_PURPOSES),
                {"kind": "group_company", "id": rng.choice(_GROUP)},
                None,
            )
        if roll < 0.70:
            partner = "northwind-consulting" if rng.random() < 0.9 else "shady-reseller"
            return "delivery", {"kind": "partner", "id": partner}, None
        if roll < 0.80:
            basis = (
                {"kind": "court_order", "reference": f"TOSLO-2026-{rng.randint(1, 999)}"}
                if rng.random() < 0.8
                else None
            )
            return (
                "legal_disclosure",
                {"kind": "public_authority", "id": "oslo-police-district"},
                basis,
            )
        if roll < 0.88:
            basis = (
                {"kind": "nda", "reference": f"NDA-{rng.randint(1000, 9999)}"}
                if rng.random() < 0.85
                else None
            )
            return (
                "corporate_transaction",
                {"kind": "acquirer", "id": "bigcorp-acquisitions"},
                basis,
            )
        if roll < 0.96:
            return "forum_publication", {"kind": "public_forum", "id": "visma-community"}, None
        return "offers", {"kind": "advertiser", "id": "adnet"}, None

    def _share(
        self,
        subject: str,
        role: str,
        purpose: str,
        recipient: dict[str, Any],
        legal_basis: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        categories = (
            ["forum_post"]
            if recipient["kind"] == "public_forum" and self.rng.random() < 0.9
            else [self.rng.choice(_CATEGORIES)]
        )
        data: dict[str, Any] = {
            "purpose": purpose,
            "subject_role": role,
            "controller": self.rng.choice(_GROUP),
            "recipient": recipient,
            "data_categories": categories,
        }
        if legal_basis is not None:
            data["legal_basis"] = legal_basis
        return self._envelope("DataShared", subject, "urn:system:integration-hub", data)

    def events(self, count: int) -> Iterator[dict[str, Any]]:
        for _ in range(count):
            yield self.next_event()
