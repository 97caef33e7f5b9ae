"""Copies of each signed checkpoint outside the database (CONTRACT §10).

A checkpoint only protects against an insider once a copy exists where the
ledger's operator cannot change it. In the transaction that stores a
checkpoint, :meth:`CheckpointCopies.stage` writes

* two outbox rows, which the outbox relay publishes after commit:
  ``ledger.checkpoints`` (meant to be compacted: the latest checkpoint per log
  stays readable forever) and ``ledger.checkpoints.history`` (never deleted:
  every checkpoint, in issue order). Two topics, because compaction keeps one
  record per key and the key is the log id; a history under the same key in
  a compacted topic would be compacted away. Key: the log id in UTF-8; value:
  :func:`copy_document`;
* one ``witness_deliveries`` row per witness URL, which
  :class:`~consent_ledger.worker.witnesses.WitnessCourier` POSTs.

Staged in the same transaction, a checkpoint is never stored without its copies
being due, and a crash or stop right after signing loses none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import orjson

from consent_ledger.integrity.checkpoints import SignedCheckpoint

STAGE_TOPICS = """
INSERT INTO outbox (topic, key, value) SELECT topic, $2, $3 FROM unnest($1::text[]) AS topic
"""
STAGE_WITNESSES = """
INSERT INTO witness_deliveries (checkpoint_id, witness_url)
SELECT $1, url FROM unnest($2::text[]) AS url ON CONFLICT DO NOTHING
"""


def copy_document(checkpoint_id: int, signed: SignedCheckpoint) -> bytes:
    """What a topic record and a witness POST carry: UTF-8 JSON, compact, keys sorted,
    ``{"checkpoint": <signed checkpoint, checkpoints.py>, "id": <the ledger's number>}``,
    the shape ``GET /v1/ledger/checkpoints/{id}`` answers, which
    ``verify --trusted-checkpoint`` reads as it is. ``id`` is not signed: it only
    names the checkpoint to ask proofs against."""
    return orjson.dumps(
        {"checkpoint": signed.to_json_dict(), "id": checkpoint_id}, option=orjson.OPT_SORT_KEYS
    )


@dataclass(frozen=True, slots=True)
class CheckpointCopies:
    """Where copies of each checkpoint go: topics, and witness URLs."""

    topics: tuple[str, ...] = ()
    witnesses: tuple[str, ...] = ()

    async def stage(
        self, connection: asyncpg.Connection, checkpoint_id: int, signed: SignedCheckpoint
    ) -> None:
        """Write the outbox and witness rows of one checkpoint, in the caller's transaction."""
        if self.topics:
            await connection.execute(
                STAGE_TOPICS,
                list(self.topics),
                signed.checkpoint.log_id.encode("utf-8"),
                copy_document(checkpoint_id, signed),
            )
        if self.witnesses:
            await connection.execute(STAGE_WITNESSES, checkpoint_id, list(self.witnesses))
