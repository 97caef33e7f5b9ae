"""Configuration, read once from the environment at a process's composition root.

Every setting has a ``LEDGER_`` variable; CONTRACT §5 names the four a user
needs most (``LEDGER_KAFKA_BOOTSTRAP``, ``LEDGER_DATABASE_URL``,
``LEDGER_POLICY``, ``LEDGER_API_PORT``). ``deploy/ledger.env.example`` lists
them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str | None = None
    database_url: str | None = None
    policy_path: Path | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    events_topic: str = "ledger.events"
    rejected_topic: str = "ledger.rejected"
    violations_topic: str = "ledger.violations"
    # Each signed checkpoint, keyed by log id: compacted (the latest per log), and
    # the full history (never deleted); ARCHITECTURE.md says why two topics.
    checkpoints_topic: str = "ledger.checkpoints"
    checkpoint_history_topic: str = "ledger.checkpoints.history"
    # Comma-separated URLs each signed checkpoint is POSTed to (CONTRACT §10).
    witnesses: str | None = None
    # A YAML/JSON file naming the URLs each alert is POSTed to (CONTRACT §8,
    # consent_ledger/webhooks.py), and how long a failing delivery is retried.
    webhooks: Path | None = None
    webhook_retry_horizon_s: float = 86_400.0
    webhook_timeout_s: float = 10.0
    partitions: int = 4
    consumer_group: str = "consent-ledger-worker"
    data_dir: Path = Path(".ledger-data")
    master_key_file: Path | None = None
    master_key: str | None = None  # base64 of 32 bytes; prefer the file in production
    signing_key_file: Path | None = None
    public_key_file: Path | None = None  # the API and `verify` need only this
    log_id: str = "consent-ledger"
    checkpoint_interval_s: float = 10.0
    batch_size: int = 2_000
    kafka_idempotence: bool | None = None  # None: on; dev turns it off for the embedded broker
    session_timeout_s: float = 30.0
    # How long the broker may hold a worker's fetch while no record is waiting.
    # Kafka answers as soon as one arrives, so this only bounds idle polling;
    # the embedded broker holds such a fetch to its end, and `dev` sets 50.
    fetch_max_wait_ms: int = 500
    max_request_bytes: int = 1_000_000
    integrity: bool = True  # benchmarks only: false skips sealing, digests and Merkle leaves
    # Transport to Kafka (CONTRACT §7); consent_ledger.kafka.kafka_security builds the clients' part.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ca_file: Path | None = None
    # Who may call the API (CONTRACT §7). JWTs are accepted only with issuer and audience set.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_roles_claim: str = "roles"
    oidc_sources_claim: str = "ledger_sources"  # a publisher's source values
    oidc_jwks_url: str | None = None  # default: jwks_uri of the issuer's discovery document
    oidc_algorithms: str | None = None  # comma-separated; default RS256,PS256,ES256,EdDSA
    oidc_jwks_cache_s: float = 300.0
    oidc_jwks_cooldown_s: float = 30.0  # least time between fetches for an unknown key id
    auth_failures_per_minute: int = 30  # per client address, then 429
    allowed_hosts: str | None = None  # comma-separated Host names; unset: any
    token: str | None = None  # LEDGER_TOKEN: what CLI commands that call the API present
    api_url: str | None = None  # LEDGER_API_URL: where those commands find the API

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        for alias, name in _ALIASES.items():
            if alias in env and name not in env:
                env[name] = env[alias]
        values: dict[str, Any] = {}
        for name, kind in _VARIABLES.items():
            raw = env.get(f"LEDGER_{name.upper()}")
            if raw is None or raw == "":
                continue
            try:
                values[name] = _convert(kind, raw)
            except ValueError:
                raise SettingsError(
                    f"LEDGER_{name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from None
        if "database_url" in values:
            _check_database_url(values["database_url"])
        _check_kafka_transport(values)
        return cls(**values)

    @property
    def witness_urls(self) -> tuple[str, ...]:
        """``LEDGER_WITNESSES`` split at commas, blanks dropped."""
        return tuple(url.strip() for url in (self.witnesses or "").split(",") if url.strip())

    @property
    def api_base_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


_VARIABLES: dict[str, type] = {
    "kafka_bootstrap": str,
    "database_url": str,
    "policy_path": Path,
    "api_host": str,
    "api_port": int,
    "events_topic": str,
    "rejected_topic": str,
    "violations_topic": str,
    "checkpoints_topic": str,
    "checkpoint_history_topic": str,
    "witnesses": str,
    "webhooks": Path,
    "webhook_retry_horizon_s": float,
    "webhook_timeout_s": float,
    "partitions": int,
    "consumer_group": str,
    "data_dir": Path,
    "master_key_file": Path,
    "master_key": str,
    "signing_key_file": Path,
    "public_key_file": Path,
    "log_id": str,
    "checkpoint_interval_s": float,
    "batch_size": int,
    "kafka_idempotence": bool,
    "session_timeout_s": float,
    "fetch_max_wait_ms": int,
    "max_request_bytes": int,
    "integrity": bool,
    "kafka_security_protocol": str,
    "kafka_sasl_mechanism": str,
    "kafka_sasl_username": str,
    "kafka_sasl_password_file": Path,
    "kafka_ca_file": Path,
    "oidc_issuer": str,
    "oidc_audience": str,
    "oidc_roles_claim": str,
    "oidc_sources_claim": str,
    "oidc_jwks_url": str,
    "oidc_algorithms": str,
    "oidc_jwks_cache_s": float,
    "oidc_jwks_cooldown_s": float,
    "auth_failures_per_minute": int,
    "allowed_hosts": str,
    "token": str,
    "api_url": str,
}
# CONTRACT §5 spells one variable differently from its field; from_env honours both.
_ALIASES = {"LEDGER_POLICY": "LEDGER_POLICY_PATH"}


def _convert(kind: type, raw: str) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    return kind(raw)


def _check_database_url(url: str) -> None:
    """Refuse, in one line, a URL that the database driver could not even parse
    (it would fail later, deep inside a connection attempt)."""
    problem = None
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            problem = "it must start with postgresql:// (or postgres://)"
        else:
            _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        problem = str(exc)
    if problem is not None:
        shown = url.partition("://")[0] + "://..." if "://" in url else "a value"
        raise SettingsError(
            f"LEDGER_DATABASE_URL ({shown}) is not a PostgreSQL URL: {problem}; "
            "e.g. postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        )
    # TLS (CONTRACT §7): asyncpg reads sslmode and sslrootcert from the URL
    # itself; a typo in either would surface only as a failed connection.
    query = parse_qs(urlsplit(url).query)
    for mode in query.get("sslmode", []):
        if mode not in _SSL_MODES:
            raise SettingsError(
                f"LEDGER_DATABASE_URL: sslmode={mode!r} is not one of " + ", ".join(_SSL_MODES)
            )
    for root in query.get("sslrootcert", []):
        if not Path(root).is_file():
            raise SettingsError(f"LEDGER_DATABASE_URL: sslrootcert={root} is not a file")


_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_VARIABLES = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password_file")


def _check_kafka_transport(values: dict[str, Any]) -> None:
    """Refuse, in one line each, the Kafka transport settings that cannot work
    together (normalising the protocol and mechanism to upper case). Reads no
    file: :func:`consent_ledger.kafka.kafka_security` does, when a client is made."""
    protocol = str(values.get("kafka_security_protocol", "PLAINTEXT")).strip().upper()
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise SettingsError(
            f"LEDGER_KAFKA_SECURITY_PROTOCOL={values['kafka_security_protocol']!r} is not one of "
            + ", ".join(KAFKA_SECURITY_PROTOCOLS)
        )
    values["kafka_security_protocol"] = protocol
    if "kafka_sasl_mechanism" in values:
        mechanism = str(values["kafka_sasl_mechanism"]).strip().upper()
        if mechanism not in KAFKA_SASL_MECHANISMS:
            raise SettingsError(
                f"LEDGER_KAFKA_SASL_MECHANISM={values['kafka_sasl_mechanism']!r} is not one of "
                + ", ".join(KAFKA_SASL_MECHANISMS)
            )
        values["kafka_sasl_mechanism"] = mechanism
    sasl_given = [name for name in _SASL_VARIABLES if name in values]
    if protocol.startswith("SASL_"):
        missing = [f"LEDGER_{name.upper()}" for name in _SASL_VARIABLES if name not in values]
        if missing:
            raise SettingsError(
                f"LEDGER_KAFKA_SECURITY_PROTOCOL={protocol} needs " + ", ".join(missing)
            )
        if protocol == "SASL_PLAINTEXT" and values["kafka_sasl_mechanism"] == "PLAIN":
            # PLAIN sends the password itself: without TLS anyone on the path reads it.
            raise SettingsError(
                "LEDGER_KAFKA_SASL_MECHANISM=PLAIN would send the password unencrypted over "
                "SASL_PLAINTEXT: use LEDGER_KAFKA_SECURITY_PROTOCOL=SASL_SSL, or a SCRAM mechanism"
            )
    elif sasl_given:
        named = ", ".join(f"LEDGER_{name.upper()}" for name in sasl_given)
        wanted = "SASL_SSL" if protocol == "SSL" else "SASL_SSL or SASL_PLAINTEXT"
        raise SettingsError(
            f"{named} set, but LEDGER_KAFKA_SECURITY_PROTOCOL={protocol} sends no credentials: "
            f"use {wanted}"
        )
    if "kafka_ca_file" in values and not protocol.endswith("SSL"):
        raise SettingsError(
            f"LEDGER_KAFKA_CA_FILE set, but LEDGER_KAFKA_SECURITY_PROTOCOL={protocol} does not "
            "use TLS: use SSL or SASL_SSL"
        )
