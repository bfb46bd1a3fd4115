"""The protocol language as pydantic models: what a protocol file may say.

Quantities stay text here and are checked by dimension as they are validated (units.parse), so a
"5 mA" where a density belongs is reported at its line. Step lists are parsed by hand in
`validate.py` (one-key mappings such as `- current: {...}`) to give a nearest-name suggestion for
a misspelt step kind.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from labctl import units

PARAMETER_REFERENCE = re.compile(r"^\s*(-)?\s*(?:([0-9.]+(?:[eE][-+]?\d+)?)\s*\*\s*)?\$\{(\w+)\}\s*$")


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


Time = Annotated[float, _quantity("time")]
Voltage = Annotated[float, _quantity("voltage")]
Current = Annotated[float, _quantity("current")]
Pressure = Annotated[float, _quantity("pressure")]
Temperature = Annotated[float, _quantity("temperature")]
Length = Annotated[float, _quantity("length")]
Area = Annotated[float, _quantity("area")]
Fraction = Annotated[float, _quantity("dimensionless")]
AnyValue = Annotated[Any, BeforeValidator(lambda v: v)]
DensityOrParameter = Annotated[float | ParameterRef, _quantity("current_density", allow_parameter=True)]
CurrentOrParameter = Annotated[float | ParameterRef, _quantity("current", allow_parameter=True)]


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
    """The cell under test. Stored with every result."""

    kind: Literal["symmetric"] = "symmetric"
    material: str = "Li6PS5Cl"
    area: Area = Field(default=units.parse("0.785 cm^2", "area"))
    thickness: Length = Field(default=units.parse("0.5 mm", "length"))


class Conditions(Strict):
    """Stack pressure and temperature of the test (set-points once the rig and heater exist)."""

    pressure: Pressure = Field(default=1e6)
    temperature: Temperature = Field(default=298.15)


class Range(Strict):
    """A window a measured value must stay in."""

    min: float | None = None
    max: float | None = None


class VoltageRange(Range):
    """Voltage window in V."""

    min: Voltage | None = None
    max: Voltage | None = None


class CurrentLimit(Strict):
    """Largest current magnitude in A."""

    max: Current


class Safety(Strict):
    """Limits for the whole run: a breach makes the station safe at once and ends the run as an alarm.

    The voltage window is also set as the instrument's compliance, so the instrument itself limits
    even if labctl stops answering.
    """

    voltage: VoltageRange = Field(default_factory=lambda: VoltageRange(min=-1.0, max=1.0))
    current: CurrentLimit | None = None


class Record(Strict):
    """What is measured and what is kept.

    Attributes:
        sample: instrument sampling period (1–10 Hz typical); every sample feeds the watches.
        every: keep a sample at least this often.
        dv: also keep a sample whenever the voltage moved this much since the last kept one.
        di: same for current (optional).
        poll: how often labctl collects buffered samples from the instrument.
    """

    sample: Time = 1.0
    every: Time = 10.0
    dv: Voltage = 1e-3
    di: Current | None = None
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
    """A debounced hard-short detector (DOMAIN.md §2.1, §4).

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


Watch = Annotated[ShortCircuitWatch | StrippingPolarizationWatch, Field(discriminator="type")]

END_CONDITIONS = {
    "time": "time",
    "capacity": "areal_charge",
    "charge": "charge",
    "voltage_above": "voltage",
    "voltage_below": "voltage",
}
"""End condition → the kind of quantity it takes."""

RESULT_NAMES = ("ccd", "critical_stripping_current", "polarization")


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
    results: list[Literal["ccd", "critical_stripping_current", "polarization"]] = Field(default_factory=list)
    steps: list[Any]
