"""Quantities from protocol files ("0.1 mA/cm^2", "5 MPa", "30 min", "25 degC") → SI floats.

pint parses at load time only; everything after loading is a plain float in SI units (A, A/m², C,
C/m², s, V, Pa, K, m, m²), so hot paths never touch pint. Areal quantities are first-class: a
current density becomes a current through the cell area with `absolute()`.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

from labctl.errors import UnitError

Kind = Literal[
    "current",
    "force",
    "current_density",
    "charge",
    "areal_charge",
    "time",
    "voltage",
    "pressure",
    "temperature",
    "length",
    "area",
    "resistance",
    "frequency",
    "voltage_rate",
    "areal_mass",
    "pressure_rate",
    "temperature_rate",
    "dimensionless",
]

# Per kind: the pint dimensionality, the SI unit it converts to, and an example for error messages.
_KINDS: dict[str, tuple[str, str, str]] = {
    "current": ("[current]", "A", "1 mA"),
    "force": ("[length] * [mass] / [time] ** 2", "N", "500 N"),
    "current_density": ("[current] / [length] ** 2", "A/m^2", "0.1 mA/cm^2"),
    "charge": ("[current] * [time]", "C", "1 mAh"),
    "areal_charge": ("[current] * [time] / [length] ** 2", "C/m^2", "0.5 mAh/cm^2"),
    "time": ("[time]", "s", "30 min"),
    "voltage": ("[length] ** 2 * [mass] / [current] / [time] ** 3", "V", "5 mV"),
    "pressure": ("[mass] / [length] / [time] ** 2", "Pa", "5 MPa"),
    "temperature": ("[temperature]", "K", "25 degC"),
    "length": ("[length]", "m", "0.5 mm"),
    "area": ("[length] ** 2", "m^2", "0.785 cm^2"),
    "resistance": ("[length] ** 2 * [mass] / [current] ** 2 / [time] ** 3", "ohm", "10 ohm"),
    "frequency": ("1 / [time]", "Hz", "1 kHz"),
    "voltage_rate": ("[length] ** 2 * [mass] / [current] / [time] ** 4", "V/s", "1 mV/s"),
    "areal_mass": ("[mass] / [length] ** 2", "kg/m^2", "12 mg/cm^2"),
    "pressure_rate": ("[mass] / [length] / [time] ** 3", "Pa/s", "0.01 MPa/min"),
    "temperature_rate": ("[temperature] / [time]", "K/s", "0.1 K/min"),
    "dimensionless": ("", "", "25 %"),
}

_KIND_WORDS = {
    "current": "a current",
    "force": "a force",
    "current_density": "a current density",
    "charge": "a charge (capacity)",
    "areal_charge": "an areal capacity",
    "time": "a duration",
    "voltage": "a voltage",
    "pressure": "a pressure",
    "temperature": "a temperature",
    "length": "a length",
    "area": "an area",
    "resistance": "a resistance",
    "frequency": "a frequency",
    "voltage_rate": "a voltage rate",
    "areal_mass": "an areal loading",
    "pressure_rate": "a pressure rate",
    "temperature_rate": "a temperature rate",
    "dimensionless": "a plain number or percentage",
}

_OFFSET_TEMPERATURE = re.compile(r"^\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*(degC|°C|celsius|degF|°F)\s*$")


@cache
def _registry():  # pint is imported lazily: it costs ~0.3 s and the CLI's --help must stay fast.
    import pint

    ureg = pint.UnitRegistry(autoconvert_offset_to_baseunit=True)
    return ureg


def parse(text: str | float | int, kind: Kind) -> float:
    """Parse a quantity and return its value in the SI unit of `kind`.

    Args:
        text: e.g. "0.1 mA/cm^2"; a bare number is accepted only for dimensionless kinds.
        kind: what the quantity must be (checked by dimension, not by spelling).

    Raises:
        UnitError: malformed text, or a quantity of another dimension ("5 mA" for a density).
    """
    _, si_unit, example = _KINDS[kind]
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise UnitError(f"expected {_KIND_WORDS[kind]} such as '{example}', got {text!r}")
    if isinstance(text, int | float):
        if kind == "dimensionless":
            return float(text)
        raise UnitError(f"{text!r} has no unit; write {_KIND_WORDS[kind]} with its unit, e.g. '{example}'")
    ureg = _registry()
    match = _OFFSET_TEMPERATURE.match(text)
    try:
        if match:  # pint refuses "25 degC" as an expression (offset units); build it explicitly
            unit = {"°C": "degC", "celsius": "degC", "°F": "degF"}.get(match.group(2), match.group(2))
            quantity = ureg.Quantity(float(match.group(1)), unit)
        else:
            quantity = ureg.Quantity(text.replace("µ", "u").replace("Ω", "ohm"))
    except Exception as exc:  # pint raises many unrelated types for bad text
        raise UnitError(f"cannot read {text!r} as a quantity ({exc}); write e.g. '{example}'") from None
    if not isinstance(quantity, ureg.Quantity):
        quantity = ureg.Quantity(quantity)
    expected = ureg.Quantity(1, si_unit if si_unit else "dimensionless")
    if quantity.dimensionality != expected.dimensionality:
        if quantity.dimensionless and kind != "dimensionless":
            raise UnitError(
                f"{text!r} has no unit; write {_KIND_WORDS[kind]} with its unit, e.g. '{example}'"
            )
        raise UnitError(
            f"{text!r} is not {_KIND_WORDS[kind]} (it has dimension {quantity.dimensionality}); "
            f"write e.g. '{example}'"
        )
    if kind == "dimensionless":
        return float(quantity.to("dimensionless").magnitude)
    return float(quantity.to(si_unit).magnitude)


def absolute(areal_value: float, area_m2: float) -> float:
    """Areal quantity (per m²) → absolute quantity through the cell area."""
    return areal_value * area_m2


def areal(absolute_value: float, area_m2: float) -> float:
    """Absolute quantity → per m² through the cell area."""
    return absolute_value / area_m2


# Display helpers: battery people read mA/cm², mAh/cm², MPa and °C, not SI.


def to_ma_per_cm2(a_per_m2: float) -> float:
    """A/m² → mA/cm²."""
    return a_per_m2 / 10.0


def from_ma_per_cm2(ma_per_cm2: float) -> float:
    """mA/cm² → A/m²."""
    return ma_per_cm2 * 10.0


def to_mah_per_cm2(c_per_m2: float) -> float:
    """C/m² → mAh/cm² (1 mAh/cm² = 3.6 C / 1e-4 m² = 36 000 C/m²)."""
    return c_per_m2 / 36_000.0


def kelvin_to_celsius(kelvin: float) -> float:
    """K → °C."""
    return kelvin - 273.15
