"""The endpoints of the HTTP API (docs/CONTRACT.md §6), one router per area.

Handlers are thin: parse and check the request, read through
:mod:`consent_ledger.store.api_reads` or publish through :mod:`consent_ledger.api.broker`,
and shape the answer with :mod:`consent_ledger.api.models`. What is not HTTP
lives below: consent status in :mod:`consent_ledger.core.consents`, the
Prometheus page in :mod:`consent_ledger.api.metrics`.
"""

from __future__ import annotations

from fastapi import APIRouter

from consent_ledger.api.routes import (
    access,
    events,
    ledger,
    listings,
    operations,
    policy,
    reports,
    subject_report,
    subjects,
)
from consent_ledger.api.routes.common import ApiContext
from consent_ledger.api.routes.events import EVENT_COMPONENTS

__all__ = ["EVENT_COMPONENTS", "ApiContext", "router"]

router = APIRouter()  # every route refuses NUL in its parameters: api/auth.py
_AREAS = (events, listings, reports, subjects, subject_report, ledger, policy, operations, access)
for _area in _AREAS:
    router.include_router(_area.router)
