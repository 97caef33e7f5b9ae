"""The HTTP API's composition root: :func:`create_app` wires an app, :func:`serve` runs it.

Nothing connects at import time or in :func:`create_app`: the database pool is
opened (and the schema migrated) in the app's lifespan unless a pool is given,
and the Kafka producer is started on the first ``POST /v1/events`` unless one
is given, so the read endpoints keep working while the broker is down. Likewise
the consumer that asks how far the events topic goes (the lag) is started on
the first ``/v1/stats`` or ``/metrics``, kept, and stopped in the lifespan.
Adapters given by the caller stay the caller's to close.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg
import structlog
import uvicorn
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI

from consent_ledger.api import dashboard
from consent_ledger.api.auth import Authenticator, install_auth
from consent_ledger.api.broker import LogEndOffsets, Publisher
from consent_ledger.api.errors import install_error_handlers
from consent_ledger.api.metrics import RequestCountingMiddleware
from consent_ledger.api.routes import EVENT_COMPONENTS, ApiContext, router
from consent_ledger.core.policy import Policy, PolicyVersions, as_versions, load_policy_versions
from consent_ledger.integrity.checkpoints import load_public_key, load_signing_key
from consent_ledger.integrity.keyring import load_keyring
from consent_ledger.kafka import kafka_security
from consent_ledger.settings import Settings, SettingsError
from consent_ledger.store.api_reads import LedgerReader
from consent_ledger.store.migrate import migrate

log = structlog.get_logger(__name__)

API_VERSION = "1.0.0"


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    producer: AIOKafkaProducer | None = None,
    policy: PolicyVersions | Policy,
) -> FastAPI:
    """The API app for ``settings``.

    ``pool``: an open asyncpg pool on a migrated database; without it the
    lifespan opens one on ``settings.database_url`` and applies the migrations.
    ``producer``: a started producer; without it one is made from ``settings``
    when first needed. The master key (``settings.master_key_file`` or
    ``master_key``) is loaded here, so a missing key stops the app before it
    serves anything (:class:`~consent_ledger.integrity.keyring.MasterKeyError`).
    So is the checkpoint signing key (``settings.signing_key_file``, optional):
    only its public half is kept, for ``GET /v1/ledger/public-key``; an
    unreadable key file raises :class:`~consent_ledger.settings.SettingsError`,
    as do unusable identity-provider settings (``LEDGER_OIDC_*``).
    """
    auth = Authenticator.from_settings(settings)
    auth.attach(pool)
    context = ApiContext(
        settings=settings,
        policy=as_versions(policy),
        keyring=load_keyring(settings.master_key_file, settings.master_key),
        publisher=Publisher(settings, producer),
        log_end=LogEndOffsets(settings.kafka_bootstrap, kafka_security(settings)),
        reader=LedgerReader(pool) if pool is not None else None,
        public_key=_checkpoint_public_key(settings),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if pool is None:
                own_pool = await _open_pool(settings)
                stack.push_async_callback(own_pool.close)
                context.reader = LedgerReader(own_pool)
                auth.attach(own_pool)
            stack.push_async_callback(context.publisher.close)
            stack.push_async_callback(context.log_end.close)
            log.info("api started", events_topic=settings.events_topic)
            yield
            if pool is None:
                context.reader = None
                auth.attach(None)
        log.info("api stopped")

    app = FastAPI(
        title="consent-ledger",
        version=API_VERSION,
        summary="Event-sourced audit ledger for personal data: consents, disclosures, violations.",
        lifespan=lifespan,
        docs_url=None,  # served from the package by api/dashboard.py, not from a CDN
        redoc_url=None,
    )
    app.state.context = context
    install_error_handlers(app, checkpoint_interval_s=settings.checkpoint_interval_s)
    app.add_middleware(RequestCountingMiddleware, counts=context.requests)
    app.include_router(router)
    app.include_router(dashboard.router)
    install_auth(app, auth)
    app.openapi = _with_event_schemas(app.openapi)  # type: ignore[method-assign]
    return app


def _checkpoint_public_key(settings: Settings) -> Ed25519PublicKey | None:
    """The checkpoints' public key: from ``LEDGER_PUBLIC_KEY_FILE`` (so the API
    need not hold the private key), else the public half of the signing key, or
    None when neither is configured."""
    if settings.public_key_file is not None:
        try:
            return load_public_key(settings.public_key_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise SettingsError(
                f"LEDGER_PUBLIC_KEY_FILE: cannot load the public key: {exc}"
            ) from exc
    if settings.signing_key_file is None:
        return None
    try:
        return load_signing_key(settings.signing_key_file).public_key()
    except (OSError, ValueError) as exc:
        raise SettingsError(f"LEDGER_SIGNING_KEY_FILE: cannot load the signing key: {exc}") from exc


async def _open_pool(settings: Settings) -> asyncpg.Pool:
    if not settings.database_url:
        raise SettingsError("LEDGER_DATABASE_URL is not set")
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=10, command_timeout=30
    )
    try:
        async with pool.acquire() as connection:
            applied = await migrate(connection)
    except BaseException:
        await pool.close()
        raise
    if applied:
        log.info("database migrated", migrations=applied)
    return pool


def _with_event_schemas(
    openapi: Callable[[], dict[str, Any]],
) -> Callable[[], dict[str, Any]]:
    """Add the event models the request body of POST /v1/events refers to, and
    drop FastAPI's default 422 answers: a bad parameter is a 400 here."""

    def openapi_with_events() -> dict[str, Any]:
        schema = openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, component in EVENT_COMPONENTS.items():
            components.setdefault(name, component)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                answer = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(answer):
                    del operation["responses"]["422"]
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        return schema

    return openapi_with_events


def build_server(
    settings: Settings,
    *,
    policy: PolicyVersions | Policy | None = None,
    pool: asyncpg.Pool | None = None,
    producer: AIOKafkaProducer | None = None,
) -> uvicorn.Server:
    """A uvicorn server for the API on ``settings.api_host:api_port``.

    ``await server.serve()`` runs it; set ``server.should_exit = True`` to stop
    it gracefully (what a supervisor running several services does). Without
    ``policy``, the versions at ``settings.policy_path`` (a file or a folder) or
    the reference policy.
    """
    if policy is None:
        policy = load_policy_versions(settings.policy_path)
    app = create_app(settings, pool=pool, producer=producer, policy=policy)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        lifespan="on",
        access_log=False,
        server_header=False,
    )
    return uvicorn.Server(config)


async def serve(settings: Settings, *, policy: PolicyVersions | Policy | None = None) -> None:
    """Run the API until the process is told to stop (``consent-ledger api``)."""
    server = build_server(settings, policy=policy)
    await server.serve()
