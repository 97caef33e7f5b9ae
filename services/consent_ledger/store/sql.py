"""Small helpers for set-based SQL with asyncpg."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def as_columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as column lists, for one ``unnest($1, $2, ...)`` statement instead of one
    statement per row."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
