"""Poison isolation: no record stops the stream (CONTRACT §2).

A batch whose storing fails is either caught in an outage (a lost connection,
a timeout, a shutdown: :func:`is_transient`), which the caller waits out and
retries, skipping nothing; or it holds a record the ledger cannot store.
Then :func:`store_isolating` splits the batch in halves, in offset order, and
stores each half as a batch of its own, until the failing part is one record:
that record is retried once alone (a failure that two workers racing during
a rebalance caused does not come back) and then committed as rejected
``unprocessable`` with the error as its detail. Every other record commits
with its half, so a poison record costs about 2·log2(batch) transactions, once.

Halves are stored one after the other and each advances its partitions'
positions, so a transient failure in the middle of an isolation resumes
correctly: the retried batch skips what the halves already committed.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog

from consent_ledger.core.batch import Record
from consent_ledger.integrity.keyring import MasterKeyUnavailable
from consent_ledger.log import redact_values
from consent_ledger.store.key_rotation import RETIRED_MASTER_KEY_SQLSTATE
from consent_ledger.worker.pipeline import BatchPipeline, BatchReport

log = structlog.get_logger(__name__)

MAX_DETAIL_CHARS = 1_024

# Classes of PostgreSQL errors that say nothing about the batch's data: 08
# connection exceptions, 40 transaction rollback (serialisation, deadlock),
# 53 insufficient resources (disk full, too many connections), 57 operator
# intervention (shutdown, cannot connect now, statement timeout), 58 system
# errors (I/O).
_TRANSIENT_POSTGRES = (
    asyncpg.PostgresConnectionError,
    asyncpg.TransactionRollbackError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.PostgresSystemError,
)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is an outage (wait and retry the same batch) rather than
    something tied to the batch's data (isolate the record)."""
    if isinstance(error, (OSError, *_TRANSIENT_POSTGRES)):
        return True  # OSError: refused, reset, unreachable, and TimeoutError among them
    # A master key rotated elsewhere and not yet in this worker's key file: the
    # records are fine, the configuration lags; wait (the file is re-read).
    if isinstance(error, MasterKeyUnavailable):
        return True
    if getattr(error, "sqlstate", None) == RETIRED_MASTER_KEY_SQLSTATE:
        return True
    # asyncpg's client-side errors: a closed connection or a busy one is an outage;
    # its DataError (a value the codec cannot encode: a lone surrogate, a wrong
    # type) is the data's, and is the one that is also a ValueError.
    return isinstance(error, asyncpg.InterfaceError) and not isinstance(error, ValueError)


def describe(error: BaseException) -> str:
    """The detail an unprocessable record is kept with: the error's type and
    message, cut to 1,024 characters, with what PostgreSQL cannot store in text
    (U+0000, unpaired surrogates) escaped."""
    text = f"{type(error).__name__}: {error}"[:MAX_DETAIL_CHARS]
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


async def store_isolating(pipeline: BatchPipeline, records: Sequence[Record]) -> list[BatchReport]:
    """Store ``records`` (offset order within each partition); isolate and reject
    any record that cannot be stored. Returns one report per transaction
    committed (a report whose ``rejected_by_reason`` counts ``unprocessable``
    is an isolation). Transient errors propagate, for the caller to retry the
    batch."""
    try:
        return [await pipeline.process(records)]
    except Exception as error:
        if is_transient(error):
            raise
        first = error
    if len(records) > 1:
        middle = len(records) // 2
        log.warning(
            "batch failed on its data, splitting it", records=len(records),
            error=redact_values(describe(first)),
        )  # fmt: skip
        before = await store_isolating(pipeline, records[:middle])
        return before + await store_isolating(pipeline, records[middle:])
    record = records[0]
    try:
        return [await pipeline.process(records)]  # once more alone: a race does not recur
    except Exception as error:
        if is_transient(error):
            raise
        detail = describe(error)
    log.error(
        "poison record isolated: rejected as unprocessable", partition=record.partition,
        offset=record.offset, detail=redact_values(detail),
    )  # fmt: skip
    return [await pipeline.reject_unprocessable(record, detail)]
