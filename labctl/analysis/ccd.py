"""CCD analysis from a journal: the numbers a CCD paper reports, recomputed from the record alone.

Works on any finished (or interrupted) run directory, so a run can be re-analysed without
instruments. Conventions: densities in mA/cm² as magnitudes; in a symmetric cell a positive
current strips the working electrode (WE) and a negative one plates it, so "strip" and "plate"
polarizations below refer to the WE's half-cycles (the other electrode does the opposite).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field
from typing import Any

from labctl import units
from labctl.data import Event, EventKind, Journal, Sample


@dataclass
class HalfCycle:
    """One current step: its density and polarization."""

    step: int
    density_ma_cm2: float
    direction: str  # "strip" (I > 0, WE stripping) | "plate"
    completed: bool
    early_mv: float | None
    late_mv: float | None

    @property
    def rise(self) -> float | None:
        """Late over early polarization, minus one (0.25 = rose by 25 %)."""
        if not self.early_mv or self.late_mv is None:
            return None
        return self.late_mv / self.early_mv - 1.0


@dataclass
class CcdResult:
    """What a CCD run found."""

    ccd_ma_cm2: float | None
    short_at_ma_cm2: float | None
    short_time_s: float | None
    critical_stripping_ma_cm2: float | None
    half_cycles: list[HalfCycle] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for result.json."""
        levels: dict[float, dict[str, Any]] = {}
        for half in self.half_cycles:
            level = levels.setdefault(
                half.density_ma_cm2, {"density_mA_cm2": half.density_ma_cm2, "completed": True}
            )
            level["completed"] = level["completed"] and half.completed
            key = f"{half.direction}_polarization_mV"
            if half.late_mv is not None:
                level[key] = round(max(level.get(key, 0.0), half.late_mv), 4)
        return {
            "ccd_mA_cm2": self.ccd_ma_cm2,
            "short_at_mA_cm2": self.short_at_ma_cm2,
            "short_time_s": self.short_time_s,
            "critical_stripping_current_mA_cm2": self.critical_stripping_ma_cm2,
            "levels": list(levels.values()),
        }


def analyse_ccd(journal: Journal) -> CcdResult:
    """Compute CCD, the density at which the cell shorted and the critical stripping current."""
    return _analyse(list(journal.events()), list(journal.samples()))


@dataclass
class CellCcd:
    """The CCD of one cell of a campaign (one cell per pressure or temperature level)."""

    cell: int
    pressure_pa: float | None
    temperature_k: float | None
    result: CcdResult

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for result.json (levels left out: the report has them per cell)."""
        numbers = self.result.as_dict()
        numbers.pop("levels")
        return {
            "cell": self.cell,
            "pressure_MPa": None if self.pressure_pa is None else round(self.pressure_pa / 1e6, 4),
            "temperature_C": None if self.temperature_k is None else round(self.temperature_k - 273.15, 2),
            **numbers,
        }


def ccd_per_cell(journal: Journal) -> list[CellCcd]:
    """One CCD per cell: the run is cut where a `wait` put a new cell in (`new_cell`).

    A CCD destroys its cell, so a CCD-vs-pressure or -temperature campaign ramps a fresh cell at
    each level; each cell's conditions are the median measured pressure and temperature while
    current flowed.
    """
    events = list(journal.events())
    samples = list(journal.samples())
    cuts = [i for i, e in enumerate(events) if e.kind is EventKind.PAUSED and e.data.get("new_cell")]
    bounds = [0, *cuts, len(events)]
    cells: list[CellCcd] = []
    for start, stop in itertools.pairwise(bounds):
        segment = events[start:stop]
        steps = {e.step for e in segment if e.kind is EventKind.STEP_STARTED}
        mine = [s for s in samples if s.step in steps]
        result = _analyse(segment, mine, start_ns=segment[0].t_ns if segment else None)
        if not result.half_cycles:
            continue  # no current passed (e.g. the part before the first new cell)
        ramp = [s for s in mine if s.values.get("current_a")]
        cells.append(
            CellCcd(
                len(cells) + 1,
                _median(ramp, "pressure_pa"),
                _median(ramp, "temperature_k"),
                result,
            )
        )
    return cells


def _median(samples: list[Sample], key: str) -> float | None:
    values = [s.values[key] for s in samples if key in s.values]
    return statistics.median(values) if values else None


def _analyse(events: list[Event], samples: list[Sample], start_ns: int | None = None) -> CcdResult:
    samples_by_step: dict[int, list[Sample]] = {}
    for sample in samples:
        samples_by_step.setdefault(sample.step, []).append(sample)
    started = {e.step: e for e in events if e.kind is EventKind.STEP_STARTED}
    ended = {e.step: e for e in events if e.kind is EventKind.STEP_ENDED}
    detectors = [e for e in events if e.kind is EventKind.DETECTOR]
    shorts = [e for e in detectors if e.data.get("type") == "short_circuit"]
    run_start = start_ns
    if run_start is None:
        run_start = next((e.t_ns for e in events if e.kind is EventKind.RUN_STARTED), None)

    half_cycles: list[HalfCycle] = []
    short_step = shorts[0].step if shorts else None
    for step, event in sorted(started.items()):
        density = event.data.get("density_a_m2")
        if event.data.get("kind") != "current" or not density:
            continue
        early, late = _polarization(samples_by_step.get(step, []))
        completed = (
            step in ended and step != short_step and not ended[step].data["reason"].startswith("short")
        )
        half_cycles.append(
            HalfCycle(
                step,
                round(abs(units.to_ma_per_cm2(density)), 9),
                "strip" if density > 0 else "plate",
                completed,
                early,
                late,
            )
        )

    levels: dict[float, bool] = {}
    for half in half_cycles:
        levels[half.density_ma_cm2] = levels.get(half.density_ma_cm2, True) and half.completed
    short_at = None
    if short_step is not None:
        short_at = round(abs(units.to_ma_per_cm2(started[short_step].data["density_a_m2"] or 0.0)), 9)
    completed_levels = [d for d, ok in levels.items() if ok and (short_at is None or d < short_at)]
    stripping = [
        e for e in detectors if e.data.get("type") == "stripping_polarization" and e.data.get("density_a_m2")
    ]
    critical = min((abs(units.to_ma_per_cm2(e.data["density_a_m2"])) for e in stripping), default=None)
    short_time = None
    if shorts and run_start is not None:
        short_time = (shorts[0].data.get("t_ns", shorts[0].t_ns) - run_start) / 1e9
    return CcdResult(
        ccd_ma_cm2=max(completed_levels) if completed_levels else None,
        short_at_ma_cm2=short_at,
        short_time_s=short_time,
        critical_stripping_ma_cm2=None if critical is None else round(critical, 9),
        half_cycles=half_cycles,
    )


def _polarization(samples: list[Sample]) -> tuple[float | None, float | None]:
    """Median |V| (mV) of the first and last fifth of a step's kept samples."""
    if len(samples) < 5:
        return None, None
    fifth = max(1, len(samples) // 5)
    early = statistics.median(abs(s.values["voltage_v"]) for s in samples[1 : fifth + 1])
    late = statistics.median(abs(s.values["voltage_v"]) for s in samples[-fifth:])
    return early * 1e3, late * 1e3
