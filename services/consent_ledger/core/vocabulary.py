"""The closed vocabularies of CONTRACT §1: event types and subject roles.

Kept apart from the pydantic models in :mod:`consent_ledger.core.events` so the
hot path (intake, ``check``) does not pay for importing pydantic.
"""

from __future__ import annotations

EVENT_TYPES = (
    "ConsentGiven",
    "ConsentWithdrawn",
    "DataShared",
    "VisitorRegistered",
    "ErasureRequested",
)
SUBJECT_ROLES = ("customer_contact", "user", "jobseeker", "visitor")
