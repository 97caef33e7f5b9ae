"""What `consent-ledger dev` prints of a database address: never its password."""

from __future__ import annotations

import pytest

from consent_ledger.dev import _without_password

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ledger:s3cret@db:5432/ledger?sslmode=require",
         "postgresql://ledger:***@db:5432/ledger?sslmode=require"),
        ("postgresql://ledger@db/ledger", "postgresql://ledger@db/ledger"),
        ("postgresql://postgres:@/consent_ledger?host=/data/postgres",
         "postgresql://postgres:@/consent_ledger?host=/data/postgres"),  # embedded: none
    ],
)  # fmt: skip
def test_the_banner_hides_a_database_password(url: str, shown: str) -> None:
    assert _without_password(url) == shown
