"""An asyncio TCP front-end that frames lines for a simulator, with fault injection.

The instrument model stays transport-agnostic: it only maps one received line to one reply (or to
no reply). `LineServer` moves those lines over TCP the way a LAN instrument's raw socket does
(SCPI's port 5025 convention): commands end with LF (a CR before it is accepted and stripped),
replies end with LF, a command that yields no reply sends nothing, so a client waiting for one
times out just as with a real instrument (INSTRUMENTS.md §6: termination pitfalls).

Several clients may connect at once; each gets its own task, and all drive the same instrument.
Lines are handled one at a time per connection, and the handler is synchronous, so a command is
atomic with respect to the other connections.

Fault injection (`Faults`) makes the link misbehave the ways DESIGN.md §3 asks drivers to survive:
drop the connection when the next command arrives, delay every reply (wall time), garble the next
reply, split replies into fragments written separately, refuse new connections (an instrument
still booting, or a switch port down). `LineServer.drop_connections()` "unplugs" every client at
once; with `refuse_connections` set meanwhile, the instrument stays unreachable until cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Self

log = logging.getLogger(__name__)

LineHandler = Callable[[str], str | None]
"""Maps one received line (terminator stripped) to a reply without terminator, or None."""


@dataclass
class Faults:
    """Link faults to inject; change the fields while the server runs.

    One-shot faults reset themselves once they have fired; persistent ones stay until set back.
    """

    drop_next_command: bool = False
    """One-shot: when the next line arrives, close that connection without executing the line
    (the command is lost, as when a cable is pulled while it is in flight)."""
    reply_delay_s: float = 0.0
    """Persistent: wait this many seconds of wall time before sending each reply. The command is
    executed at once; only its reply is late, so a client with a shorter timeout times out."""
    garble_next_reply: bool = False
    """One-shot: set the top bit of every byte of the next reply (the LF stays, so the client
    reads a line of the right length that is not valid ASCII)."""
    fragment_size: int = 0
    """Persistent: if > 0, write replies in chunks of this many bytes, each flushed separately
    with `fragment_gap_s` between them, so the client sees partial reads."""
    fragment_gap_s: float = 0.002
    """Wall-time pause between fragments."""
    refuse_connections: bool = False
    """Persistent: close every new connection as soon as it is accepted, before it reads a line
    (the client's first command fails as on a refused or reset connection)."""

    def clear(self) -> None:
        """Back to a healthy link."""
        self.refuse_connections = False
        self.drop_next_command = False
        self.reply_delay_s = 0.0
        self.garble_next_reply = False
        self.fragment_size = 0


def garble(data: bytes) -> bytes:
    """Corrupt a framed reply: top bit set on every payload byte, the final LF kept."""
    payload, newline = (data[:-1], data[-1:]) if data.endswith(b"\n") else (data, b"")
    return bytes(byte | 0x80 for byte in payload) + newline


@dataclass(frozen=True, slots=True)
class _Connection:
    writer: asyncio.StreamWriter
    worker: asyncio.Task[None]
    """Serves the connection's lines; cancelled to stop it."""


class ServerState(Enum):
    """Where a server is in its lifetime; a closed server is not restarted."""

    UNSTARTED = "unstarted"
    """Constructed; nothing is listening."""
    SERVING = "serving"
    """Listening and serving clients."""
    CLOSED = "closed"
    """Closed for good; make a new server to serve again."""


class LineServer:
    """Serves a line handler over TCP.

    Args:
        handler: the instrument model's line handler.
        name: used in log messages.
        faults: shared fault settings; a fresh healthy `Faults` if not given.
        max_line_bytes: longer commands close the connection (the instrument's input buffer
            would overflow); 1 MiB by default.

    Example:
        async with LineServer(model.handle_line) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    """

    def __init__(
        self,
        handler: LineHandler,
        *,
        name: str = "line server",
        faults: Faults | None = None,
        max_line_bytes: int = 1 << 20,
    ) -> None:
        self._handler = handler
        self.name = name
        self.faults = faults if faults is not None else Faults()
        self.max_line_bytes = max_line_bytes
        self.state = ServerState.UNSTARTED
        self._server: asyncio.Server | None = None
        self._port = 0
        self._connections: dict[asyncio.Task[None], _Connection] = {}

    async def __aenter__(self) -> Self:
        if self.state is ServerState.UNSTARTED:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        """The bound TCP port (0 before `start`)."""
        return self._port

    @property
    def connection_count(self) -> int:
        """Clients connected now."""
        return len(self._connections)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port and return the bound port once listening (port 0 = a free port).

        Raises:
            RuntimeError: if the server was already started or closed.
        """
        if self.state is not ServerState.UNSTARTED:
            raise RuntimeError(f"{self.name}: already {self.state.value}; make a new server")
        self._server = await asyncio.start_server(self._serve_client, host, port, limit=self.max_line_bytes)
        self._port = self._server.sockets[0].getsockname()[1]
        self.state = ServerState.SERVING
        log.info("%s listening on %s:%d", self.name, host, self._port)
        return self._port

    async def drop_connections(self) -> None:
        """Close every client connection now ("unplug"); the server keeps listening."""
        connections = list(self._connections.items())
        for connection in self._connections.values():
            connection.writer.transport.abort()
            connection.worker.cancel()
        if connections:
            await asyncio.wait([task for task, _ in connections])

    async def aclose(self) -> None:
        """Stop listening, close every connection and wait for their tasks to finish."""
        if self.state is ServerState.CLOSED:
            return
        self.state = ServerState.CLOSED
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()
        log.info("%s on port %d closed", self.name, self._port)

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio owns this task and calls task.exception() when it ends, which raises if the task
        # was cancelled (Python 3.11 streams.py). So the connection's work runs in a worker task
        # this server owns and may cancel, and this task always ends normally.
        task = asyncio.current_task()
        assert task is not None
        if self.state is not ServerState.SERVING or self.faults.refuse_connections:  # closing, or refusing
            writer.transport.abort()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Fragments must leave as separate segments, and short replies must not wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        worker = asyncio.create_task(self._serve_lines(reader, writer), name=f"{self.name} {peer}")
        self._connections[task] = _Connection(writer, worker)
        log.debug("%s: client %s connected", self.name, peer)
        try:
            await asyncio.wait([worker])
        finally:
            if not worker.done():
                worker.cancel()
                await asyncio.wait([worker])
            if not worker.cancelled() and (error := worker.exception()) is not None:
                log.error("%s: client %s: %r", self.name, peer, error)
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            log.debug("%s: client %s disconnected", self.name, peer)

    async def _serve_lines(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # EOF or reset; a partial command without terminator is never executed
            except asyncio.LimitOverrunError:
                log.warning("%s: command longer than %d bytes; closing", self.name, self.max_line_bytes)
                return
            if self.faults.drop_next_command:
                self.faults.drop_next_command = False
                log.info("%s: fault: dropping the connection", self.name)
                writer.transport.abort()
                return
            line = raw[:-1].removesuffix(b"\r").decode("ascii", errors="replace")
            reply = self._handler(line)
            if reply is not None:
                try:
                    await self._send(writer, (reply + "\n").encode("ascii", errors="replace"))
                except ConnectionError:
                    return

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        faults = self.faults
        if faults.garble_next_reply:
            faults.garble_next_reply = False
            data = garble(data)
        if faults.reply_delay_s > 0:
            await asyncio.sleep(faults.reply_delay_s)
        size = faults.fragment_size
        if size <= 0:
            writer.write(data)
            await writer.drain()
            return
        for start in range(0, len(data), size):
            writer.write(data[start : start + size])
            await writer.drain()
            if start + size < len(data):
                await asyncio.sleep(faults.fragment_gap_s)
