"""The two record types everything downstream reads: Sample (a measurement) and Event (a happening).

Values are SI floats under names that carry their unit (`voltage_v`, `current_a`, `charge_c`,
`pressure_pa`, `temperature_k`), so a sink never guesses a unit (DESIGN.md §2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """What can happen during a run; stored by value in the journal."""

    RUN_STARTED = "run_started"
    RUN_ENDED = "run_ended"
    STEP_STARTED = "step_started"
    STEP_ENDED = "step_ended"
    DETECTOR = "detector"
    """A watch fired (short circuit, stripping polarization …); `data` names it."""
    LIMIT = "limit"
    """A safety limit was breached and the station was made safe."""
    ALARM = "alarm"
    SOFT_SHORT = "soft_short"
    """A short-like collapse that recovered before the debounce time: recorded, not acted on."""
    NOTE = "note"
    MARK = "mark"
    """An operator's or a protocol's marker (operando work)."""
    CYCLE = "cycle"
    """A cycle finished: charge/discharge capacity (C), efficiency, retention."""
    PAUSED = "paused"
    RESUMED = "resumed"
    EIS = "eis"
    """A spectrum was measured; its points are samples of kind "eis"."""
    INSTRUMENT = "instrument"
    """An instrument problem (link lost, rejected command)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One kept measurement.

    Attributes:
        t_ns: UTC time of the measurement in nanoseconds.
        step: index of the plan step it belongs to.
        values: SI values by unit-suffixed name.
    """

    t_ns: int
    step: int
    values: dict[str, float]
    kind: str = "dc"
    """"dc": a time-series point (voltage_v, current_a, …); "eis": one frequency of a spectrum
    (frequency_hz, z_real_ohm, z_imag_ohm, … as in drivers.base.EisPoint, plus `spectrum`,
    the spectrum's number in the run)."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at a time, with JSON-able details."""

    t_ns: int
    step: int
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)
