"""The compiled plan: plain records in SI units that the engine interprets (STYLE.md rule 13).

Loops are unrolled and parameters substituted at compile time, so the engine never evaluates
anything from a protocol file and a dry run can walk the whole plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ActionKind = Literal["next", "stop", "alarm", "record", "goto"]


@dataclass(frozen=True, slots=True)
class Action:
    """What to do when an end condition or a watch fires; `target` is a step index for goto."""

    kind: ActionKind
    target: int | None = None
    label: str | None = None

    def describe(self) -> str:
        """Say the action in words: 'goto confirm', 'stop' …."""
        return f"goto {self.label}" if self.kind == "goto" else self.kind


@dataclass(frozen=True, slots=True)
class End:
    """One end condition of a step.

    Attributes:
        condition: time | charge | voltage_above | voltage_below.
        value: SI value (s, C, V).
        debounce_s: how long a voltage condition must hold.
    """

    condition: str
    value: float
    action: Action
    debounce_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordRule:
    """Sampling and keeping rules in SI (see protocol.model.Record)."""

    sample_s: float
    every_s: float
    dv_v: float
    di_a: float | None
    poll_s: float


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One executable step.

    Attributes:
        kind: "rest" (zero current, output on: open-circuit voltage) or "current".
        current_a: source current in A (0 for rest); positive = charge / WE stripping.
        density_a_m2: the areal current density the step was written with, if any.
        context: loop parameters and counters in effect (e.g. {"j": 1.0, "cycle": 2}).
    """

    index: int
    kind: Literal["rest", "current"]
    description: str
    line: int
    current_a: float
    density_a_m2: float | None
    ends: tuple[End, ...]
    record: RecordRule
    label: str | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Watch:
    """A detector that runs alongside every step; params are SI."""

    name: str
    type: str
    params: dict[str, float]
    action: Action


@dataclass(frozen=True, slots=True)
class CellSpec:
    """The cell, in SI."""

    kind: str
    material: str
    area_m2: float
    thickness_m: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A protocol compiled for one cell and station."""

    name: str
    description: str
    source: str
    cell: CellSpec
    pressure_pa: float
    temperature_k: float
    voltage_min_v: float
    voltage_max_v: float
    current_max_a: float | None
    record: RecordRule
    watches: tuple[Watch, ...]
    steps: tuple[PlanStep, ...]
    results: tuple[str, ...]

    @property
    def compliance_v(self) -> float:
        """Instrument voltage limit: the larger magnitude of the safety window."""
        return max(abs(self.voltage_min_v), abs(self.voltage_max_v))
