"""The events of CONTRACT §1: CloudEvents 1.0 envelopes and their ``data`` by type.

Models are frozen and keep unknown extra fields (``extra="allow"``), because
events are facts from other systems and the ledger never throws away what it was
told. Validation is strict: a number is not a string, a string is not a list.
The JSON Schemas in ``schemas/`` are generated from these models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from consent_ledger.core.timestamps import RFC3339_PATTERN, parse_datetime
from consent_ledger.core.vocabulary import (
    CONSENT_GIVEN,
    CONSENT_WITHDRAWN,
    DATA_SHARED,
    ERASURE_REQUESTED,
    EVENT_TYPES,
    VISITOR_REGISTERED,
    EventType,
    SubjectRole,
)

__all__ = ["EventType", "SubjectRole"]  # re-exported: the models' vocabulary


def _non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only white space")
    return text


def _rfc3339(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("must carry a zone offset")
        return value
    return parse_datetime(value)


def _rfc3339_within_limit(value: Any) -> datetime:
    if isinstance(value, str) and len(value) > 1_024:
        raise ValueError("must be at most 1,024 characters")
    return _rfc3339(value)


DataTimestamp = Annotated[
    datetime,
    BeforeValidator(_rfc3339_within_limit),
    Field(
        description="RFC 3339 date-time with seconds and a zone offset",
        json_schema_extra={"pattern": RFC3339_PATTERN, "maxLength": 1_024},
    ),
]
# CONTRACT §1 limits: id, source and subject, and the strings it names in data.
AttributeText = Annotated[str, Field(pattern=r"\S", max_length=256), AfterValidator(_non_blank)]
Text = Annotated[str, Field(max_length=1_024)]
NonBlank = Annotated[str, Field(pattern=r"\S", max_length=1_024), AfterValidator(_non_blank)]
Timestamp = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    Field(
        description="RFC 3339 date-time with seconds and a zone offset",
        json_schema_extra={"pattern": RFC3339_PATTERN},
    ),
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", strict=True)


class Notice(_Model):
    """The privacy notice the subject was shown when consenting."""

    id: Text
    version: Text
    content_sha256: Text


class Recipient(_Model):
    """Who received the data: its kind decides which policy rule applies."""

    kind: NonBlank
    id: NonBlank
    name: Text | None = None


class LegalBasis(_Model):
    """What allowed a disclosure outside the group, e.g. a court order."""

    kind: NonBlank
    reference: Text | None = None


class ConsentGivenData(_Model):
    purpose: NonBlank
    subject_role: SubjectRole
    controller: NonBlank
    expires_at: DataTimestamp | None = None
    channel: Text | None = None
    policy_version: Text | None = None
    notice: Notice | None = None
    evidence: dict[str, Any] | None = None


class ConsentWithdrawnData(_Model):
    purpose: NonBlank
    controller: NonBlank
    channel: Text | None = None
    reason: Text | None = None


class DataSharedData(_Model):
    purpose: NonBlank
    subject_role: SubjectRole
    controller: NonBlank
    recipient: Recipient
    data_categories: Annotated[list[NonBlank], Field(min_length=1)]
    legal_basis: LegalBasis | None = None


class VisitorRegisteredData(_Model):
    site: NonBlank
    rights_notice: Text | None = None
    host: Text | None = None


class ErasureRequestedData(_Model):
    reason: Text | None = None
    requested_via: Text | None = None


DATA_MODELS: dict[str, type[_Model]] = {
    CONSENT_GIVEN: ConsentGivenData,
    CONSENT_WITHDRAWN: ConsentWithdrawnData,
    DATA_SHARED: DataSharedData,
    VISITOR_REGISTERED: VisitorRegisteredData,
    ERASURE_REQUESTED: ErasureRequestedData,
}


class Envelope(_Model):
    """The CloudEvents 1.0 attributes every event carries (structured mode)."""

    specversion: Literal["1.0"]
    id: AttributeText
    source: AttributeText
    type: NonBlank  # blank is a missing attribute (invalid-envelope), not an unknown type
    subject: AttributeText
    time: Timestamp
    datacontenttype: str | None = None
    dataschema: str | None = None


class _Event(Envelope):
    type: EventType


class ConsentGiven(_Event):
    """The subject agreed to processing for one purpose."""

    type: Literal["ConsentGiven"] = "ConsentGiven"
    data: ConsentGivenData


class ConsentWithdrawn(_Event):
    """The subject took back a consent for one purpose."""

    type: Literal["ConsentWithdrawn"] = "ConsentWithdrawn"
    data: ConsentWithdrawnData


class DataShared(_Event):
    """Personal data of the subject was disclosed to a recipient."""

    type: Literal["DataShared"] = "DataShared"
    data: DataSharedData


class VisitorRegistered(_Event):
    """A visitor registered at one of the premises."""

    type: Literal["VisitorRegistered"] = "VisitorRegistered"
    data: VisitorRegisteredData


class ErasureRequested(_Event):
    """The subject asked to be forgotten (GDPR Art. 17)."""

    type: Literal["ErasureRequested"] = "ErasureRequested"
    data: ErasureRequestedData


Event: TypeAlias = (
    ConsentGiven | ConsentWithdrawn | DataShared | VisitorRegistered | ErasureRequested
)
EVENT_MODELS: dict[str, type[_Event]] = {
    CONSENT_GIVEN: ConsentGiven,
    CONSENT_WITHDRAWN: ConsentWithdrawn,
    DATA_SHARED: DataShared,
    VISITOR_REGISTERED: VisitorRegistered,
    ERASURE_REQUESTED: ErasureRequested,
}
assert tuple(EVENT_MODELS) == tuple(DATA_MODELS) == EVENT_TYPES
assert all(get_args(model.model_fields["type"].annotation) == (name,)
           for name, model in EVENT_MODELS.items())  # fmt: skip
