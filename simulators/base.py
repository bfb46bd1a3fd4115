"""Contracts shared by every simulator: what an instrument front-end drives and where time comes from.

Simulators never import labctl or drivers (DESIGN.md §1): time arrives as a plain callable, so the same
simulator runs on the wall clock when served standalone and on labctl's simulated clock in `--sim` runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

TimeSource = Callable[[], float]
"""Returns monotonic seconds. `time.monotonic` standalone; the run's simulated clock in `--sim`."""


def wall_time_source() -> TimeSource:
    """Time source for a simulator served on its own, in real time."""
    return time.monotonic


@runtime_checkable
class ElectricalLoad(Protocol):
    """A two-terminal device (a cell) that a source-measure instrument drives.

    Sign convention: positive current flows out of the instrument's HI terminal into the working
    electrode (charge; for a symmetric Li|SE|Li cell: stripping from the working electrode).
    """

    def advance(self, dt: float, current_a: float) -> None:
        """Integrate the device state for `dt` seconds (≥ 0) at a constant current in amperes."""
        ...

    def voltage(self, current_a: float) -> float:
        """Terminal voltage in volts at the present state while `current_a` flows (no noise)."""
        ...


@runtime_checkable
class ImpedanceLoad(Protocol):
    """An electrical load that can also report its small-signal impedance (for EIS simulators).

    Sign convention: Z = Z′ + jZ″ in the math convention (capacitive Z″ < 0).
    """

    def impedance(self, frequency_hz: float, current_a: float = 0.0) -> complex:
        """Small-signal impedance in Ω at `frequency_hz`, around the DC current `current_a`, now."""
        ...


class ResistorLoad:
    """An ideal resistor in series with a fixed open-circuit voltage: a test load with a known answer."""

    def __init__(self, resistance_ohm: float, ocv_v: float = 0.0) -> None:
        self.resistance_ohm = resistance_ohm
        self.ocv_v = ocv_v
        self.charge_c = 0.0

    def advance(self, dt: float, current_a: float) -> None:
        """Count the charge passed; a resistor has no other state."""
        self.charge_c += current_a * dt

    def voltage(self, current_a: float) -> float:
        """Ohm's law plus the open-circuit voltage."""
        return self.ocv_v + current_a * self.resistance_ohm


class RandlesLoad:
    """R0 in series with R1 ∥ C1 (a simplified Randles cell, no Warburg): a load with a known impedance.

    Z(f) = R0 + R1 / (1 + j·2πf·R1·C1), independent of the DC current. The DC behaviour is the
    steady state, V = OCV + I·(R0 + R1): the capacitor's charging transient (τ = R1·C1) is not
    integrated, so readings taken much less than τ after a current step are not modelled. That
    keeps CP, CA and EIS answers analytic for tests, and potentiostatic control stable for any step.
    """

    def __init__(self, r0_ohm: float, r1_ohm: float, c1_f: float, ocv_v: float = 0.0) -> None:
        if r0_ohm < 0 or r1_ohm <= 0 or c1_f <= 0:
            raise ValueError("need r0_ohm >= 0, r1_ohm > 0 and c1_f > 0")
        self.r0_ohm = r0_ohm
        self.r1_ohm = r1_ohm
        self.c1_f = c1_f
        self.ocv_v = ocv_v
        self.charge_c = 0.0

    def advance(self, dt: float, current_a: float) -> None:
        """Count the charge passed; the steady-state model has no other state."""
        self.charge_c += current_a * dt

    def voltage(self, current_a: float) -> float:
        """Steady-state terminal voltage: OCV + I·(R0 + R1)."""
        return self.ocv_v + current_a * (self.r0_ohm + self.r1_ohm)

    def impedance(self, frequency_hz: float, current_a: float = 0.0) -> complex:
        """R0 + R1 / (1 + jωR1C1), in Ω (capacitive Z″ < 0)."""
        omega = 2.0 * math.pi * frequency_hz
        return self.r0_ohm + self.r1_ohm / (1.0 + 1j * omega * self.r1_ohm * self.c1_f)


class CellHolder:
    """The cell fixture of a simulated bench: instruments, rig and heater hold it, the cell inside can change.

    Why a holder: a CCD destroys its cell, so a CCD-vs-pressure campaign puts a fresh cell in the same
    fixture for every level. Everything coupled to the fixture keeps its reference to the holder, and
    every attribute read or call goes to the present cell. Stack pressure and temperature are
    properties of the fixture, so a new cell starts at the ones the old cell felt.
    """

    def __init__(self, cell: object, make_cell: Callable[[int], object]) -> None:
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "_make_cell", make_cell)
        object.__setattr__(self, "cells", 1)

    def __getattr__(self, name: str) -> object:
        return getattr(object.__getattribute__(self, "cell"), name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self.cell, name, value)  # pressure_pa, temperature_k: set by the rig and the heater

    def replace(self) -> None:
        """Put the next fresh cell in (its own seed: a different pellet), at the fixture's P and T."""
        old = self.cell
        new = self._make_cell(self.cells)
        for condition in ("pressure_pa", "temperature_k"):
            if hasattr(old, condition):
                setattr(new, condition, getattr(old, condition))
        object.__setattr__(self, "cell", new)
        object.__setattr__(self, "cells", self.cells + 1)
