"""A TCP proxy that drops connections on cue: the outage of a network link,
for tests (tests/e2e/test_outages.py).

It forwards every connection accepted on its port (or on a Unix socket: the
embedded PostgreSQL listens on one only) to a target port or socket. :meth:`cut`
resets every open connection and resets each new one at once, until
:meth:`restore`. It runs its own event loop in a thread, so that a test that
blocks (a subprocess, a synchronous client) does not stall the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Self

from consent_ledger.devtools.processes import find_free_port


class TcpProxy:
    def __init__(
        self, target: int | Path, *, unix_socket: Path | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.target = target  # a port on ``host``, or a Unix socket
        self.unix_socket = unix_socket  # where to listen instead of a port of its own
        self.port = find_free_port(host)
        self.connections = 0  # accepted while not cut, for the test to see traffic passed
        self._cut = False
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Reset every connection, and each new one, until :meth:`restore`."""
        self._call(self._drop_all())

    def restore(self) -> None:
        self._call(self._resume())

    def stop(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self.unix_socket is not None:
            self._server = await asyncio.start_unix_server(self._forward, self.unix_socket)
        else:
            self._server = await asyncio.start_server(self._forward, self.host, self.port)

    async def _drop_all(self) -> None:
        self._cut = True
        for writer in list(self._open):
            writer.transport.abort()  # RST: the peer sees the connection reset
        self._open.clear()

    async def _resume(self) -> None:
        self._cut = False

    async def _close(self) -> None:
        await self._drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            if isinstance(self.target, Path):
                upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.target)
            else:
                upstream_reader, upstream_writer = await asyncio.open_connection(
                    self.host, self.target
                )
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        pair = {writer, upstream_writer}
        self._open |= pair
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            for end in pair:
                end.transport.abort()
            self._open -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side ends; then end both (the caller aborts them)."""
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
