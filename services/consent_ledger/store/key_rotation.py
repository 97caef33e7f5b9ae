"""Key rotation's statements (CONTRACT §7): re-wrapping subject keys under the
newest master key in bounded batches, retiring the old master keys, and the
signing keys with the periods they signed.

A rotation can stop at any point (a crash, Ctrl-C, a lost connection) and be
run again: each batch commits on its own, and what is left is exactly the
subject keys not yet wrapped by the newest key. Workers go on meanwhile: a
batch re-wraps a handful of rows (locked for a moment), and a subject key
keeps its value, so a worker that read the old wrapped form still opens it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import asyncpg

from consent_ledger.integrity.keyring import KeyRing, MasterKeyError, wrapped_prefix

RETIRED_MASTER_KEY_SQLSTATE: Final = "LK001"
"""What PostgreSQL answers (migration 011's trigger) to a subject key wrapped by a retired master key."""

REGISTER_MASTER_KEYS: Final = """
INSERT INTO master_keys (key_id) SELECT unnest($1::bytea[]) ON CONFLICT (key_id) DO NOTHING
"""
RETIRED_AMONG: Final = """
SELECT key_id FROM master_keys WHERE key_id = ANY($1::bytea[]) AND retired_at IS NOT NULL
"""
# Keyset paging by subject, through the primary key; rows already wrapped by
# the newest key are skipped, not locked.
NOT_WRAPPED_BY: Final = """
SELECT subject, wrapped_key FROM subject_keys
WHERE subject > $1 AND substring(wrapped_key FROM 1 FOR 9) IS DISTINCT FROM $2
ORDER BY subject LIMIT $3
FOR UPDATE
"""
REWRAP: Final = """
UPDATE subject_keys k SET wrapped_key = u.wrapped
FROM unnest($1::text[], $2::bytea[]) AS u(subject, wrapped)
WHERE k.subject = u.subject
"""
# Held to the end of the retiring transaction: no subject key is written
# meanwhile (reads go on), so none can slip in under an old key.
LOCK_SUBJECT_KEYS: Final = "LOCK TABLE subject_keys IN SHARE ROW EXCLUSIVE MODE"
ANY_NOT_WRAPPED_BY: Final = """
SELECT EXISTS (
    SELECT 1 FROM subject_keys WHERE substring(wrapped_key FROM 1 FOR 9) IS DISTINCT FROM $1
)
"""
RETIRE_ALL_BUT: Final = """
UPDATE master_keys SET retired_at = now() WHERE key_id <> $1 AND retired_at IS NULL
RETURNING key_id
"""
NOT_WRAPPED_COUNT: Final = """
SELECT count(*) FROM subject_keys WHERE substring(wrapped_key FROM 1 FOR 9) IS DISTINCT FROM $1
"""


@dataclass(slots=True)
class MasterRotation:
    """What a run of :func:`rotate_master_key` did."""

    newest: str  # hex id
    rewrapped: int = 0
    batches: int = 0
    retired: list[str] = field(default_factory=list)  # hex ids


async def rotate_master_key(
    pool: asyncpg.Pool,
    keyring: KeyRing,
    *,
    batch_size: int = 1_000,
    on_batch: Callable[[MasterRotation], None] | None = None,
) -> MasterRotation:
    """Re-wrap every subject key not wrapped by ``keyring``'s newest master key,
    ``batch_size`` rows per transaction, until none is left; then retire every
    other master key. Idempotent: run again after an interruption, it goes on
    with what is left. Raises MasterKeyError when the newest key was retired
    (it never comes back) or a row's master key is not in ``keyring``."""
    newest = keyring.newest_id
    prefix = wrapped_prefix(newest)
    report = MasterRotation(newest.hex())
    async with pool.acquire() as connection:
        await connection.execute(REGISTER_MASTER_KEYS, keyring.key_ids)
        retired = await connection.fetch(RETIRED_AMONG, [newest])
    if retired:
        raise MasterKeyError(
            f"master key {newest.hex()} was retired by an earlier rotation: a retired key is "
            "never used again; add a new key to the file (keys rotate-master --generate)"
        )
    while True:
        after = ""
        while True:  # one pass over the table, in subject order
            async with pool.acquire() as connection, connection.transaction():
                rows = await connection.fetch(NOT_WRAPPED_BY, after, prefix, batch_size)
                if not rows:
                    break
                subjects = [row["subject"] for row in rows]
                wrapped = [keyring.rewrap(row["subject"], row["wrapped_key"]) for row in rows]
                await connection.execute(REWRAP, subjects, wrapped)
            after = subjects[-1]
            report.rewrapped += len(rows)
            report.batches += 1
            if on_batch is not None:
                on_batch(report)
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(LOCK_SUBJECT_KEYS)
            # A worker with an old key file may have added one behind the pass.
            if await connection.fetchval(ANY_NOT_WRAPPED_BY, prefix):
                continue
            rows = await connection.fetch(RETIRE_ALL_BUT, newest)
            report.retired = sorted(bytes(row["key_id"]).hex() for row in rows)
            return report


async def keys_not_wrapped_by(connection: asyncpg.Connection, key_id: bytes) -> int:
    """How many subject keys the master key ``key_id`` did not wrap."""
    count: int = await connection.fetchval(NOT_WRAPPED_COUNT, wrapped_prefix(key_id))
    return count


REGISTER_SIGNING_KEY: Final = """
INSERT INTO signing_keys (key_id, public_key_pem) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING
"""
SIGNING_KEYS: Final = """
SELECT k.key_id, k.public_key_pem, k.registered_at,
       (SELECT min(issued_at) FROM checkpoints c WHERE c.document ->> 'key_id' = k.key_id)
           AS first_signed,
       (SELECT max(issued_at) FROM checkpoints c WHERE c.document ->> 'key_id' = k.key_id)
           AS last_signed
FROM signing_keys k
"""


@dataclass(frozen=True, slots=True)
class SigningKeyPeriod:
    """A signing key and the period of the checkpoints it signed (None: none yet)."""

    key_id: str
    public_key_pem: str
    registered_at: datetime
    first_signed: datetime | None
    last_signed: datetime | None


async def register_signing_key(connection: asyncpg.Connection, key_id: str, pem: str) -> None:
    await connection.execute(REGISTER_SIGNING_KEY, key_id, pem)


async def signing_key_periods(connection: asyncpg.Connection) -> list[SigningKeyPeriod]:
    """Every registered signing key, in the order they signed (keys that signed
    nothing yet last, by registration)."""
    keys = [SigningKeyPeriod(**dict(row)) for row in await connection.fetch(SIGNING_KEYS)]
    return sorted(
        keys,
        key=lambda k: (k.first_signed is None, k.first_signed or k.registered_at, k.registered_at),
    )
