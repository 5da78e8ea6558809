"""A loopback TCP proxy that can fall silent: it accepts connections and never answers.

A server that accepts TCP but never speaks (a stuck host, a half-open load balancer) is
what a connect timeout is for; `silent_server` is one, and `TcpProxy.silence()` turns a
working path to a real server into one (its open connections cut, new ones left hanging).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

#: Bytes read at once from either side.
_CHUNK = 65536


class TcpProxy:
    """Forwards each connection to `target` while forwarding; holds it silently otherwise."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._forwarding = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def silence(self) -> None:
        """Cut every open connection; new ones are accepted and never answered."""
        self._forwarding = False
        for writer in list(self._writers):
            writer.transport.abort()

    def resume(self) -> None:
        """Forward new connections again."""
        self._forwarding = True

    async def close(self) -> None:
        self.silence()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if not self._forwarding:
                await asyncio.Event().wait()  # until cancelled by close()
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            self._writers.add(up_writer)
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.transport.abort()
                self._writers.discard(up_writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.transport.abort()


@asynccontextmanager
async def tcp_proxy(target_host: str, target_port: int) -> AsyncIterator[TcpProxy]:
    """A started proxy to the target, closed (with its connections) on exit."""
    proxy = TcpProxy(target_host, target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """The port of a loopback server that accepts connections and never answers."""
    async with tcp_proxy("127.0.0.1", 9) as proxy:
        proxy.silence()
        yield proxy.port
