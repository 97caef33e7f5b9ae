"""consent-ledger: an event-sourced, tamper-evident audit ledger for personal data."""

__version__ = "0.1.0"
