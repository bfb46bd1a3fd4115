r"""Zaber ASCII-protocol linear actuator (motorised screw) as an Actuator.

Protocol (INSTRUMENTS.md §3.6): `/device axis command args` out (this driver ends lines with CRLF;
CR, LF or both are accepted), one reply line `@01 1 OK IDLE -- 0` in (CRLF). A move returns at
once with `BUSY`; `is_moving` polls `/device axis` until `IDLE`. Rejections (`RJ`) carry a reason
token; warning flags ride on every reply.

What the driver does with the flags:

* `FS`/`FZ` (stalled/fault, [mem/partial]): the screw could not push any further, which on a
  pressure rig means the stack force reached the motor's thrust. `is_moving` raises
  `InstrumentStateError` saying so; a new move (or `clear_warnings`) clears the flag.
* `WR` (no reference position): positions mean nothing until `home()`; a move rejected while `WR`
  is set raises `InstrumentStateError` telling the operator to home (away from the stack!).

Position units: metres ↔ microsteps through `microstep_m` (default 0.1 µm/µstep [mem]: set it from
the device's lead and microstep resolution). `stop` is the safe state: the screw holds the force.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from drivers.errors import (
    InstrumentError,
    InstrumentRejectedError,
    InstrumentReplyError,
    InstrumentStateError,
)
from drivers.transports.serial import SerialTransport

log = logging.getLogger(__name__)

BAUDRATE = 115200
"""ASCII devices' default [mem]; some early firmware used 9600."""

STALL_FLAGS = frozenset({"FS", "FZ"})

_REPLY = re.compile(r"^@(\d{2}) (\d+) (OK|RJ) (BUSY|IDLE) (\S\S) (.*)$")


@dataclass(frozen=True, slots=True)
class ZaberReply:
    """One parsed reply line: `@01 1 OK IDLE -- 0`."""

    device: int
    axis: int
    accepted: bool
    busy: bool
    flag: str
    data: str


def parse_reply(line: str) -> ZaberReply:
    """Parse a reply line.

    Raises:
        InstrumentReplyError: the line is not a Zaber ASCII reply.
    """
    match = _REPLY.match(line.strip())
    if match is None:
        raise InstrumentReplyError(f"Zaber reply {line[:60]!r} is not '@dd a OK|RJ BUSY|IDLE flag data'")
    device, axis, status, busy, flag, data = match.groups()
    return ZaberReply(int(device), int(axis), status == "OK", busy == "BUSY", flag, data.strip())


class ZaberActuator:
    r"""Async driver for one axis of a Zaber device over a line transport (serial port or `socket://`).

    Args:
        transport: a `SerialTransport` with `eol=b"\r\n"` (see `transport_for`); opened and closed
            by the driver.
        device: device address on the daisy chain (1..99).
        axis: axis number (1 for a single-axis actuator).
        microstep_m: travel per microstep, m.
        timeout_s: deadline of each exchange, s.
    """

    def __init__(
        self,
        transport: SerialTransport,
        *,
        device: int = 1,
        axis: int = 1,
        microstep_m: float = 0.1e-6,
        timeout_s: float = 1.0,
    ) -> None:
        if microstep_m <= 0:
            raise ValueError("microstep_m must be positive")
        self.transport = transport
        self.device = device
        self.axis = axis
        self.microstep_m = microstep_m
        self.timeout_s = timeout_s
        self.identity = ""
        self.flag = "--"
        """The warning flag of the last reply (`--` = none)."""

    @staticmethod
    def transport_for(url: str, *, baudrate: int = BAUDRATE, timeout_s: float = 1.0) -> SerialTransport:
        """A transport framed for Zaber ASCII replies (CRLF)."""
        return SerialTransport(url, baudrate=baudrate, eol=b"\r\n", timeout_s=timeout_s)

    async def __aenter__(self) -> ZaberActuator:
        await self.transport.open()
        try:
            self.transport.discard_input()
            reply = await self._send("")
            speed = await self._send("get maxspeed")
            self.identity = f"Zaber device {self.device} axis {self.axis} (maxspeed {speed.data})"
            if reply.flag == "WR":
                log.warning(
                    "%s: no reference position; home() before absolute moves", self.transport.resource
                )
        except BaseException:
            await self.transport.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.stop()
        except InstrumentError as exc:
            log.error("%s: stop not confirmed on close: %s", self.transport.resource, exc)
        finally:
            await self.transport.aclose()

    @property
    def homed(self) -> bool:
        """Whether the last reply showed a reference position (no `WR`)."""
        return self.flag != "WR"

    async def position(self) -> float:
        """The present position, m."""
        reply = await self._send("get pos")
        try:
            return int(reply.data) * self.microstep_m
        except ValueError:
            raise InstrumentReplyError(
                f"{self.transport.resource}: position {reply.data!r} is not an integer"
            ) from None

    async def move_to(self, position_m: float) -> None:
        """Start a move to an absolute position, m (returns once started)."""
        await self._send(f"move abs {round(position_m / self.microstep_m)}")

    async def move_by(self, distance_m: float) -> None:
        """Start a relative move, m (positive closes the screw)."""
        await self._send(f"move rel {round(distance_m / self.microstep_m)}")

    async def is_moving(self) -> bool:
        """Whether a move is under way (one status poll).

        Raises:
            InstrumentStateError: the axis stalled (the stack force reached the motor's thrust).
        """
        reply = await self._send("")
        if reply.flag in STALL_FLAGS:
            raise InstrumentStateError(
                f"{self.transport.resource}: the actuator stalled (flag {reply.flag}): the stack force "
                "reached the motor's thrust; lower the pressure target or back off with move_by(-…)"
            )
        return reply.busy

    async def stop(self) -> None:
        """Stop where it is; the screw keeps the force (the safe state)."""
        await self._send("stop")

    async def home(self) -> None:
        """Start homing (towards position 0, away from the stack); poll `is_moving` until done."""
        await self._send("home")

    async def clear_warnings(self) -> None:
        """Clear latched warning flags (e.g. a stall) after dealing with their cause."""
        await self._send("warnings clear")

    async def _send(self, command: str) -> ZaberReply:
        text = f"/{self.device} {self.axis} {command}".rstrip()
        line = await self.transport.query(text, timeout_s=self.timeout_s)
        if not line.isascii() or not line.isprintable():
            raise InstrumentReplyError(
                f"{self.transport.resource}: garbled reply {line[:40]!r} to {text!r}; check the baud rate "
                f"({self.transport.baudrate}) and the cable"
            )
        reply = parse_reply(line)
        if (reply.device, reply.axis) != (self.device, self.axis):
            raise InstrumentReplyError(
                f"{self.transport.resource}: reply {line!r} is from another device/axis; is another "
                "program using the chain?"
            )
        self.flag = reply.flag
        if not reply.accepted:
            if reply.flag == "WR":
                raise InstrumentStateError(
                    f"{self.transport.resource}: {command!r} refused: no reference position; home() the "
                    "actuator first (make sure homing moves away from the stack)"
                )
            raise InstrumentRejectedError(f"{self.transport.resource}: {command!r} rejected: {reply.data}")
        return reply
