"""Message-based VISA transport over pyvisa with the pure-Python pyvisa-py backend.

pyvisa is blocking and not thread-safe per resource (pyvisa#726), and has no asyncio API
(pyvisa#345): every call runs in a worker thread via `asyncio.to_thread`, one call at a time per
resource under an `asyncio.Lock`, so a write/read pair is never interleaved with another.
Terminations are always set explicitly: a TCPIP SOCKET resource has none by default and every
query would otherwise time out (pyvisa#98, pyvisa-py#301).

A link in doubt is not used again. After a timeout, a garbled (undecodable) reply or a broken
socket, a late or partial reply may still be on its way, and the next query would read it as its
own answer (measured against the simulator: a reply delayed past the timeout became the answer to
the next `:OUTP?`). So the transport marks itself broken, and every call raises LinkError until
`reopen()` makes a fresh connection (the driver's `reconnect()` does this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from enum import Enum
from typing import Any

from drivers.errors import InstrumentTimeout, LinkError

log = logging.getLogger(__name__)


class TransportState(Enum):
    """Where a transport is in its lifetime; a closed transport is not reopened."""

    UNOPENED = "unopened"
    OPEN = "open"
    BROKEN = "broken"
    """Open, but a call failed in a way that leaves the link's framing in doubt: `reopen()` it."""
    CLOSED = "closed"


class VisaTransport:
    r"""One VISA resource (e.g. "TCPIP0::192.168.1.50::5025::SOCKET").

    Args:
        resource: the VISA resource string.
        read_termination: what ends a reply ("\n" for SCPI over a socket).
        write_termination: what ends a command.
        timeout_s: per-call timeout in seconds.
        backend: pyvisa backend ("@py" = pyvisa-py, no vendor VISA library needed).
    """

    def __init__(
        self,
        resource: str,
        *,
        read_termination: str = "\n",
        write_termination: str = "\n",
        timeout_s: float = 2.0,
        backend: str = "@py",
    ) -> None:
        self.resource = resource
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.timeout_s = timeout_s
        self.backend = backend
        self._lock = asyncio.Lock()
        self._manager: Any = None
        self._instrument: Any = None
        self.state = TransportState.UNOPENED

    async def __aenter__(self) -> VisaTransport:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open the resource; a refused or unknown address becomes a LinkError that says so."""
        if self.state is TransportState.CLOSED:
            raise LinkError(f"{self.resource}: this transport was closed; make a new one to reconnect")
        if self.state in (TransportState.OPEN, TransportState.BROKEN):
            return  # a broken link is renewed with reopen()
        await asyncio.to_thread(self._open_blocking)
        self.state = TransportState.OPEN

    def _open_blocking(self) -> None:
        import pyvisa  # imported here: pyvisa's import is slow and not needed for `labctl --help`

        try:
            self._manager = pyvisa.ResourceManager(self.backend)
            self._instrument = self._manager.open_resource(
                self.resource,
                read_termination=self.read_termination,
                write_termination=self.write_termination,
                timeout=round(self.timeout_s * 1000),
            )
        except Exception as exc:  # pyvisa raises VisaIOError, ValueError, OSError… for a bad address
            if self._manager is not None:
                _release_manager(self._manager)
            raise LinkError(
                f"{self.resource}: cannot connect ({_reason(exc)}); check the address, that the "
                "instrument is on and reachable, and that no other program holds it"
            ) from exc

    async def aclose(self) -> None:
        """Close the resource and its manager; safe to call twice."""
        if self.state not in (TransportState.OPEN, TransportState.BROKEN):
            self.state = TransportState.CLOSED
            return
        self.state = TransportState.CLOSED
        async with self._lock:
            await asyncio.to_thread(self._close_blocking)

    async def reopen(self) -> None:
        """Close whatever is left of the link and connect again (a fresh socket, no stale bytes).

        Raises:
            LinkError: the instrument cannot be reached now (the caller backs off and retries).
        """
        await self.aclose()
        self.state = TransportState.UNOPENED
        self._manager = self._instrument = None
        await self.open()

    def _close_blocking(self) -> None:
        try:
            with contextlib.suppress(Exception):  # a dead socket may refuse a clean close
                self._instrument.close()
        finally:
            _release_manager(self._manager)

    async def write(self, command: str) -> None:
        """Send one command line."""
        async with self._lock:
            self._require_open()
            log.debug("%s << %s", self.resource, command)
            await self._in_thread(self._instrument.write, command)

    async def query(self, command: str) -> str:
        """Send a command and return its reply line without the termination."""
        async with self._lock:
            self._require_open()
            reply = await self._in_thread(self._instrument.query, command)
            log.debug("%s << %s >> %s", self.resource, command, reply)
            return reply

    async def _in_thread(self, method: Any, command: str) -> Any:
        """Run one blocking call; if cancelled, still wait for it before giving up the lock.

        A cancelled `to_thread` leaves its thread running: without this wait, the next caller
        (typically the safe-state command) would read the abandoned query's reply as its own.
        The wait is bounded by the VISA timeout.
        """
        call = asyncio.ensure_future(asyncio.to_thread(self._call, method, command))
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await call
            raise

    def _require_open(self) -> None:
        if self.state is TransportState.BROKEN:
            raise LinkError(f"{self.resource}: link in doubt after an earlier failure; reconnect")
        if self.state is not TransportState.OPEN:
            raise LinkError(f"{self.resource}: not connected (state {self.state.value})")

    def _call(self, method: Any, command: str) -> Any:
        try:
            return self._call_translated(method, command)
        except LinkError:
            self.state = TransportState.BROKEN
            raise

    def _call_translated(self, method: Any, command: str) -> Any:
        from pyvisa.errors import VisaIOError

        try:
            return method(command)
        except UnicodeDecodeError as exc:  # bytes that are not ASCII: line noise or a garbled frame
            raise LinkError(
                f"{self.resource}: garbled reply to {command!r} (not ASCII); the link is in doubt"
            ) from exc
        except VisaIOError as exc:
            if "TMO" in str(exc.error_code) or "timeout" in str(exc).lower():
                raise InstrumentTimeout(
                    f"{self.resource}: no reply to {command!r} within {self.timeout_s:g} s; check "
                    "the cable/network and the instrument's command language"
                ) from exc
            raise LinkError(f"{self.resource}: link failed during {command!r} ({_reason(exc)})") from exc
        except ConnectionRefusedError as exc:  # pyvisa-py connects a SOCKET lazily, on first I/O
            raise LinkError(
                f"{self.resource}: cannot connect (connection refused); check the address and port, "
                "and that the instrument is on and reachable"
            ) from exc
        except (OSError, EOFError) as exc:
            raise LinkError(f"{self.resource}: link lost during {command!r} ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _release_manager(manager: Any) -> None:
    """Close the resource manager only when no session of this process still uses it.

    pyvisa's ResourceManager for a backend is one object per process: closing it closes every
    instrument opened through it, so one station ending its run would cut off the others.
    """
    if not manager.list_opened_resources():
        manager.close()
