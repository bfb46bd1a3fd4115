r"""Async serial transport over pyserial-asyncio-fast, with explicit line framing.

Why this shape (INSTRUMENTS.md §6):

- **Framing is explicit.** The terminator differs per instrument (LF for MethodSCRIPT, CR for Alicat,
  CRLF for Espec/Mark-10 replies), so a `LineFramer` with a configurable end-of-line is passed in,
  never a hard-coded `\n`. Bytes are accumulated until a frame completes: a partial read is normal
  on a serial line, not an error.
- **Short low-level waits, looped.** PalmSens advises keeping low-level read timeouts under 1 s and
  handling the overall timeout at the application level, because "no data yet" during a long
  measurement is not a failure. `read_line` waits in slices of `poll_s` (< 1 s) up to the caller's
  deadline, and raises `InstrumentTimeout` only at that deadline, keeping any partial frame.
- **Exclusive open** on POSIX (`exclusive=True`, a `flock`): a second program on the same port
  (pyserial#86) is refused at open with a message naming the cause, instead of both reading half of
  the stream.
- **Errors are translated here.** `SerialException`/`OSError` never travel above this module: a
  missing port, a port in use, a permission problem, a vanished device (EIO when a USB adapter is
  unplugged or a pty master closes) and an EOF on a `socket://` link all become `LinkError`s that say
  what to do (STYLE.md rule 12).
- **URLs.** A device path (`/dev/ttyACM0`, `/dev/serial/by-id/…`, a pty slave `/dev/pts/N`) or any
  pyserial URL. `socket://host:port` is served by pyserial-asyncio-fast itself (it opens a plain
  asyncio TCP connection for that scheme), so simulators can be reached over TCP with the same code.

Reconnection is the caller's visible loop around `async with` (STYLE.md rule 7): a transport is
opened once and not reopened; make a new one (after re-resolving the port, e.g. by
`/dev/serial/by-id/…`) to reconnect.

Locking: one `asyncio.Lock` per port serialises *writers and exchanges* (`write`, `query`), and a
second one keeps a single *reader* (`read_line`). They are separate so that a task streaming a long
measurement can sit in `read_line` while another task sends an abort — the one interleaving that
must never block.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import urllib.parse
from enum import Enum
from typing import Any

from drivers.errors import InstrumentTimeout, LinkError

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 0.5
"""Low-level wait slice, below 1 s as PalmSens advises."""


class TransportState(Enum):
    """Where a transport is in its lifetime; a closed transport is not reopened."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class LineFramer:
    r"""Splits a byte stream into frames that end with `eol`, keeping partial frames.

    Args:
        eol: the terminator (b"\n" for MethodSCRIPT and SCPI, b"\r" for Alicat, b"\r\n" for Espec).
        encoding: how frame bytes become text; undecodable bytes are replaced, never raised, so a
            garbled frame reaches the protocol layer, which reports it as a reply error.
        max_frame: bytes allowed without a terminator before the stream is declared broken (a
            wrong baud rate or terminator produces exactly this).
    """

    def __init__(self, eol: bytes | str = b"\n", *, encoding: str = "ascii", max_frame: int = 65536) -> None:
        self.eol = eol.encode("ascii") if isinstance(eol, str) else bytes(eol)
        if not self.eol:
            raise ValueError("the end-of-line terminator must not be empty")
        self.encoding = encoding
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buffer += data

    def next_frame(self) -> str | None:
        """The oldest complete frame without its terminator, or None if none is complete yet."""
        end = self._buffer.find(self.eol)
        if end < 0:
            if len(self._buffer) > self.max_frame:
                size = len(self._buffer)
                self._buffer.clear()
                raise LinkError(
                    f"{size} bytes arrived without a {self.eol!r} terminator; check the baud rate "
                    "and that the device speaks this protocol"
                )
            return None
        frame = bytes(self._buffer[:end])
        del self._buffer[: end + len(self.eol)]
        return frame.decode(self.encoding, errors="replace")

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete frame received so far."""
        return bytes(self._buffer)

    def clear(self) -> bytes:
        """Drop everything buffered; returns what was dropped."""
        dropped = bytes(self._buffer)
        self._buffer.clear()
        return dropped

    def encode(self, text: str) -> bytes:
        """Text → bytes in this framer's encoding (no terminator added)."""
        return text.encode(self.encoding)


class _StreamProtocol(asyncio.Protocol):
    """Collects received bytes into a framer and remembers why the link ended."""

    def __init__(self, framer: LineFramer) -> None:
        self.framer = framer
        self.data_arrived = asyncio.Event()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost = False
        self.lost_reason: BaseException | None = None
        self._write_paused = False
        self._write_resumed = asyncio.Event()
        self._write_resumed.set()

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        self.data_arrived.set()

    def eof_received(self) -> bool:
        return False  # let the transport close; connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.lost_reason = exc
        self.data_arrived.set()
        self._write_resumed.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_resumed.clear()

    def resume_writing(self) -> None:
        self._write_resumed.set()

    async def wait_writable(self) -> None:
        await self._write_resumed.wait()


class SerialTransport:
    r"""One serial port (or pyserial URL) carrying line-framed text.

    Args:
        url: a device path (`/dev/ttyACM0`, `/dev/serial/by-id/usb-PalmSens_EmStat4…`, a pty slave
            `/dev/pts/N`) or a pyserial URL such as `socket://127.0.0.1:4000`.
        baudrate: bits per second (921600 for EmStat4/Nexus, 230400 for EmStat Pico); ignored by
            `socket://`.
        eol: frame terminator for reads; also appended by `write_line`.
        encoding: text encoding on the wire.
        timeout_s: default overall deadline of `read_line`/`query`/`write`, in seconds.
        poll_s: low-level wait slice in seconds (kept below 1 s, see the module docstring).
        exclusive: lock the port against other processes (POSIX); ignored for `socket://`.
        serial_options: more keyword arguments for `serial.serial_for_url` (parity, rtscts, …).
    """

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 921600,
        eol: bytes | str = b"\n",
        encoding: str = "ascii",
        timeout_s: float = 2.0,
        poll_s: float = DEFAULT_POLL_S,
        exclusive: bool = True,
        **serial_options: Any,
    ) -> None:
        if not 0 < poll_s < 1:
            raise ValueError(f"poll_s must be between 0 and 1 s, not {poll_s!r}")
        self.resource = url
        self.baudrate = baudrate
        self.framer = LineFramer(eol, encoding=encoding)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.exclusive = exclusive
        self.serial_options = serial_options
        self.state = TransportState.UNOPENED
        self._lock = asyncio.Lock()
        """Serialises writes and write+read exchanges on this port."""
        self._read_lock = asyncio.Lock()
        """Keeps one reader at a time; separate so a waiting reader never delays a write."""
        self._transport: asyncio.Transport | None = None
        self._protocol: _StreamProtocol | None = None

    @property
    def is_socket(self) -> bool:
        """Whether the URL is a `socket://` link rather than a serial device."""
        return urllib.parse.urlparse(self.resource).scheme == "socket"

    async def __aenter__(self) -> SerialTransport:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open the port; every way that fails becomes a LinkError that says what to do."""
        if self.state is TransportState.CLOSED:
            raise LinkError(f"{self.resource}: this transport was closed; make a new one to reconnect")
        if self.state is TransportState.OPEN:
            return
        import serial_asyncio_fast  # imported here: not needed for `labctl --help`

        loop = asyncio.get_running_loop()
        protocol = _StreamProtocol(self.framer)
        options: dict[str, Any] = {"baudrate": self.baudrate, **self.serial_options}
        if not self.is_socket:
            options["exclusive"] = self.exclusive
        try:
            transport, _ = await serial_asyncio_fast.create_serial_connection(
                loop, lambda: protocol, self.resource, **options
            )
        except Exception as exc:  # SerialException, OSError, ValueError for a malformed URL
            raise LinkError(_open_failure(self.resource, exc)) from exc
        self._transport, self._protocol = transport, protocol
        self.state = TransportState.OPEN
        log.debug("%s: open", self.resource)

    async def aclose(self) -> None:
        """Close the port and wait until its file descriptor is released; safe to call twice."""
        if self.state is not TransportState.OPEN:
            self.state = TransportState.CLOSED
            return
        self.state = TransportState.CLOSED
        transport, protocol = self._transport, self._protocol
        assert transport is not None and protocol is not None
        if not protocol.lost:
            transport.close()
        # pyserial-asyncio-fast closes the device in an executor after `close()`; waiting for
        # connection_lost means the fd is really closed when we return (no ResourceWarning, and the
        # port can be reopened at once by the next transport).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await asyncio.shield(protocol.closed)
        log.debug("%s: closed", self.resource)

    def discard_input(self) -> bytes:
        """Drop received bytes not yet read (e.g. stale output before a resync); returns them."""
        return self.framer.clear()

    async def write(self, text: str, *, timeout_s: float | None = None) -> None:
        """Send `text` as it is (add the terminator yourself, or use `write_line`)."""
        async with self._lock:
            await self._write(text, self.timeout_s if timeout_s is None else timeout_s)

    async def write_line(self, text: str, *, timeout_s: float | None = None) -> None:
        """Send `text` followed by the framer's terminator."""
        await self.write(text + self.framer.eol.decode("ascii"), timeout_s=timeout_s)

    async def read_line(self, timeout_s: float | None = None) -> str:
        """The next complete frame without its terminator.

        Waits in slices of `poll_s` up to `timeout_s` (default: the transport's timeout). A partial
        frame at the deadline stays buffered for the next call, because on a serial line the rest
        may still be on its way.

        Raises:
            InstrumentTimeout: no complete frame within `timeout_s`.
            LinkError: the link closed or failed (unplugged device, peer closed the socket).
        """
        async with self._read_lock:
            return await self._read_line(self.timeout_s if timeout_s is None else timeout_s)

    async def query(self, text: str, *, timeout_s: float | None = None) -> str:
        """Send one line and return the next frame: one exchange, never interleaved with another."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        async with self._lock, self._read_lock:
            await self._write(text + self.framer.eol.decode("ascii"), timeout)
            return await self._read_line(timeout)

    async def _write(self, text: str, timeout_s: float) -> None:
        transport, protocol = self._require_open()
        data = self.framer.encode(text)
        log.debug("%s << %r", self.resource, data)
        transport.write(data)
        if transport.is_closing() or protocol.lost:  # a failed write closes the transport at once
            raise LinkError(self._lost_message(protocol, f"writing {text[:40]!r}"))
        try:
            async with asyncio.timeout(timeout_s):
                await protocol.wait_writable()
        except TimeoutError:
            raise InstrumentTimeout(
                f"{self.resource}: could not send {text[:40]!r} within {timeout_s:g} s (output "
                "blocked); check the cable and flow-control settings"
            ) from None
        if protocol.lost:
            raise LinkError(self._lost_message(protocol, f"writing {text[:40]!r}"))

    async def _read_line(self, timeout_s: float) -> str:
        _, protocol = self._require_open(allow_lost=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            frame = self.framer.next_frame()
            if frame is not None:
                log.debug("%s >> %r", self.resource, frame)
                return frame
            if protocol.lost:
                raise LinkError(self._lost_message(protocol, "reading"))
            remaining = deadline - loop.time()
            if remaining <= 0:
                partial = self.framer.pending
                detail = f" (a partial frame {partial[:40]!r} is buffered)" if partial else ""
                raise InstrumentTimeout(
                    f"{self.resource}: no complete reply within {timeout_s:g} s{detail}; check the "
                    "cable, the baud rate and that the instrument is on"
                )
            protocol.data_arrived.clear()
            # The buffer may have been filled between next_frame() and clear(); check before waiting.
            if self.framer.pending.find(self.framer.eol) >= 0:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.poll_s, remaining)):
                    await protocol.data_arrived.wait()

    def _require_open(self, *, allow_lost: bool = False) -> tuple[asyncio.Transport, _StreamProtocol]:
        if self.state is not TransportState.OPEN:
            raise LinkError(f"{self.resource}: not connected (state {self.state.value})")
        assert self._transport is not None and self._protocol is not None
        if self._protocol.lost and not allow_lost:
            raise LinkError(self._lost_message(self._protocol, "writing"))
        return self._transport, self._protocol

    def _lost_message(self, protocol: _StreamProtocol, during: str) -> str:
        reason = protocol.lost_reason
        if reason is None:
            what = "the instrument (or the simulator) closed the connection"
        elif _is_vanished(reason):
            what = "the device vanished (unplugged, powered off or re-enumerated)"
        else:
            what = f"the link failed ({_reason(reason)})"
        return (
            f"{self.resource}: link lost while {during}: {what}; check the cable and power, then "
            "reconnect (the port may come back under another name: prefer /dev/serial/by-id/…)"
        )


def _open_failure(resource: str, exc: BaseException) -> str:
    text = str(exc)
    code = _errno_of(exc)
    if "exclusively lock" in text or code in (errno.EBUSY, errno.EAGAIN):
        return (
            f"{resource}: port in use by another program; close it (another labctl, a serial "
            "terminal, ModemManager) and retry"
        )
    if code == errno.ENOENT or "No such file" in text:
        return (
            f"{resource}: no such port; check that the instrument is plugged in and on, and the "
            "port name (`ls /dev/serial/by-id/`)"
        )
    if code == errno.EACCES or "Permission denied" in text:
        return f"{resource}: permission denied; add your user to the 'dialout' group and log in again"
    if code == errno.ECONNREFUSED or "refused" in text.lower():
        return f"{resource}: connection refused; check the host and port, and that the server runs"
    return f"{resource}: cannot open ({_reason(exc)}); check the port name and that the device is on"


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    cause = exc.__cause__ or exc.__context__
    return _errno_of(cause) if cause is not None else None


def _is_vanished(exc: BaseException) -> bool:
    text = str(exc)
    return (
        _errno_of(exc) in (errno.EIO, errno.ENXIO, errno.ENODEV)
        or "Input/output error" in text
        or "returned no data" in text  # pyserial: "device reports readiness to read but returned no data"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
