r"""Mark-10 Series 5 / Series 7 force gauge (GCL2 over RS-232 or USB virtual COM) as a ForceSensor.

Protocol (INSTRUMENTS.md §3.1): commands end with CR or CRLF, replies end with CRLF, 115200 8N1.
This driver sends CRLF (the LF is ignored by the gauge) and frames replies on CRLF. `?` answers the
displayed reading, `"<value> <unit>"`; errors are `*10` illegal command, `*11` not applicable, `*12`
invalid specifier, `*22` value too large.

On connect, as Opentrons' driver does, the driver selects newtons (`N`) and checks that a reading
parses with unit `N`, so a gauge left in lbF at the keypad cannot silently scale the stack
pressure; `RM`/`RS`/`RV` give the identity and `LIST` the settings. If a later reading arrives in
another unit (someone pressed UNITS), `N` is sent again and the reading retried once.

[mem], not confirmed on hardware: setting commands (`N`, `Z`) answer an empty line (an `R` is
accepted too); `OVER` is the overload reply; compression reads positive (the gauge's polarity
setting can invert it: pass `invert=True`).
"""

from __future__ import annotations

import logging

from drivers.errors import (
    InstrumentRejectedError,
    InstrumentReplyError,
    InstrumentStateError,
)
from drivers.transports.serial import SerialTransport

log = logging.getLogger(__name__)

BAUDRATE = 115200
"""The usual setting, and the one an ESM303 stand needs (INSTRUMENTS.md §3.1)."""

ERRORS = {
    "*10": "illegal command",
    "*11": "command not applicable in the present state or for this gauge",
    "*12": "invalid specifier",
    "*22": "value too large",
}
"""GCL2 error replies and their meaning."""

_ACKS = ("", "R")


def parse_reading(reply: str) -> tuple[float, str]:
    """`"-18.78 lbF"` → (-18.78, "lbF").

    Raises:
        InstrumentReplyError: the reply is not a number followed by a unit.
    """
    parts = reply.split()
    if len(parts) != 2:
        raise InstrumentReplyError(f"Mark-10 reading {reply!r} is not '<value> <unit>'")
    try:
        return float(parts[0]), parts[1]
    except ValueError:
        raise InstrumentReplyError(f"Mark-10 reading {reply!r} does not start with a number") from None


class Mark10Gauge:
    r"""Async driver for one Mark-10 gauge over a line transport (serial port or `socket://`).

    Args:
        transport: a `SerialTransport` with `eol=b"\r\n"` (use `Mark10Gauge.transport_for(url)`);
            the driver opens and closes it.
        timeout_s: deadline of each command, s (a reading takes a few ms).
        invert: flip the sign, for a gauge whose polarity setting shows compression negative.
    """

    def __init__(self, transport: SerialTransport, *, timeout_s: float = 1.0, invert: bool = False) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self.invert = invert
        self.identity = ""
        self.settings = ""
        """The gauge's `LIST` answer, known after connecting."""

    @staticmethod
    def transport_for(url: str, *, baudrate: int = BAUDRATE, timeout_s: float = 1.0) -> SerialTransport:
        """A transport framed for GCL2 (CRLF replies; CRLF sent, the gauge ignores the LF)."""
        return SerialTransport(url, baudrate=baudrate, eol=b"\r\n", timeout_s=timeout_s)

    async def __aenter__(self) -> Mark10Gauge:
        await self.transport.open()
        try:
            await self._connect()
        except BaseException:
            await self.transport.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # A gauge has no unsafe state: closing the port is all.
        await self.transport.aclose()

    async def _connect(self) -> None:
        self.transport.discard_input()
        await self._command("N")
        value, unit = parse_reading(await self._query("?"))
        if unit != "N":
            raise InstrumentStateError(
                f"{self.transport.resource}: the gauge still reads in {unit!r} after 'N'; set the unit "
                "to N at the keypad and enable units in the data format"
            )
        model = await self._query("RM")
        serial = await self._query("RS")
        firmware = await self._query("RV")
        self.settings = await self._query("LIST")
        self.identity = f"Mark-10 {model} s/n {serial} {firmware}"
        log.info("%s: %s, reading %g N", self.transport.resource, self.identity, value)

    async def read_force(self) -> float:
        """The present force in newtons (compression positive).

        Raises:
            InstrumentStateError: the gauge is overloaded (unload it) or will not read in N.
        """
        value, unit = parse_reading(await self._query("?"))
        if unit != "N":
            log.warning("%s: reading came in %s; selecting N again", self.transport.resource, unit)
            await self._command("N")
            value, unit = parse_reading(await self._query("?"))
            if unit != "N":
                raise InstrumentStateError(
                    f"{self.transport.resource}: the gauge reads in {unit!r} and ignores 'N'; "
                    "set N at the keypad"
                )
        return -value if self.invert else value

    async def zero(self) -> None:
        """Tare the reading (with no load on the fixture) and clear the peaks."""
        await self._command("Z")

    async def _command(self, command: str) -> None:
        reply = await self._query(command)
        if reply not in _ACKS:
            raise InstrumentReplyError(
                f"{self.transport.resource}: {command!r} was answered {reply!r}, not an acknowledgement"
            )

    async def _query(self, command: str) -> str:
        reply = (await self.transport.query(command, timeout_s=self.timeout_s)).strip()
        if not reply.isascii() or not reply.isprintable():
            raise InstrumentReplyError(
                f"{self.transport.resource}: garbled reply {reply[:40]!r} to {command!r}; check the baud "
                f"rate ({self.transport.baudrate}) and the cable"
            )
        if reply in ERRORS:
            raise InstrumentRejectedError(
                f"{self.transport.resource}: the gauge rejected {command!r}: {reply} {ERRORS[reply]}"
            )
        if reply.startswith("*"):
            raise InstrumentRejectedError(
                f"{self.transport.resource}: the gauge rejected {command!r}: {reply}"
            )
        if reply.upper().startswith("OVER"):
            raise InstrumentStateError(
                f"{self.transport.resource}: the gauge is overloaded (beyond its capacity); release the "
                "stack pressure now and check the gauge"
            )
        return reply
