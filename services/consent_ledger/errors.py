"""The ledger's own errors: what a caller of the store can be told, by kind.

::

    LedgerError
    ├── NotFound (also a LookupError)
    │   ├── UnknownEvent        no ledger entry has this event id
    │   └── UnknownCheckpoint   no checkpoint with this id, or none signed yet
    ├── NotCovered              the entry exists, but the checkpoint's tree does not hold it
    ├── LedgerInconsistent      what is stored disagrees with itself or its signatures
    └── RebuildError            the read models cannot be rebuilt: an entry is unreadable

The API maps each kind to a status in one place (``api/errors.py``), so a bug
that raises a built-in exception is an internal error (500 "internal-error"),
never mistaken for a ledger that fails its own checks. The pure core raises
its own exceptions (``ValueError`` subclasses such as ``intake.InvalidJson``):
it is compiled with mypyc, whose classes cannot derive from these.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of the ledger's own errors; the message is a sentence for a person."""


class NotFound(LedgerError, LookupError):
    """The thing asked for does not exist."""


class UnknownEvent(NotFound):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"no ledger entry with event id {event_id!r}")
        self.event_id = event_id


class UnknownCheckpoint(NotFound):
    """``checkpoint_id`` None: the latest was asked for, and none is signed yet."""

    def __init__(self, checkpoint_id: int | None) -> None:
        super().__init__(
            "no checkpoint yet" if checkpoint_id is None else f"no checkpoint {checkpoint_id}"
        )
        self.checkpoint_id = checkpoint_id


class NotCovered(LedgerError):
    """An entry recorded after the checkpoint it is to be proved against was signed.

    ``checkpoint_id`` is that checkpoint (None when none is signed at all);
    ``named`` says whether the caller chose it or asked for the latest.
    """

    def __init__(self, event_id: str, checkpoint_id: int | None, *, named: bool) -> None:
        where = "a checkpoint" if checkpoint_id is None else f"checkpoint {checkpoint_id}"
        super().__init__(f"event {event_id!r} is not covered by {where}")
        self.event_id = event_id
        self.checkpoint_id = checkpoint_id
        self.named = named


class LedgerInconsistent(LedgerError):
    """Stored rows that fail the ledger's own checks: a checkpoint that does not
    parse, leaves that do not give a signed root, a log that shrank.
    ``consent-ledger verify`` says where."""


class RebuildError(LedgerError):
    """``consent-ledger rebuild`` cannot replay the ledger: an entry of a subject
    never erased cannot be read (no key, a key the master key does not unwrap, a
    payload that does not open), or the core refuses an entry the ledger holds."""
