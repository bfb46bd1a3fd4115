r"""Alicat PC pressure controller (serial ASCII, CR framing) as a `PressureController`.

Why it works this way (INSTRUMENTS.md §3.5, §6):

- **Polling mode is forced on connect.** A unit left streaming (`@` id) floods the line with
  unsolicited frames that bury replies and garble typed commands. `__aenter__` sends `@@=<unit>` in
  one write (the streaming unit takes our id back), drops whatever is buffered, then polls `<unit>`
  and skips lines until a frame with our unit id parses: stream frames still in flight are ignored.
- **Units.** The instrument speaks its engineering unit (psi or bar, set on the device's front
  panel; `pressure_unit` must match). The driver converts to and from pascals at the boundary.
  Pressures are gauge pressures, as a PC on a cylinder reports them [mem: absolute-pressure units
  (PSIA) would need the barometric offset subtracted].
- **Frames.** `<id> <pressure> <setpoint> [status tokens]` [mem: the column layout; `A??D*`
  confirms it on a real unit]. A reply that is not such a frame raises `InstrumentReplyError`
  quoting it; `?` raises `InstrumentRejectedError`.
- **Timeouts are counted.** `consecutive_timeouts` grows with each timed-out exchange and resets on
  the next good reply; from `max_consecutive_timeouts` (10, as the `alicat` package) on, the
  message says the link is presumed lost and to reconnect.
- **Safe state is hold** (`AHP`): the valve stays where it is, so the stack keeps its pressure if
  labctl stops. A later `set_pressure` cancels the hold (`AC`) first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from drivers.errors import (
    InstrumentRejectedError,
    InstrumentReplyError,
    InstrumentStateError,
    InstrumentTimeout,
)
from drivers.lifetime import DriverLifetime

log = logging.getLogger(__name__)

PA_PER_UNIT = {"psi": 6894.757293168, "bar": 1.0e5, "kpa": 1.0e3}
"""Pascals per engineering unit this driver understands."""

STATUS_TOKENS = frozenset({"HLD", "OVR", "POV", "MOV", "VOV", "TOV", "LCK", "EXH", "ADC"})
"""Status tokens that may follow the numbers of a frame (§3.5)."""


class LineTransport(Protocol):
    """What the driver needs of a transport (`drivers.transports.serial.SerialTransport` with eol=CR)."""

    resource: str

    async def write_line(self, text: str, *, timeout_s: float | None = None) -> None:
        """Send `text` and the terminator."""
        ...

    async def read_line(self, timeout_s: float | None = None) -> str:
        """The next frame without its terminator."""
        ...

    async def query(self, text: str, *, timeout_s: float | None = None) -> str:
        """One write-then-read exchange."""
        ...

    def discard_input(self) -> bytes:
        """Drop buffered input."""
        ...


@dataclass(frozen=True, slots=True)
class AlicatFrame:
    """One parsed data frame, in the device's engineering unit.

    Attributes:
        unit_id: the id that sent it (`A`..`Z`, `@` while streaming).
        pressure: controlled pressure, engineering units.
        setpoint: set-point, engineering units.
        status: status tokens (`HLD`, `OVR`, …).
    """

    unit_id: str
    pressure: float
    setpoint: float
    status: frozenset[str]

    @property
    def held(self) -> bool:
        """Whether the valve is held (`HLD`)."""
        return "HLD" in self.status


def parse_frame(line: str) -> AlicatFrame:
    """Parse `<id> <pressure> <setpoint> [tokens]`; raise InstrumentReplyError quoting anything else."""
    tokens = line.split()
    if len(tokens) < 3 or len(tokens[0]) != 1 or not (tokens[0] == "@" or "A" <= tokens[0] <= "Z"):
        raise InstrumentReplyError(
            f"Alicat: {line[:60]!r} is not a data frame (expected '<id> <pressure> <setpoint> …'); check "
            "the baud rate (19200 8N1) and that the device is a pressure controller"
        )
    try:
        pressure, setpoint = float(tokens[1]), float(tokens[2])
    except ValueError:
        raise InstrumentReplyError(
            f"Alicat: frame {line[:60]!r} has non-numeric pressure/set-point columns; check the device's "
            "data-frame layout (`A??D*`)"
        ) from None
    status = frozenset(t for t in tokens[3:] if t in STATUS_TOKENS)
    return AlicatFrame(tokens[0], pressure, setpoint, status)


class AlicatPressureController(DriverLifetime):
    r"""An Alicat PC/PCD/EPC on a CR-framed serial link, pressure in pascals.

    Args:
        transport: a line transport with CR framing, e.g.
            `SerialTransport(path, baudrate=19200, eol=b"\r")` (or `socket://host:port`).
        unit: the unit id letter, `A`..`Z`.
        piston_area_m2: piston area of the pneumatic cylinder, m²; enables `read_force`.
        pressure_unit: the device's engineering unit, `psi`, `bar` or `kpa` (must match the device).
        full_scale_pa: refuse set-points above this (Pa) before sending; None = let the device judge.
        timeout_s: per-exchange timeout, s.
        max_consecutive_timeouts: from this many timeouts in a row on, the link is presumed lost.
    """

    def __init__(
        self,
        transport: LineTransport,
        *,
        unit: str = "A",
        piston_area_m2: float | None = None,
        pressure_unit: str = "psi",
        full_scale_pa: float | None = None,
        timeout_s: float = 0.5,
        max_consecutive_timeouts: int = 10,
    ) -> None:
        unit = unit.upper()
        if len(unit) != 1 or not "A" <= unit <= "Z":
            raise ValueError(f"unit must be a letter A..Z, not {unit!r}")
        if pressure_unit not in PA_PER_UNIT:
            raise ValueError(f"pressure_unit must be one of {sorted(PA_PER_UNIT)}, not {pressure_unit!r}")
        if piston_area_m2 is not None and piston_area_m2 <= 0:
            raise ValueError("piston_area_m2 must be positive")
        self.transport = transport
        self.unit = unit
        self.piston_area_m2 = piston_area_m2
        self.pressure_unit = pressure_unit
        self.pa_per_unit = PA_PER_UNIT[pressure_unit]
        self.full_scale_pa = full_scale_pa
        self.timeout_s = timeout_s
        self.max_consecutive_timeouts = max_consecutive_timeouts
        self.consecutive_timeouts = 0
        """Timed-out exchanges in a row; reset by the next good reply."""
        self.identity = ""
        """Firmware string (`AVE`), known after connecting."""
        self.last_frame: AlicatFrame | None = None

    SAFE_STATE = "valve hold"

    async def _leave_safe(self) -> None:
        await self.hold()

    async def _connect(self) -> None:
        # `@@=A`: the streaming unit (id `@`) becomes A again; no reply is expected. One write, so a
        # streamed frame cannot split it (see simulators/alicat.py on half-duplex loss).
        await self.transport.write_line(f"@@={self.unit}", timeout_s=self.timeout_s)
        self.transport.discard_input()
        frame = await self._poll_own_frame()
        if frame.unit_id != self.unit:
            raise InstrumentStateError(f"Alicat {self.unit}: still streaming after '@@={self.unit}'")
        reply = await self._exchange(f"{self.unit}VE")
        self.identity = f"Alicat {self.unit} {reply.removeprefix(self.unit).strip()}"
        log.info("%s: %s", self.transport.resource, self.identity)

    async def _poll_own_frame(self, attempts: int = 50) -> AlicatFrame:
        """Poll and skip stale stream frames (id `@`) until one for our id arrives."""
        await self.transport.write_line(self.unit, timeout_s=self.timeout_s)
        for _ in range(attempts):
            line = await self._read(f"polling {self.unit}")
            try:
                frame = parse_frame(line)
            except InstrumentReplyError:
                continue
            if frame.unit_id == self.unit:
                self.last_frame = frame
                return frame
        raise InstrumentStateError(
            f"Alicat {self.unit}: no frame for unit {self.unit} in {attempts} lines after '@@={self.unit}'; "
            "check the unit id on the front panel and that only one unit streams on this port"
        )

    async def _read(self, what: str) -> str:
        try:
            line = await self.transport.read_line(self.timeout_s)
        except InstrumentTimeout as exc:
            raise self._timeout(what, exc) from exc
        self.consecutive_timeouts = 0
        return line

    def _timeout(self, what: str, exc: InstrumentTimeout) -> InstrumentTimeout:
        self.consecutive_timeouts += 1
        if self.consecutive_timeouts >= self.max_consecutive_timeouts:
            return InstrumentTimeout(
                f"Alicat {self.unit}: {self.consecutive_timeouts} timeouts in a row ({what}); link presumed "
                "lost: check the cable, power and unit id, then reconnect"
            )
        return InstrumentTimeout(
            f"Alicat {self.unit}: no reply while {what} ({exc}); check unit id and cable"
        )

    async def _exchange(self, command: str) -> str:
        try:
            reply = await self.transport.query(command, timeout_s=self.timeout_s)
        except InstrumentTimeout as exc:
            raise self._timeout(f"sending {command!r}", exc) from exc
        self.consecutive_timeouts = 0
        if reply.strip() in ("?", f"{self.unit} ?"):
            raise InstrumentRejectedError(
                f"Alicat {self.unit}: command {command!r} rejected ('?'); check the value range and "
                "that the device supports it"
            )
        return reply

    async def _frame_command(self, command: str) -> AlicatFrame:
        frame = parse_frame(await self._exchange(command))
        if frame.unit_id != self.unit:
            raise InstrumentReplyError(
                f"Alicat {self.unit}: reply from unit {frame.unit_id!r} to {command!r}; another unit streams "
                "or shares the id on this port"
            )
        self.last_frame = frame
        return frame

    async def read_frame(self) -> AlicatFrame:
        """Measure one data frame (engineering units)."""
        return await self._frame_command(self.unit)

    async def read_pressure(self) -> float:
        """Measure the controlled (gauge) pressure in pascals."""
        return (await self.read_frame()).pressure * self.pa_per_unit

    async def read_force(self) -> float:
        """Measure the piston force in newtons: pressure × `piston_area_m2` (never negative)."""
        if self.piston_area_m2 is None:
            raise InstrumentStateError("Alicat: read_force needs piston_area_m2; pass it to the driver")
        return max(0.0, await self.read_pressure() * self.piston_area_m2)

    async def set_pressure(self, pressure_pa: float) -> None:
        """Set the set-point in pascals (0..full scale); releases a hold first."""
        if pressure_pa < 0 or (self.full_scale_pa is not None and pressure_pa > self.full_scale_pa):
            raise ValueError(
                f"set-point {pressure_pa:g} Pa outside 0..{self.full_scale_pa or 'full scale'} Pa"
            )
        value = pressure_pa / self.pa_per_unit
        if self.last_frame is not None and self.last_frame.held:
            await self._frame_command(f"{self.unit}C")
        frame = await self._frame_command(f"{self.unit}S{value:.3f}")
        if abs(frame.setpoint - value) > 0.01 + 1e-6 * abs(value):
            raise InstrumentReplyError(
                f"Alicat {self.unit}: set-point reads {frame.setpoint:g} {self.pressure_unit}, not "
                f"{value:g}; check the device's set-point source (front panel vs serial)"
            )
        if frame.held:
            await self._frame_command(f"{self.unit}C")

    async def hold(self) -> None:
        """Hold the valve where it is (`AHP`): the safe state, the stack keeps its pressure."""
        frame = await self._frame_command(f"{self.unit}HP")
        if not frame.held:
            raise InstrumentStateError(f"Alicat {self.unit}: 'HP' did not report HLD; hold not confirmed")

    async def release(self) -> None:
        """Cancel a hold (`AC`): the controller follows its set-point again."""
        await self._frame_command(f"{self.unit}C")
