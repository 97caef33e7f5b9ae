"""The stored Merkle logs: each partition's compact frontier, as the batch write left it."""

from __future__ import annotations

import asyncpg

from consent_ledger.integrity.merkle import MerkleFrontier

MERKLE_LOGS = "SELECT kafka_partition, frontier FROM merkle_logs ORDER BY kafka_partition"


async def stored_frontiers(connection: asyncpg.Connection) -> dict[int, MerkleFrontier]:
    """Every partition's Merkle frontier, in partition order."""
    return {
        row["kafka_partition"]: MerkleFrontier.from_bytes(row["frontier"])
        for row in await connection.fetch(MERKLE_LOGS)
    }
