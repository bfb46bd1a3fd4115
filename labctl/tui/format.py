"""Text for the terminal UI: durations, quantities in lab units, state colours.

Pure functions over the status payload (docs/mqtt.md), so the lab table and the station view agree and
tests need no app.
"""

from __future__ import annotations

import math
from typing import Any

STATE_STYLES = {
    "idle": "dim",
    "starting": "cyan",
    "running": "bold green",
    "paused": "bold yellow",
    "alarm": "bold white on red",
    "failed": "bold white on red",
    "done": "bold blue",
    "aborted": "magenta",
    "offline": "dim red",
}
"""Rich style of each station state; unknown states are shown plain."""

WINDOWS: tuple[tuple[str, float | None], ...] = (
    ("5 min", 300.0),
    ("1 h", 3600.0),
    ("12 h", 43200.0),
    ("all", None),
)
"""The plot windows the station view cycles through: label and length in seconds (None: everything kept)."""


def duration(seconds: Any) -> str:
    """H:MM:SS of a number of seconds ("-" if not a number); days as "2d 03:04:05"."""
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "-"
    sign = "-" if seconds < 0 else ""
    minutes, secs = divmod(int(abs(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours >= 24:
        days, hours = divmod(hours, 24)
        return f"{sign}{days}d {hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{sign}{hours}:{minutes:02d}:{secs:02d}"


def number(value: Any, scale: float = 1.0, digits: str = ".4g", offset: float = 0.0) -> str:
    """`value * scale + offset` formatted with `digits`, or "-" when it is missing or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return format(value * scale + offset, digits)


def voltage(values: dict[str, Any]) -> str:
    """Cell voltage in V, 4 decimals (a symmetric cell sits at a few mV)."""
    return number(values.get("voltage_v"), 1.0, ".4f")


def current_ma(values: dict[str, Any]) -> str:
    """Current in mA."""
    return number(values.get("current_a"), 1e3, ".4g")


def current_density(values: dict[str, Any]) -> str:
    """Current density in mA/cm² (1 A/m² = 0.1 mA/cm²)."""
    return number(values.get("current_density_a_m2"), 0.1, ".3g")


def pressure_mpa(values: dict[str, Any]) -> str:
    """Stack pressure in MPa."""
    return number(values.get("pressure_pa"), 1e-6, ".3g")


def temperature_c(values: dict[str, Any]) -> str:
    """Temperature in °C."""
    return number(values.get("temperature_k"), 1.0, ".1f", -273.15)


def step_text(status: dict[str, Any]) -> str:
    """The current step as "N description" ("-" before the first step)."""
    step = status.get("step")
    if step is None:
        return "-"
    return f"{step} {status.get('step_description') or ''}".strip()


def elapsed_text(status: dict[str, Any]) -> str:
    """Elapsed time, and the remaining time when the status knows it ("1:02:03 +0:30:00")."""
    text = duration(status.get("elapsed_s"))
    remaining = status.get("remaining_s")
    if isinstance(remaining, int | float) and math.isfinite(remaining):
        text += f" +{duration(remaining)}"
    return text


def truncate(text: str, width: int) -> str:
    """`text` cut to `width` characters, with an ellipsis when cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def last_values(view: Any) -> dict[str, Any]:
    """A station's last values, with the current density from its series when telemetry lacks it."""
    values = dict(view.values or {})
    density = view.series.get("current_density_a_m2") if hasattr(view, "series") else None
    if "current_density_a_m2" not in values and density:
        values["current_density_a_m2"] = density[-1][1]
    return values
