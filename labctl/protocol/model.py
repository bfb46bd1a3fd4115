"""The protocol language as pydantic models: what a protocol file may say.

Quantities stay text in the file and are checked by dimension as they are validated
(units.parse), so a "5 mA" where a density belongs is reported at its line. Step lists are parsed
by the compiler (one-key mappings such as `- current: {...}`) so that a misspelt step kind gets a
nearest-name suggestion; the bodies of the step kinds are the `*Step` models below.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from labctl import units

PARAMETER_REFERENCE = re.compile(r"^\s*(-)?\s*(?:([0-9.]+(?:[eE][-+]?\d+)?)\s*\*\s*)?\$\{(\w+)\}\s*$")
C_RATE = re.compile(r"^\s*([-+])?\s*(?:([0-9.]+)\s*C|C\s*/\s*([0-9.]+))\s*$")


class ParameterRef(BaseModel):
    """A sweep parameter used in a step: '${j}', '-${j}' or '2 * ${j}'."""

    model_config = ConfigDict(frozen=True)
    name: str
    factor: float = 1.0


def _quantity(kind: units.Kind, allow_parameter: bool = False) -> BeforeValidator:
    def convert(value: Any) -> Any:
        if allow_parameter and isinstance(value, str):
            match = PARAMETER_REFERENCE.match(value)
            if match:
                sign = -1.0 if match.group(1) else 1.0
                factor = float(match.group(2)) if match.group(2) else 1.0
                return ParameterRef(name=match.group(3), factor=sign * factor)
        if isinstance(value, ParameterRef | float) and not isinstance(value, bool):
            return value
        try:
            return units.parse(value, kind)
        except units.UnitError as exc:
            raise ValueError(str(exc)) from None

    return BeforeValidator(convert)


def _c_rate(value: Any) -> Any:
    """0.1, "0.5C", "C/10", "-C/5" → signed fraction of the nominal capacity per hour."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, ParameterRef):
        return value
    if isinstance(value, str):
        reference = PARAMETER_REFERENCE.match(value)
        if reference:
            sign = -1.0 if reference.group(1) else 1.0
            factor = float(reference.group(2)) if reference.group(2) else 1.0
            return ParameterRef(name=reference.group(3), factor=sign * factor)
        match = C_RATE.match(value)
        if match:
            sign = -1.0 if match.group(1) == "-" else 1.0
            rate = float(match.group(2)) if match.group(2) else 1.0 / float(match.group(3))
            return sign * rate
    raise ValueError(f"{value!r} is not a C-rate; write e.g. 0.1, '0.5C' or 'C/10' (negative = discharge)")


Time = Annotated[float, _quantity("time")]
Voltage = Annotated[float, _quantity("voltage")]
Current = Annotated[float, _quantity("current")]
Pressure = Annotated[float, _quantity("pressure")]
Temperature = Annotated[float, _quantity("temperature")]
Length = Annotated[float, _quantity("length")]
Area = Annotated[float, _quantity("area")]
ArealCharge = Annotated[float, _quantity("areal_charge")]
ArealMass = Annotated[float, _quantity("areal_mass")]
Frequency = Annotated[float, _quantity("frequency")]
Fraction = Annotated[float, _quantity("dimensionless")]
PressureRate = Annotated[float, _quantity("pressure_rate")]
TemperatureRate = Annotated[float, _quantity("temperature_rate")]
DensityOrParameter = Annotated[float | ParameterRef, _quantity("current_density", allow_parameter=True)]
CurrentOrParameter = Annotated[float | ParameterRef, _quantity("current", allow_parameter=True)]
VoltageOrParameter = Annotated[float | ParameterRef, _quantity("voltage", allow_parameter=True)]
PressureOrParameter = Annotated[float | ParameterRef, _quantity("pressure", allow_parameter=True)]
TemperatureOrParameter = Annotated[float | ParameterRef, _quantity("temperature", allow_parameter=True)]
CRateOrParameter = Annotated[float | ParameterRef, BeforeValidator(_c_rate)]


class Strict(BaseModel):
    """Every protocol section refuses unknown fields (a typo must never be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Goto(Strict):
    """Jump to a labelled top-level step."""

    goto: str


Action = Literal["next", "stop", "alarm", "record"] | Goto
"""next: end this step; stop: end the run normally (safe state); alarm: make safe and end the run as
an alarm; record: only write an event (watches); {goto: label}: continue at that step."""


class Cell(Strict):
    """The cell under test. Stored with every result.

    A symmetric cell is Li | electrolyte | Li. A full cell adds a composite cathode (`cathode`,
    `loading` of active material) and an anode (Li or Li-In); `capacity` (areal, nominal) is what
    C-rates refer to.
    """

    kind: Literal["symmetric", "full"] = "symmetric"
    material: str = "Li6PS5Cl"
    area: Area = Field(default=units.parse("0.785 cm^2", "area"))
    thickness: Length = Field(default=units.parse("0.5 mm", "length"))
    cathode: str | None = None
    anode: Literal["Li", "Li-In"] = "Li"
    loading: ArealMass | None = None
    capacity: ArealCharge | None = None

    @model_validator(mode="after")
    def _full_cell_needs_a_cathode(self) -> Cell:
        if self.kind == "full" and self.cathode is None:
            raise ValueError("a full cell needs 'cathode' (e.g. NMC811) and 'loading' (e.g. 12 mg/cm^2)")
        return self


class Conditions(Strict):
    """Stack pressure and temperature of the test (set-points once the rig and heater exist)."""

    pressure: Pressure = Field(default=1e6)
    temperature: Temperature = Field(default=298.15)


class VoltageRange(Strict):
    """Voltage window in V."""

    min: Voltage | None = None
    max: Voltage | None = None


class PressureRange(Strict):
    """Stack-pressure window in Pa."""

    min: Pressure | None = None
    max: Pressure | None = None


class TemperatureRange(Strict):
    """Temperature window in K."""

    min: Temperature | None = None
    max: Temperature | None = None


class CurrentLimit(Strict):
    """Largest current magnitude in A."""

    max: Current


class Safety(Strict):
    """Limits for the whole run: a breach makes the station safe at once and raises an alarm.

    The voltage window is also set as the instrument's compliance, so the instrument itself limits
    even if labctl stops answering.
    """

    voltage: VoltageRange = Field(default_factory=lambda: VoltageRange(min=-1.0, max=1.0))
    current: CurrentLimit | None = None
    pressure: PressureRange | None = None
    temperature: TemperatureRange | None = None


class Record(Strict):
    """What is measured and what is kept.

    Attributes:
        sample: instrument sampling period (1–10 Hz typical); every sample feeds the watches.
        every: keep a sample at least this often.
        dv: also keep a sample whenever the voltage moved this much since the last kept one.
        di: same for current (optional).
        dp: same for stack pressure (optional; once a rig reports it).
        poll: how often labctl collects buffered samples from the instrument.
    """

    sample: Time = 1.0
    every: Time = 10.0
    dv: Voltage = 1e-3
    di: Current | None = None
    dp: Pressure | None = None
    poll: Time = 5.0

    @model_validator(mode="after")
    def _sane(self) -> Record:
        if not 0.01 <= self.sample <= 3600:
            raise ValueError("sample must be between 10 ms and 1 h")
        if self.every < self.sample:
            raise ValueError("every must not be shorter than sample")
        if self.poll < self.sample:
            raise ValueError("poll must not be shorter than sample")
        return self


class ShortCircuitWatch(Strict):
    """A debounced short detector (DOMAIN.md §2.1, §4).

    Fires when, under current, the apparent resistance |V/I| collapses below `collapse` × the
    cell's reference resistance (from the last healthy current step), or |V| falls below `floor`,
    and stays there for `debounce`. A shorter collapse is recorded as a soft short.
    """

    type: Literal["short_circuit"]
    collapse: Fraction = 0.2
    floor: Voltage = 0.0
    debounce: Time = 10.0
    settle: Time = 2.0
    action: Action = "stop"


class StrippingPolarizationWatch(Strict):
    """Flags a step whose |V| rises by `rise` (fraction) above its early level: voids opening."""

    type: Literal["stripping_polarization"]
    rise: Fraction = 0.25
    settle: Time = 60.0
    action: Action = "record"


class CapacityRetentionWatch(Strict):
    """Fires when a cycle's discharge capacity falls below `below` × that of `reference_cycle`."""

    type: Literal["capacity_retention"]
    below: Fraction = 0.8
    reference_cycle: int = Field(default=1, ge=1)
    action: Action = "stop"


class CoulombicEfficiencyWatch(Strict):
    """Fires when a cycle's Coulombic efficiency (discharge / charge) falls below `below`.

    Formation cycles are skipped with `after_cycle` (their efficiency is low by nature).
    """

    type: Literal["coulombic_efficiency"]
    below: Fraction = 0.99
    after_cycle: int = Field(default=2, ge=0)
    action: Action = "record"


class PressureDriftWatch(Strict):
    """Fires when the measured stack pressure stays more than `band` off its set-point for `debounce`.

    A leaking cylinder, a slipping screw, a cracking pellet (DOMAIN.md §4). Judged only while a
    pressure is held (not at a fixed gap, where the pressure is meant to move).
    """

    type: Literal["pressure_drift"]
    band: Pressure = 0.2e6
    debounce: Time = 60.0
    action: Action = "alarm"


class TemperatureDriftWatch(Strict):
    """Fires when the measured temperature stays more than `band` (K) off its set-point for `debounce`.

    A heater or thermocouple failing, a door left open. Judged once a `set` gave a set-point.
    """

    type: Literal["temperature_drift"]
    band: Temperature = 2.0
    debounce: Time = 120.0
    action: Action = "alarm"

    @model_validator(mode="after")
    def _band_is_a_difference(self) -> TemperatureDriftWatch:
        if not 0 < self.band < 100:
            raise ValueError("band is a temperature difference: write it in K, e.g. '2 K'")
        return self


Watch = Annotated[
    ShortCircuitWatch
    | StrippingPolarizationWatch
    | CapacityRetentionWatch
    | CoulombicEfficiencyWatch
    | PressureDriftWatch
    | TemperatureDriftWatch,
    Field(discriminator="type"),
]

END_CONDITIONS: dict[str, units.Kind | None] = {
    "time": "time",
    "capacity": "areal_charge",
    "charge": "charge",
    "voltage_above": "voltage",
    "voltage_below": "voltage",
    "current_above": "current",
    "current_below": "current",
    "dvdt_above": "voltage_rate",
    "dvdt_below": "voltage_rate",
    "detector": None,
}
"""End condition → the kind of quantity it takes (detector: a watch's name)."""

REPEAT_CONDITIONS: dict[str, units.Kind | None] = {
    "retention_below": "dimensionless",
    "efficiency_below": "dimensionless",
    "detector": None,
}
"""`repeat: {until: …}` conditions, checked after each iteration."""

RESULT_NAMES = (
    "ccd",
    "critical_stripping_current",
    "polarization",
    "capacity_per_cycle",
    "coulombic_efficiency",
    "retention",
    "impedance",
    "r_int_per_pressure",
    "r_int_over_time",
    "ccd_per_cell",
    "time_to_short",
)
ResultName = Literal[
    "ccd",
    "critical_stripping_current",
    "polarization",
    "capacity_per_cycle",
    "coulombic_efficiency",
    "retention",
    "impedance",
    "r_int_per_pressure",
    "r_int_over_time",
    "ccd_per_cell",
    "time_to_short",
]


class Header(Strict):
    """Everything in a protocol file except its steps (validated separately)."""

    labctl: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    cell: Cell = Field(default_factory=Cell)
    conditions: Conditions = Field(default_factory=Conditions)
    safety: Safety = Field(default_factory=Safety)
    record: Record = Field(default_factory=Record)
    watch: dict[str, Watch] = Field(default_factory=dict)
    results: list[ResultName] = Field(default_factory=list)
    steps: list[Any]


# --- step bodies ------------------------------------------------------------------------------


class RestStep(Strict):
    """Zero current with the output on: the open-circuit voltage."""

    label: str | None = None
    until: Any
    record: Record | None = None


class CurrentStep(Strict):
    """Constant current: exactly one of density, current or c_rate; positive = charge."""

    label: str | None = None
    density: DensityOrParameter | None = None
    current: CurrentOrParameter | None = None
    c_rate: CRateOrParameter | None = None
    until: Any
    record: Record | None = None


class VoltageStep(Strict):
    """Constant voltage (potentiostatic), with a current limit (default: safety.current.max)."""

    label: str | None = None
    value: VoltageOrParameter
    current_limit: Current | None = None
    until: Any
    record: Record | None = None


class CCCVStep(Strict):
    """Constant current to `voltage`, then hold `voltage` until the `until` conditions.

    The CC phase ends when the voltage reaches the target (from below for a charge, from above
    for a discharge); the `until` conditions (typically current_below) end the CV phase.
    """

    label: str | None = None
    density: DensityOrParameter | None = None
    current: CurrentOrParameter | None = None
    c_rate: CRateOrParameter | None = None
    voltage: VoltageOrParameter
    until: Any
    record: Record | None = None


class EISStep(Strict):
    """An impedance spectrum (potentiostatic: amplitude in V; galvanostatic: amplitude in A).

    `dc: ocv` (the default) excites around the open-circuit voltage measured just before.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    label: str | None = None
    mode: Literal["potentiostatic", "galvanostatic"] = "potentiostatic"
    start: Frequency = Field(default=1e6, alias="from")
    stop: Frequency = Field(default=0.1, alias="to")
    per_decade: float = Field(default=10, gt=0, le=100)
    amplitude: Any = "10 mV"
    dc: Any = "ocv"


class MarkStep(Strict):
    """An event marker in the journal (operando work: 'scan 3 starts here')."""

    label: str | None = None
    note: str


class WaitStep(Strict):
    """Pause (station safe, output off) until the operator or an external trigger resumes.

    With `timeout`, the run continues by itself after that long.
    """

    label: str | None = None
    message: str = "waiting for the operator"
    timeout: Time | None = None
    new_cell: bool = False
    """The operator puts a fresh cell in: the watches forget the old cell (a short detector's
    healthy reference), and a simulated bench swaps in a new cell model."""


class Settle(Strict):
    """When a set-point counts as reached: |rate| below `rate_below` for `hold`."""

    rate_below: Any
    hold: Time = 60.0


class SetStep(Strict):
    """A set-point for another role: stack pressure or temperature, then wait until it settles.

    `pressure: 0 MPa` releases the rig (the screw backs off, the cylinder vents): before a cell swap.
    """

    label: str | None = None
    pressure: PressureOrParameter | None = None
    temperature: TemperatureOrParameter | None = None
    settle: Settle | None = None
    rate: Any = None
    """Ramp to the set-point at this rate (e.g. 1 MPa/min, 2 K/min) instead of stepping to it."""
    timeout: Time = 3600.0
    then: Literal["hold_pressure", "fixed_gap"] = "hold_pressure"
    """After settling: keep regulating the pressure (constant pressure), or stop the screw where
    it is (constant displacement: the pressure then follows the cell's breathing and creep)."""


class RepeatStep(Strict):
    """The inner steps `times` times, or until a condition holds after an iteration (at most `max`)."""

    label: str | None = None
    times: int | None = Field(default=None, ge=1, le=100_000)
    until: dict[str, Any] | None = None
    max: int | None = Field(default=None, ge=1, le=100_000)
    steps: list[Any]

    @model_validator(mode="after")
    def _bounded(self) -> RepeatStep:
        if (self.times is None) == (self.until is None):
            raise ValueError("give either 'times' or 'until' (with 'max')")
        if self.until is not None and self.max is None:
            raise ValueError("'repeat until' needs 'max', the most iterations it may run")
        return self


class LinearValues(Strict):
    """from, to, step."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    start: Any = Field(alias="from")
    stop: Any = Field(alias="to")
    step: Any


class GeometricValues(Strict):
    """from, to, factor."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    start: Any = Field(alias="from")
    stop: Any = Field(alias="to")
    factor: float = Field(gt=1.0)


class SweepStep(Strict):
    """The inner steps once per value of `parameter`, used in them as ${parameter}.

    With `until` (a `repeat until` condition, e.g. {detector: short}) the sweep ends early after
    the first iteration in which it holds: a CCD ramp that stops at the short, not the run.
    """

    label: str | None = None
    parameter: str = Field(pattern=r"^[A-Za-z_]\w*$")
    values: list[Any] | LinearValues | GeometricValues
    until: dict[str, Any] | None = None
    steps: list[Any]


STEP_KINDS: dict[str, type[BaseModel]] = {
    "rest": RestStep,
    "current": CurrentStep,
    "voltage": VoltageStep,
    "cccv": CCCVStep,
    "eis": EISStep,
    "mark": MarkStep,
    "wait": WaitStep,
    "set": SetStep,
    "repeat": RepeatStep,
    "sweep": SweepStep,
}
