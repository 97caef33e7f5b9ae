"""The closed vocabularies of CONTRACT §1: event types and subject roles, once.

Intake, the facts, what a batch loads, the pydantic models and the producer
library all name event types through this module. Kept apart from the models
in :mod:`consent_ledger.core.events` so the hot path (intake, ``check``) does
not pay for importing pydantic.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, get_args

CONSENT_GIVEN: Final = "ConsentGiven"
CONSENT_WITHDRAWN: Final = "ConsentWithdrawn"
DATA_SHARED: Final = "DataShared"
VISITOR_REGISTERED: Final = "VisitorRegistered"
ERASURE_REQUESTED: Final = "ErasureRequested"
EVENT_TYPES: Final = (
    CONSENT_GIVEN,
    CONSENT_WITHDRAWN,
    DATA_SHARED,
    VISITOR_REGISTERED,
    ERASURE_REQUESTED,
)
# The same, as a type for the models (a Literal must spell its values out).
EventType: TypeAlias = Literal[
    "ConsentGiven", "ConsentWithdrawn", "DataShared", "VisitorRegistered", "ErasureRequested"
]

# What an event of each type bears on, which is what a batch loads for it
# (core/batch.py): the consent timeline of the (subject, purpose) its data names,
# and the earlier verdicts it may change (disclosures dated at or after it).
NAMES_A_PURPOSE: Final = frozenset({CONSENT_GIVEN, CONSENT_WITHDRAWN, DATA_SHARED})
CHANGES_EARLIER_VERDICTS: Final = frozenset({CONSENT_GIVEN, CONSENT_WITHDRAWN, ERASURE_REQUESTED})

SUBJECT_ROLES: Final = ("customer_contact", "user", "jobseeker", "visitor")
SubjectRole: TypeAlias = Literal["customer_contact", "user", "jobseeker", "visitor"]

assert get_args(EventType) == EVENT_TYPES
assert get_args(SubjectRole) == SUBJECT_ROLES
