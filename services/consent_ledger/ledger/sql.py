"""Small helpers for set-based SQL with asyncpg."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def as_columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as column lists, for one ``unnest($1, $2, ...)`` statement instead of one
    statement per row."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


@dataclass(frozen=True, slots=True)
class NamedStatement:
    """A statement whose parameters are named in its text (``$name``), for
    statements with too many to number by hand; :meth:`arguments` puts values
    given by name in the order of the numbered parameters sent."""

    text: str
    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> NamedStatement:
        names: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            return f"${names.setdefault(match.group(1), len(names) + 1)}"

        numbered = re.sub(r"\$([a-z_][a-z0-9_]*)", number, text)
        return cls(numbered, tuple(names))

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        missing = set(self.names) - set(values)
        unknown = set(values) - set(self.names)
        if missing or unknown:
            raise ValueError(f"parameters missing {sorted(missing)}, unknown {sorted(unknown)}")
        return [values[name] for name in self.names]
