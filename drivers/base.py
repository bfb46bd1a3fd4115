"""Role interfaces: what the engine may ask of an instrument, whatever its vendor.

Roles are small async Protocols (STYLE.md rule 3). The engine only ever sees these; a vendor class,
a command string or a transport exception never crosses this line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Reading:
    """One buffered measurement of a potentiostat.

    Attributes:
        t: seconds on the driver's time source when the reading was taken.
        voltage_v: measured cell voltage in volts (WE vs CE).
        current_a: measured (or, without read-back, programmed) current in amperes; positive = charge.
        in_compliance: the instrument was limiting (voltage or current limit active).
    """

    t: float
    voltage_v: float
    current_a: float
    in_compliance: bool = False


@runtime_checkable
class Potentiostat(Protocol):
    """A potentiostat/galvanostat or SMU channel wired to one cell.

    Lifetime: constructors do no I/O; `async with driver:` connects and checks the instrument,
    and leaves it in its safe state (output off) on exit.
    """

    identity: str
    """The instrument's identification string, known after connecting."""

    async def __aenter__(self) -> Potentiostat: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def set_current(self, current_a: float, voltage_limit_v: float) -> None:
        """Source a constant current (A) with a voltage compliance (V, magnitude); output on."""
        ...

    async def set_voltage(self, voltage_v: float, current_limit_a: float) -> None:
        """Source a constant voltage (V) with a current compliance (A, magnitude); output on."""
        ...

    async def output_off(self) -> None:
        """Switch the output off (no current flows)."""
        ...

    async def read(self) -> Reading:
        """Take one reading now (one round trip)."""
        ...

    async def start_acquisition(self, period_s: float) -> None:
        """Start buffered readings every `period_s` seconds on the instrument."""
        ...

    async def fetch(self) -> list[Reading]:
        """Return the readings buffered since the last fetch, oldest first."""
        ...

    async def stop_acquisition(self) -> None:
        """Stop buffered readings."""
        ...

    async def safe_state(self) -> None:
        """Put the instrument where it cannot hurt the cell (output off), whatever its state."""
        ...
