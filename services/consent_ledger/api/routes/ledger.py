"""The auditor's endpoints: the signing key, signed checkpoints, inclusion and
consistency proofs.

Checkpoints and proofs carry no personal data (a leaf covers an event id, a
Kafka position, a time and the digest of a ciphertext), so an erasure hides
none of them: an auditor can still prove what the ledger held.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import structlog
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from consent_ledger.api import models
from consent_ledger.api.auth import requires
from consent_ledger.api.errors import ApiError, invalid_parameter
from consent_ledger.api.models import ErrorResponse
from consent_ledger.api.pagination import DEFAULT_LIMIT, encode_cursor
from consent_ledger.api.routes.common import ERRORS, Context, Cursor, Limit, cursor_key
from consent_ledger.core.roles import Permission as P
from consent_ledger.core.timestamps import format_micros, to_micros
from consent_ledger.integrity.checkpoints import SignedCheckpoint, key_id, public_key_pem

log = structlog.get_logger(__name__)
router = APIRouter()

_MAX_ID: Final = 2**63 - 1
CHECKPOINT_ID_HEADER: Final = "Ledger-Checkpoint-Id"

CheckpointNumber = Annotated[int, Path(ge=1, le=_MAX_ID, description="The checkpoint's id")]

_NOT_FOUND_CHECKPOINT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such checkpoint, or none signed yet"},
}
_INCONSISTENT: dict[int | str, dict[str, Any]] = {
    500: {
        "model": ErrorResponse,
        "description": "The stored ledger disagrees with its signed checkpoints "
        "(`consent-ledger verify` says where)",
    },
}
_INCLUSION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            CHECKPOINT_ID_HEADER: {
                "description": "Id of the checkpoint the proof is against",
                "schema": {"type": "integer"},
            }
        }
    },
    404: {
        "model": ErrorResponse,
        "description": "No such event or checkpoint, or the checkpoint does not cover "
        "the event (yet)",
    },
    **ERRORS,
    **_INCONSISTENT,
}


@router.get(
    "/v1/ledger/public-key",
    dependencies=[requires(P.READ_LEDGER)],
    summary="The Ed25519 public keys that sign the checkpoints, each with its period",
    description=(
        "Pin them (compare each `key_id` out of band), then check every checkpoint and "
        "proof offline with the key it names: `consent-ledger verify-proof PROOF "
        "--public-key THIS.json`. The top-level `key_id` and `public_key_pem` are the "
        "current key's; `keys` lists every key, also those rotated out (CONTRACT §7)."
    ),
    responses={
        404: {
            "model": ErrorResponse,
            "description": "No signing key is configured: checkpoints are not signed here",
        }
    },
)
async def ledger_public_key(context: Context) -> models.PublicKey:
    async with context.ledger().snapshot() as view:
        periods = await view.signing_keys()
    keys = [
        models.SigningKey(
            key_id=period.key_id,
            public_key_pem=period.public_key_pem,
            first_signed=_moment(period.first_signed),
            last_signed=_moment(period.last_signed),
            current=False,
        )
        for period in periods
    ]
    configured = context.public_key
    if configured is not None and key_id(configured) not in {key.key_id for key in keys}:
        keys.append(
            models.SigningKey(
                key_id=key_id(configured), public_key_pem=public_key_pem(configured),
                first_signed=None, last_signed=None, current=False,
            )
        )  # fmt: skip
    if not keys:
        raise ApiError(
            404,
            "checkpoints-not-signed",
            "checkpoints are not signed here: no signing key is configured or registered "
            "(LEDGER_SIGNING_KEY_FILE)",
        )
    # The current key: the one that signed last; before any checkpoint, the newest.
    signed = [key for key in keys if key.last_signed is not None]
    current = max(signed, key=lambda key: key.last_signed or "") if signed else keys[-1]
    current.current = True
    return models.PublicKey(
        key_id=current.key_id,
        public_key_pem=current.public_key_pem,
        log_id=context.settings.log_id,
        keys=keys,
    )


def _moment(moment: datetime | None) -> str | None:
    return format_micros(to_micros(moment), six_digits=True) if moment is not None else None


@router.get(
    "/v1/ledger/checkpoints",
    dependencies=[requires(P.READ_LEDGER)],
    summary="Signed checkpoints, newest first",
    description=(
        "Every checkpoint the ledger signed: each commits to every partition's Merkle "
        "tree size and root at one moment."
    ),
    responses=ERRORS | _INCONSISTENT,
)
async def list_checkpoints(
    context: Context, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> models.CheckpointPage:
    (before_id,) = cursor_key(cursor, "checkpoints", 1) if cursor else (_MAX_ID,)
    async with context.ledger().snapshot() as view:
        stored = await view.checkpoints(before_id=min(before_id, _MAX_ID), limit=limit + 1)
    page = stored[:limit]
    next_cursor = encode_cursor("checkpoints", page[-1][0]) if len(stored) > limit else None
    items = [_stored_checkpoint(number, signed) for number, signed in page]
    return models.CheckpointPage(items=items, next_cursor=next_cursor)


@router.get(
    "/v1/ledger/checkpoints/latest",
    dependencies=[requires(P.READ_LEDGER)],
    summary="The newest signed checkpoint",
    responses=ERRORS | _NOT_FOUND_CHECKPOINT | _INCONSISTENT,
)
async def latest_checkpoint(context: Context) -> models.StoredCheckpoint:
    async with context.ledger().snapshot() as view:
        stored = await view.checkpoint(None)
    return _stored_checkpoint(*stored)


@router.get(
    "/v1/ledger/checkpoints/{checkpoint_id}",
    dependencies=[requires(P.READ_LEDGER)],
    summary="One signed checkpoint by id",
    responses=ERRORS | _NOT_FOUND_CHECKPOINT | _INCONSISTENT,
)
async def get_checkpoint(
    checkpoint_id: CheckpointNumber, context: Context
) -> models.StoredCheckpoint:
    async with context.ledger().snapshot() as view:
        stored = await view.checkpoint(checkpoint_id)
    return _stored_checkpoint(*stored)


@router.get(
    "/v1/ledger/proofs/inclusion/{event_id:id}",
    dependencies=[requires(P.READ_LEDGER)],
    summary="Proof that an event's ledger entry is in a signed checkpoint's tree",
    description=(
        "The inclusion proof of the event's ledger entry against a checkpoint (default: "
        "the latest). The body is the self-contained proof document: save it as it is "
        "and check it offline with `consent-ledger verify-proof FILE --public-key PEM`. "
        f"The checkpoint's id is in the `{CHECKPOINT_ID_HEADER}` header (not in the "
        "body, which the verifier checks field by field). Erased subjects' entries are "
        "proved too: an entry holds no personal data."
    ),
    responses=_INCLUSION_RESPONSES,
)
async def inclusion_proof(
    event_id: str,
    context: Context,
    response: Response,
    checkpoint: Annotated[
        int | None,
        Query(
            ge=1,
            le=_MAX_ID,
            description="Id of the checkpoint to prove against; omit for the latest",
        ),
    ] = None,
) -> models.InclusionProof:
    async with context.ledger().snapshot() as view:
        document = await view.inclusion_proof(event_id, checkpoint)
    number = document.pop("checkpoint_id")
    response.headers[CHECKPOINT_ID_HEADER] = str(number)
    return models.InclusionProof.model_validate(document)


@router.get(
    "/v1/ledger/proofs/consistency",
    dependencies=[requires(P.READ_LEDGER)],
    summary="Proof that a later checkpoint extends an earlier one",
    description=(
        "For every partition of checkpoint `from`, the RFC 9162 consistency proof that "
        "its log in checkpoint `to` extends it, nothing rewritten. The body is the "
        "self-contained proof document: check it offline with "
        "`consent-ledger verify-proof FILE --public-key PEM`."
    ),
    responses={
        404: {"model": ErrorResponse, "description": "No checkpoint with one of the ids"},
    }
    | ERRORS
    | _INCONSISTENT,
)
async def consistency_proof(
    context: Context,
    old_id: Annotated[
        int, Query(alias="from", ge=1, le=_MAX_ID, description="Id of the older checkpoint")
    ],
    new_id: Annotated[
        int, Query(alias="to", ge=1, le=_MAX_ID, description="Id of the newer checkpoint")
    ],
) -> models.ConsistencyProof:
    if old_id > new_id:
        raise invalid_parameter(
            "from",
            f"checkpoint {old_id} is newer than checkpoint {new_id}: `from` must be at most `to`",
        )
    async with context.ledger().snapshot() as view:
        document = await view.consistency_proof(old_id, new_id)
    return models.ConsistencyProof.model_validate(document)


def _stored_checkpoint(number: int, signed: SignedCheckpoint) -> models.StoredCheckpoint:
    return models.StoredCheckpoint(
        id=number, checkpoint=models.SignedCheckpoint.model_validate(signed.to_json_dict())
    )
