"""The auditor's endpoints: the signing key, signed checkpoints, inclusion and
consistency proofs.

Checkpoints and proofs carry no personal data (a leaf covers an event id, a
Kafka position, a time and the digest of a ciphertext), so an erasure hides
none of them: an auditor can still prove what the ledger held.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import structlog
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from consent_ledger.api import models
from consent_ledger.api.errors import ApiError, invalid_parameter
from consent_ledger.api.models import ErrorResponse
from consent_ledger.api.pagination import DEFAULT_LIMIT, encode_cursor
from consent_ledger.api.queries import LedgerView, Row
from consent_ledger.api.routes.common import ERRORS, Context, Cursor, Limit, cursor_key, page_of
from consent_ledger.ledger.audit import NotFound
from consent_ledger.ledger.checkpoints import SignedCheckpoint, key_id, public_key_pem
from consent_ledger.settings import Settings

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


def _cadence(settings: Settings) -> str:
    return (
        "checkpoints are signed every LEDGER_CHECKPOINT_INTERVAL_S seconds "
        f"({settings.checkpoint_interval_s:g} s in this API's configuration) "
        "once new entries arrive"
    )


@router.get(
    "/v1/ledger/public-key",
    summary="The Ed25519 public key that signs the checkpoints",
    description=(
        "Pin it once (compare `key_id` out of band), then check every checkpoint and "
        "proof offline with it: `consent-ledger verify-proof PROOF --public-key PEM`."
    ),
    responses={
        404: {
            "model": ErrorResponse,
            "description": "No signing key is configured: checkpoints are not signed here",
        }
    },
)
async def ledger_public_key(context: Context) -> models.PublicKey:
    key = context.public_key
    if key is None:
        raise ApiError(
            404,
            "checkpoints-not-signed",
            "checkpoints are not signed here: this API has no signing key configured "
            "(LEDGER_SIGNING_KEY_FILE)",
        )
    return models.PublicKey(
        key_id=key_id(key), public_key_pem=public_key_pem(key), log_id=context.settings.log_id
    )


@router.get(
    "/v1/ledger/checkpoints",
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
        rows = await view.checkpoints(before_id=min(before_id, _MAX_ID), limit=limit + 1)
    page, next_cursor = page_of(rows, limit, lambda row: encode_cursor("checkpoints", row["id"]))
    items = [_stored_checkpoint(row["id"], _parse_checkpoint(row)) for row in page]
    return models.CheckpointPage(items=items, next_cursor=next_cursor)


@router.get(
    "/v1/ledger/checkpoints/latest",
    summary="The newest signed checkpoint",
    responses=ERRORS | _NOT_FOUND_CHECKPOINT | _INCONSISTENT,
)
async def latest_checkpoint(context: Context) -> models.StoredCheckpoint:
    async with context.ledger().snapshot() as view:
        stored = await _read_checkpoint(view, None)
    if stored is None:
        raise ApiError(
            404, "no-checkpoint", f"no checkpoint has been signed yet; {_cadence(context.settings)}"
        )
    return _stored_checkpoint(*stored)


@router.get(
    "/v1/ledger/checkpoints/{checkpoint_id}",
    summary="One signed checkpoint by id",
    responses=ERRORS | _NOT_FOUND_CHECKPOINT | _INCONSISTENT,
)
async def get_checkpoint(
    checkpoint_id: CheckpointNumber, context: Context
) -> models.StoredCheckpoint:
    async with context.ledger().snapshot() as view:
        stored = await _read_checkpoint(view, checkpoint_id)
    if stored is None:
        raise ApiError(404, "unknown-checkpoint", f"no checkpoint {checkpoint_id}")
    return _stored_checkpoint(*stored)


@router.get(
    "/v1/ledger/proofs/inclusion/{event_id:path}",
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
        position = await view.entry_position(event_id)
        if position is None:
            raise ApiError(
                404,
                "unknown-event",
                f"no ledger entry with event id {event_id!r}: the ledger has not accepted "
                "such an event",
            )
        stored = await _read_checkpoint(view, checkpoint)
        if stored is None and checkpoint is not None:
            raise ApiError(404, "unknown-checkpoint", f"no checkpoint {checkpoint}")
        if stored is None:
            raise ApiError(
                404,
                "not-yet-checkpointed",
                f"event {event_id!r} is not covered by a checkpoint yet: none has been "
                f"signed; {_cadence(context.settings)}, retry then",
            )
        number, signed = stored
        head = signed.checkpoint.tree_head(position["kafka_partition"])
        if head is None or position["leaf_index"] >= head.size:
            if checkpoint is not None:
                raise ApiError(
                    404,
                    "not-in-checkpoint",
                    f"event {event_id!r} is not covered by checkpoint {number}: it was "
                    "recorded after that checkpoint was signed; ask a later checkpoint, "
                    "or omit `checkpoint` for the latest",
                    details={"checkpoint_id": number},
                )
            raise ApiError(
                404,
                "not-yet-checkpointed",
                f"event {event_id!r} is not covered by a checkpoint yet: it was recorded "
                f"after the latest, checkpoint {number}, was signed; "
                f"{_cadence(context.settings)}, retry then",
                details={"checkpoint_id": number},
            )
        try:
            document = await view.inclusion_proof(event_id, number)
        except NotFound as exc:  # not reached: the snapshot saw both a moment ago
            raise ApiError(404, "not-found", str(exc)) from None
        except ValueError as exc:
            raise _inconsistent(f"no inclusion proof of {event_id!r}", exc) from None
    document.pop("checkpoint_id", None)
    response.headers[CHECKPOINT_ID_HEADER] = str(number)
    return models.InclusionProof.model_validate(document)


@router.get(
    "/v1/ledger/proofs/consistency",
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
        try:
            document = await view.consistency_proof(old_id, new_id)
        except NotFound as exc:
            raise ApiError(404, "unknown-checkpoint", str(exc)) from None
        except ValueError as exc:
            raise _inconsistent(
                f"no consistency proof from checkpoint {old_id} to {new_id}", exc
            ) from None
    return models.ConsistencyProof.model_validate(document)


async def _read_checkpoint(
    view: LedgerView, checkpoint_id: int | None
) -> tuple[int, SignedCheckpoint] | None:
    try:
        return await view.checkpoint(checkpoint_id)
    except ValueError as exc:
        what = "the latest checkpoint" if checkpoint_id is None else f"checkpoint {checkpoint_id}"
        raise _inconsistent(f"{what} is not a valid signed checkpoint", exc) from None


def _parse_checkpoint(row: Row) -> SignedCheckpoint:
    try:
        return SignedCheckpoint.from_json(row["document"])
    except ValueError as exc:
        raise _inconsistent(
            f"checkpoint {row['id']} is not a valid signed checkpoint", exc
        ) from None


def _stored_checkpoint(number: int, signed: SignedCheckpoint) -> models.StoredCheckpoint:
    return models.StoredCheckpoint(
        id=number, checkpoint=models.SignedCheckpoint.model_validate(signed.to_json_dict())
    )


def _inconsistent(what: str, exc: ValueError) -> ApiError:
    log.error("ledger inconsistent", problem=what, error=str(exc))
    return ApiError(
        500,
        "ledger-inconsistent",
        f"{what}: {exc}; `consent-ledger verify` checks the stored ledger against its checkpoints",
    )
