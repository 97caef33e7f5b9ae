"""Issue signed checkpoints from the Merkle logs in PostgreSQL.

A checkpoint commits to every partition's tree size and root at one moment;
it is signed with the ledger's Ed25519 key and stored in ``checkpoints``. A
new one is issued only when some tree grew since the last, and a transaction
advisory lock keeps two workers from issuing the same one twice. Its copies
for topics and witnesses (:mod:`.checkpoint_copies`) are staged in the same
transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consent_ledger.integrity.checkpoints import (
    Checkpoint,
    SignedCheckpoint,
    TreeHead,
    sign_checkpoint,
)
from consent_ledger.store.audit_reads import LATEST_CHECKPOINT, stored_checkpoint
from consent_ledger.store.checkpoint_copies import CheckpointCopies
from consent_ledger.store.merkle_logs import stored_frontiers

_LOCK_ID = 0x6C65646765720002
INSERT = "INSERT INTO checkpoints (issued_at, document) VALUES ($1, $2) RETURNING id"


async def current_tree_heads(connection: asyncpg.Connection) -> tuple[TreeHead, ...]:
    return tuple(
        TreeHead(partition, frontier.size, frontier.root())
        for partition, frontier in (await stored_frontiers(connection)).items()
    )


async def latest_checkpoint(connection: asyncpg.Connection) -> SignedCheckpoint | None:
    row = await connection.fetchrow(LATEST_CHECKPOINT)
    return stored_checkpoint(row["id"], row["document"]) if row is not None else None


async def issue_checkpoint(
    pool: asyncpg.Pool,
    signing_key: Ed25519PrivateKey,
    log_id: str,
    *,
    force: bool = False,
    copies: CheckpointCopies | None = None,
) -> SignedCheckpoint | None:
    """Sign and store a checkpoint of every tree head, unless nothing grew
    since the last one (``force`` issues one anyway), and stage its ``copies``.
    Returns the new checkpoint."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        heads = await current_tree_heads(connection)
        latest = await latest_checkpoint(connection)
        if not force and latest is not None and latest.checkpoint.tree_heads == heads:
            return None
        if not force and latest is None and not heads:
            return None
        signed = sign_checkpoint(Checkpoint(log_id, datetime.now(UTC), heads), signing_key)
        number = await connection.fetchval(
            INSERT, signed.checkpoint.issued_at, orjson.dumps(signed.to_json_dict()).decode()
        )
        if copies is not None:
            await copies.stage(connection, number, signed)
        return signed
