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
class EisSpec:
    """An impedance measurement in SI: amplitude and dc in V (potentiostatic) or A (galvanostatic).

    `dc_is_ocv`: excite around the open-circuit voltage measured just before (dc is then an offset).
    """

    mode: Literal["potentiostatic", "galvanostatic"]
    f_start_hz: float
    f_end_hz: float
    points_per_decade: float
    amplitude: float
    dc: float
    dc_is_ocv: bool


@dataclass(frozen=True, slots=True)
class Check:
    """The end-of-iteration test of a `repeat`/`sweep` `until` loop; when it holds, go to `target`."""

    condition: str
    value: Any
    target: int = -1


StepKind = Literal["rest", "current", "voltage", "cccv", "eis", "mark", "wait", "set", "check"]


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One executable step.

    Attributes:
        kind: rest (zero current, output on: open-circuit voltage), current, voltage (CV), cccv,
            eis, mark, wait, set (another role's set-point) or check (a `repeat until` test).
        current_a: source current in A (0 for rest); positive = charge / WE stripping.
        density_a_m2: the areal current density the step was written with, if any.
        voltage_v: the CV (or CC-CV target) voltage in V.
        current_limit_a: compliance in A while holding a voltage.
        context: loop parameters and counters in effect (e.g. {"j": 1.0, "cycle": 2}).
        setpoints: for `set`: {"pressure_pa": …} or {"temperature_k": …}, plus settle rules.
    """

    index: int
    kind: StepKind
    description: str
    line: int
    current_a: float
    density_a_m2: float | None
    ends: tuple[End, ...]
    record: RecordRule
    label: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    voltage_v: float | None = None
    current_limit_a: float | None = None
    eis: EisSpec | None = None
    note: str | None = None
    timeout_s: float | None = None
    setpoints: dict[str, float] = field(default_factory=dict)
    check: Check | None = None
    new_cell: bool = False
    """A `wait` for the operator to put a fresh cell in."""


@dataclass(frozen=True, slots=True)
class Watch:
    """A detector that runs alongside every step; params are SI."""

    name: str
    type: str
    params: dict[str, float]
    action: Action


@dataclass(frozen=True, slots=True)
class CellSpec:
    """The cell, in SI.

    Attributes:
        loading_kg_m2: active cathode material per area (full cells).
        capacity_c_m2: nominal areal capacity (what C-rates refer to).
    """

    kind: str
    material: str
    area_m2: float
    thickness_m: float
    cathode: str | None = None
    anode: str = "Li"
    loading_kg_m2: float | None = None
    capacity_c_m2: float | None = None

    @property
    def active_mass_kg(self) -> float | None:
        """Active cathode material in the cell, kg."""
        return None if self.loading_kg_m2 is None else self.loading_kg_m2 * self.area_m2


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
    pressure_window_pa: tuple[float, float] | None
    temperature_window_k: tuple[float, float] | None
    record: RecordRule
    watches: tuple[Watch, ...]
    steps: tuple[PlanStep, ...]
    results: tuple[str, ...]

    @property
    def needs(self) -> frozenset[str]:
        """Abilities the station must have: "eis", "pressure", "temperature"."""
        needs = {"eis"} if any(s.kind == "eis" for s in self.steps) else set()
        roles = {"pressure_pa": "pressure", "temperature_k": "temperature"}
        for step in self.steps:
            needs |= {roles[key] for key in step.setpoints if key in roles}
        return frozenset(needs)

    @property
    def compliance_v(self) -> float:
        """Instrument voltage limit: the larger magnitude of the safety window."""
        return max(abs(self.voltage_min_v), abs(self.voltage_max_v))
