"""Role interfaces: what the engine may ask of an instrument, whatever its vendor.

Roles are small async Protocols (STYLE.md rule 3). The engine only ever sees these; a vendor class,
a command string or a transport exception never crosses this line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable


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


@dataclass(frozen=True, slots=True)
class EisPoint:
    """One frequency of an impedance spectrum: the canonical EIS record (INSTRUMENTS.md §2.11).

    Sign convention (stated because vendors differ, the most common silent bug in EIS data):
    Z = z_real + j·z_imag in the *math* convention, so a capacitive response has z_imag < 0 and
    z_phase_deg < 0. Gamry DTA files store the same; BioLogic MPT files store −Im(Z) and are
    flipped on import; MethodSCRIPT's `cd` variable is Z″ in this convention.

    Attributes:
        frequency_hz: excitation frequency in Hz.
        z_real_ohm: Re(Z) in Ω.
        z_imag_ohm: Im(Z) in Ω (negative = capacitive).
        e_dc_v: DC potential during the point, V (WE vs CE/RE).
        i_dc_a: DC current during the point, A.
        time_s: seconds on the driver's time source when the point was measured.
        status: instrument status/range flags as reported (0 = none).
    """

    frequency_hz: float
    z_real_ohm: float
    z_imag_ohm: float
    e_dc_v: float = math.nan
    i_dc_a: float = math.nan
    time_s: float = math.nan
    status: int = 0

    @property
    def z_mod_ohm(self) -> float:
        """|Z| in Ω."""
        return math.hypot(self.z_real_ohm, self.z_imag_ohm)

    @property
    def z_phase_deg(self) -> float:
        """Phase of Z in degrees, atan2(z_imag, z_real) (negative = capacitive)."""
        return math.degrees(math.atan2(self.z_imag_ohm, self.z_real_ohm))


EisMode = Literal["potentiostatic", "galvanostatic"]


@runtime_checkable
class SupportsEIS(Protocol):
    """An optional ability of a potentiostat: impedance spectra."""

    async def impedance_spectrum(
        self,
        *,
        mode: EisMode,
        f_start_hz: float,
        f_end_hz: float,
        points_per_decade: float,
        amplitude: float,
        dc_level: float,
    ) -> list[EisPoint]:
        """Measure a spectrum from f_start to f_end (either order), then leave the output off.

        Args:
            mode: potentiostatic (amplitude and dc_level in V) or galvanostatic (in A).
            f_start_hz: first frequency, Hz (usually the highest).
            f_end_hz: last frequency, Hz.
            points_per_decade: logarithmic spacing.
            amplitude: excitation amplitude (V or A, see mode).
            dc_level: DC potential (V) or current (A) around which the cell is excited.
        """
        ...


@runtime_checkable
class ForceSensor(Protocol):
    """A force gauge or load cell under the stack (N, compression positive)."""

    identity: str

    async def __aenter__(self) -> ForceSensor: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def read_force(self) -> float:
        """The present force in newtons (compression positive)."""
        ...

    async def zero(self) -> None:
        """Tare the reading (no load on the fixture)."""
        ...


@runtime_checkable
class Actuator(Protocol):
    """A motorised screw or stage that compresses the stack (position in m, closing positive)."""

    identity: str

    async def __aenter__(self) -> Actuator: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def position(self) -> float:
        """The present position in metres."""
        ...

    async def move_to(self, position_m: float) -> None:
        """Start a move to an absolute position (returns when the move has started)."""
        ...

    async def move_by(self, distance_m: float) -> None:
        """Start a relative move."""
        ...

    async def is_moving(self) -> bool:
        """Whether a move is under way."""
        ...

    async def stop(self) -> None:
        """Stop where it is: the actuator's safe state (the screw holds the pressure)."""
        ...


@runtime_checkable
class PressureController(Protocol):
    """A closed-loop pressure source (pneumatic cylinder behind a controller), pressure in Pa."""

    identity: str

    async def __aenter__(self) -> PressureController: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def read_pressure(self) -> float:
        """The controlled (gas) pressure in pascals."""
        ...

    async def set_pressure(self, pressure_pa: float) -> None:
        """A new set-point in pascals."""
        ...

    async def hold(self) -> None:
        """Hold the valve where it is: the safe state (the stack pressure is kept)."""
        ...

    async def release(self) -> None:
        """Cancel a hold: the controller follows its set-point again."""
        ...


@runtime_checkable
class Thermostat(Protocol):
    """A heater or climate chamber controller, temperatures in kelvin."""

    identity: str

    async def __aenter__(self) -> Thermostat: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def read_temperature(self) -> float:
        """The process value in kelvin."""
        ...

    async def set_temperature(self, temperature_k: float) -> None:
        """A new (remote, non-EEPROM) set-point in kelvin."""
        ...

    async def output_percent(self) -> float:
        """The working output of the heater, 0..100 %."""
        ...

    async def safe_state(self) -> None:
        """Hold the present set-point (a heater is not switched off mid-test: the cell would cool)."""
        ...
