"""Cycling metrics from a journal: the per-cycle numbers battery papers tabulate.

- Full cells (`full_cell_cycles`): charge and discharge capacity (mAh, mAh/cm², and mAh/g when the
  active mass is known), Coulombic efficiency, retention against a reference cycle, mean charge and
  discharge voltages and the overpotential (V̄_charge − V̄_discharge) / 2 (DOMAIN.md §2.3).
- Symmetric cells (`symmetric_cycling`): the polarization of every half-cycle, stripping and plating
  kept apart, the hours of cycling to failure and the polarization trend (DOMAIN.md §2.1, §2.3).
- Any run with spectra (`impedance_series`): R_bulk and R_int per spectrum against time and stack
  pressure, and whether R_int grows like √t (passivating interphase) or linearly (DOMAIN.md §2.4).

Conventions: positive current charges a full cell; in a symmetric cell it strips the working
electrode ("strip") and negative current plates it ("plate"), as in labctl.analysis.ccd. Cycles are
numbered by labctl.data.export.step_executions, so exports and reports agree on what "cycle 3" is.
Mean voltages are charge-weighted, V̄ = ∫V dq / Q (energy over charge), computed from the journaled
running charge, so the decimation of kept samples does not bias them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from labctl import units
from labctl.analysis.eis import EisFit, EisFitError, Spectrum, spectra_from_journal
from labctl.data import EventKind, Journal, Sample
from labctl.data.export import CURRENT_KINDS, StepExecution, run_start_ns, step_executions

_C_PER_MAH = 3.6


# --- full cells ----------------------------------------------------------------------------------


@dataclass
class CycleMetrics:
    """One charge/discharge cycle of a full cell.

    Attributes:
        number: the cycle number (labctl.data.export numbering, from 1).
        context: the loop parameters of its steps (e.g. {"cycle": 3, "rate": 0.1}).
        charge_mah: charge capacity, mAh (None without a charge step).
        discharge_mah: discharge capacity, mAh (None without a discharge step).
        charge_mah_cm2: areal charge capacity, mAh/cm² (None without the area).
        discharge_mah_cm2: areal discharge capacity, mAh/cm².
        charge_mah_g: specific charge capacity, mAh/g of active material (None without its mass).
        discharge_mah_g: specific discharge capacity, mAh/g.
        coulombic_efficiency: discharge / charge capacity (0.995 = 99.5 %).
        retention: discharge capacity / the reference cycle's (1.0 = 100 %).
        mean_charge_v: charge-weighted mean voltage while charging, V.
        mean_discharge_v: charge-weighted mean voltage while discharging, V.
        overpotential_v: (mean_charge_v − mean_discharge_v) / 2, V.
        charge_energy_mwh: energy put in, mWh.
        discharge_energy_mwh: energy taken out, mWh.
        energy_efficiency: discharge / charge energy.
        complete: it has a charge and a discharge, and every current step ran to its own end.
        t_end_h: hours from the run start to the end of its last step.
    """

    number: int
    context: dict[str, Any]
    charge_mah: float | None = None
    discharge_mah: float | None = None
    charge_mah_cm2: float | None = None
    discharge_mah_cm2: float | None = None
    charge_mah_g: float | None = None
    discharge_mah_g: float | None = None
    coulombic_efficiency: float | None = None
    retention: float | None = None
    mean_charge_v: float | None = None
    mean_discharge_v: float | None = None
    overpotential_v: float | None = None
    charge_energy_mwh: float | None = None
    discharge_energy_mwh: float | None = None
    energy_efficiency: float | None = None
    complete: bool = False
    t_end_h: float | None = None


def full_cell_cycles(
    journal: Journal,
    *,
    area_cm2: float | None,
    active_mass_mg: float | None = None,
    reference_cycle: int | None = None,
) -> list[CycleMetrics]:
    """Per-cycle capacities, efficiencies, retention, mean voltages and overpotential of a full cell.

    Args:
        journal: the run's journal.
        area_cm2: electrode area, cm² (None: no areal capacities).
        active_mass_mg: active cathode material, mg (None: mAh/g is unavailable, not guessed).
        reference_cycle: the cycle retention refers to; default the first cycle with a discharge.

    Returns:
        One entry per cycle that passed charge, in order.
    """
    events = list(journal.events())
    start = run_start_ns(journal, events) or 0
    by_cycle: dict[int, list[StepExecution]] = {}
    for execution in step_executions(journal, events):
        if execution.kind in CURRENT_KINDS and execution.direction:
            by_cycle.setdefault(execution.cycle, []).append(execution)

    cycles: list[CycleMetrics] = []
    for number, steps in sorted(by_cycle.items()):
        metrics = CycleMetrics(number=number, context=_loop_context(steps))
        for direction, prefix in ((1, "charge"), (-1, "discharge")):
            part = [s for s in steps if s.direction == direction]
            if not part:
                continue
            charge_c = sum(abs(s.passed_charge_c) for s in part)
            energy_j = sum(abs(_energy_j(s)) for s in part)
            mah = charge_c / _C_PER_MAH
            setattr(metrics, f"{prefix}_mah", mah)
            setattr(metrics, f"{prefix}_energy_mwh", float(energy_j / _C_PER_MAH))
            if area_cm2:
                setattr(metrics, f"{prefix}_mah_cm2", mah / area_cm2)
            if active_mass_mg:
                setattr(metrics, f"{prefix}_mah_g", mah / (active_mass_mg / 1000.0))
            if charge_c > 0:
                setattr(metrics, f"mean_{prefix}_v", float(energy_j / charge_c))
        if metrics.charge_mah and metrics.discharge_mah is not None:
            metrics.coulombic_efficiency = metrics.discharge_mah / metrics.charge_mah
        if metrics.charge_energy_mwh and metrics.discharge_energy_mwh is not None:
            metrics.energy_efficiency = metrics.discharge_energy_mwh / metrics.charge_energy_mwh
        if metrics.mean_charge_v is not None and metrics.mean_discharge_v is not None:
            metrics.overpotential_v = (metrics.mean_charge_v - metrics.mean_discharge_v) / 2.0
        metrics.complete = (
            metrics.charge_mah is not None
            and metrics.discharge_mah is not None
            and all(s.completed for s in steps)
        )
        ends = [s.end_ns or (s.samples[-1].t_ns if s.samples else s.start_ns) for s in steps]
        metrics.t_end_h = (max(ends) - start) / 3.6e12
        cycles.append(metrics)

    reference = next(
        (c for c in cycles if c.discharge_mah and (reference_cycle is None or c.number == reference_cycle)),
        None,
    )
    if reference is not None and reference.discharge_mah:
        for cycle in cycles:
            if cycle.discharge_mah is not None:
                cycle.retention = cycle.discharge_mah / reference.discharge_mah
    return cycles


def _loop_context(steps: list[StepExecution]) -> dict[str, Any]:
    context = dict(steps[0].context)
    context.pop("phase", None)
    return context


def _energy_j(execution: StepExecution) -> float:
    """∫V dq over a step, J, from the journaled (voltage, running charge) pairs.

    A step with fewer than two samples falls back to its mean voltage × its charge.
    """
    points = [
        (s.values["charge_c"], s.values["voltage_v"])
        for s in execution.samples
        if "charge_c" in s.values and "voltage_v" in s.values
    ]
    charge = execution.passed_charge_c
    if len(points) < 2:
        voltages = [v for _, v in points]
        return (statistics.fmean(voltages) if voltages else 0.0) * charge
    q = np.array([0.0] + [p[0] for p in points])
    v = np.array([points[0][1]] + [p[1] for p in points])
    energy = float(np.sum((v[1:] + v[:-1]) / 2.0 * np.diff(q)))  # trapezoid rule
    if abs(charge) > abs(q[-1]):  # the step ran on after its last kept sample
        energy += v[-1] * (charge - q[-1])
    return energy


# --- symmetric cells -----------------------------------------------------------------------------


@dataclass
class HalfCyclePolarization:
    """The polarization of one half-cycle of a symmetric cell.

    Attributes:
        number: 1-based half-cycle count in the run.
        cycle: the cycle it belongs to.
        step: its plan step index.
        direction: "strip" (I > 0, working electrode stripping) or "plate" (I < 0).
        density_ma_cm2: current density magnitude, mA/cm².
        t_start_h: hours from the run start to its start.
        t_end_h: hours from the run start to its end (or last sample).
        capacity_mah_cm2: areal capacity it moved, mAh/cm².
        early_mv: median |V| of its first fifth, mV (after the first sample).
        late_mv: median |V| of its last fifth, mV: "the" polarization of the half-cycle.
        max_mv: largest |V|, mV.
        completed: it ran to its own end (not cut short by a short, limit or abort).
    """

    number: int
    cycle: int
    step: int
    direction: Literal["strip", "plate"]
    density_ma_cm2: float
    t_start_h: float
    t_end_h: float
    capacity_mah_cm2: float | None
    early_mv: float | None
    late_mv: float | None
    max_mv: float | None
    completed: bool

    @property
    def t_mid_h(self) -> float:
        """Hours from the run start to the middle of the half-cycle."""
        return (self.t_start_h + self.t_end_h) / 2.0


@dataclass
class PolarizationTrend:
    """How the late polarization of one direction evolves over cycling at one current density.

    Attributes:
        direction: "strip" or "plate".
        density_ma_cm2: the current density the trend is taken at, mA/cm².
        n: half-cycles used.
        first_mv: late polarization of the first of them, mV.
        last_mv: late polarization of the last of them, mV.
        slope_mv_per_h: least-squares slope against time, mV/h (None with fewer than 2 points).
        change: last / first − 1 (0.5 = rose by 50 %).
    """

    direction: str
    density_ma_cm2: float
    n: int
    first_mv: float
    last_mv: float
    slope_mv_per_h: float | None
    change: float | None


@dataclass
class SymmetricCycling:
    """What a symmetric-cell cycling (or CCD) run shows about the Li/SE interfaces.

    Attributes:
        half_cycles: every current half-cycle, in order.
        cycling_h: hours from the first current step to the end of the last (or to the failure).
        failure: "short circuit" or "safety limit" (polarization or current out of bounds) if the
            cell failed, else None.
        hours_to_failure: hours of cycling (from the first current step) to the failure.
        failure_density_ma_cm2: the current density when it failed, mA/cm².
        trends: stripping and plating trends at the most-cycled current density.
    """

    half_cycles: list[HalfCyclePolarization] = field(default_factory=list)
    cycling_h: float = 0.0
    failure: str | None = None
    hours_to_failure: float | None = None
    failure_density_ma_cm2: float | None = None
    trends: list[PolarizationTrend] = field(default_factory=list)


def symmetric_cycling(journal: Journal, *, area_cm2: float | None = None) -> SymmetricCycling:
    """Polarization per half-cycle, hours to failure and polarization trend of a symmetric cell.

    Args:
        journal: the run's journal.
        area_cm2: cell area, cm²; needed for densities of steps written as currents and for the
            areal capacity (densities of steps written as densities are read from the journal).
    """
    events = list(journal.events())
    start = run_start_ns(journal, events) or 0
    result = SymmetricCycling()
    for execution in step_executions(journal, events):
        if execution.kind not in CURRENT_KINDS or not execution.direction:
            continue
        density = _density_ma_cm2(execution, area_cm2)
        early, late, peak = _polarization_mv(execution.samples)
        last_t = execution.end_ns or (execution.samples[-1].t_ns if execution.samples else execution.start_ns)
        capacity = abs(execution.passed_charge_c) / _C_PER_MAH / area_cm2 if area_cm2 else None
        result.half_cycles.append(
            HalfCyclePolarization(
                number=len(result.half_cycles) + 1,
                cycle=execution.cycle,
                step=execution.step,
                direction="strip" if execution.direction > 0 else "plate",
                density_ma_cm2=density,
                t_start_h=(execution.start_ns - start) / 3.6e12,
                t_end_h=(last_t - start) / 3.6e12,
                capacity_mah_cm2=capacity,
                early_mv=early,
                late_mv=late,
                max_mv=peak,
                completed=execution.completed,
            )
        )
    if not result.half_cycles:
        return result
    first_h = result.half_cycles[0].t_start_h
    failure = _first_failure(events)
    if failure is not None:
        kind, t_ns, density_a_m2 = failure
        result.failure = kind
        result.hours_to_failure = (t_ns - start) / 3.6e12 - first_h
        if density_a_m2:
            result.failure_density_ma_cm2 = abs(units.to_ma_per_cm2(density_a_m2))
        else:
            failed = [h for h in result.half_cycles if h.t_start_h <= (t_ns - start) / 3.6e12]
            result.failure_density_ma_cm2 = failed[-1].density_ma_cm2 if failed else None
        result.cycling_h = result.hours_to_failure
    else:
        result.cycling_h = result.half_cycles[-1].t_end_h - first_h
    result.trends = _trends(result.half_cycles)
    return result


def _density_ma_cm2(execution: StepExecution, area_cm2: float | None) -> float:
    if execution.density_a_m2:
        return round(abs(units.to_ma_per_cm2(execution.density_a_m2)), 9)
    if execution.current_a and area_cm2:
        return round(abs(execution.current_a) * 1e3 / area_cm2, 9)
    return math.nan


def _polarization_mv(samples: list[Sample]) -> tuple[float | None, float | None, float | None]:
    """Early and late median |V| (first and last fifth, as in labctl.analysis.ccd) and max |V|, mV."""
    volts = [abs(s.values["voltage_v"]) for s in samples if "voltage_v" in s.values]
    if not volts:
        return None, None, None
    peak = max(volts) * 1e3
    if len(volts) < 5:
        middle = statistics.median(volts) * 1e3
        return middle, middle, peak
    fifth = max(1, len(volts) // 5)
    early = statistics.median(volts[1 : fifth + 1]) * 1e3  # the first sample is the IR jump's edge
    late = statistics.median(volts[-fifth:]) * 1e3
    return early, late, peak


def _first_failure(events: list[Any]) -> tuple[str, int, float | None] | None:
    """The first short (detector) or safety-limit event: (what, when in ns, density in A/m²)."""
    for event in events:
        if event.kind is EventKind.DETECTOR and event.data.get("type") == "short_circuit":
            return "short circuit", int(event.data.get("t_ns", event.t_ns)), event.data.get("density_a_m2")
        if event.kind is EventKind.LIMIT:
            return "safety limit", event.t_ns, event.data.get("density_a_m2")
    return None


def _trends(half_cycles: list[HalfCyclePolarization]) -> list[PolarizationTrend]:
    """Stripping and plating trends at the density with the most completed half-cycles.

    Mixing densities would read a CCD ramp's rising current as a rising polarization; one density
    isolates what the interface does over time.
    """
    usable = [
        h for h in half_cycles if h.late_mv is not None and h.completed and not math.isnan(h.density_ma_cm2)
    ]
    if not usable:
        usable = [h for h in half_cycles if h.late_mv is not None and not math.isnan(h.density_ma_cm2)]
    if not usable:
        return []
    counts: dict[float, int] = {}
    for h in usable:
        counts[h.density_ma_cm2] = counts.get(h.density_ma_cm2, 0) + 1
    density = max(counts, key=lambda d: (counts[d], -d))
    trends = []
    for direction in ("strip", "plate"):
        points = [h for h in usable if h.direction == direction and h.density_ma_cm2 == density]
        if not points:
            continue
        first, last = points[0].late_mv or 0.0, points[-1].late_mv or 0.0
        slope = None
        if len(points) >= 2 and points[-1].t_mid_h > points[0].t_mid_h:
            slope = float(np.polyfit([p.t_mid_h for p in points], [p.late_mv for p in points], 1)[0])
        trends.append(
            PolarizationTrend(
                direction=direction,
                density_ma_cm2=density,
                n=len(points),
                first_mv=first,
                last_mv=last,
                slope_mv_per_h=slope,
                change=last / first - 1.0 if first and len(points) >= 2 else None,
            )
        )
    return trends


# --- impedance over time -------------------------------------------------------------------------


@dataclass
class ImpedancePoint:
    """One spectrum's fit, placed in time and pressure.

    Attributes:
        spectrum: the measured spectrum.
        t_h: hours from the run start to the spectrum.
        pressure_mpa: mean stack pressure during it, MPa (nan if not logged).
        temperature_c: mean temperature during it, °C (nan if not logged).
        fit: the equivalent-circuit fit (None if it could not be fitted).
        error: why it could not be fitted.
    """

    spectrum: Spectrum
    t_h: float
    pressure_mpa: float
    temperature_c: float
    fit: EisFit | None = None
    error: str | None = None


@dataclass
class ImpedanceSeries:
    """R_bulk and R_int of every spectrum in a run.

    Attributes:
        points: one per spectrum, in time order.
        growth: "√t (passivating)", "linear (non-passivating)", "not growing" or None (too few
            acceptable fits at one pressure to tell).
    """

    points: list[ImpedancePoint] = field(default_factory=list)
    growth: str | None = None

    @property
    def pressures_differ(self) -> bool:
        """The spectra were taken at stack pressures more than 5 % apart (plot R_int vs pressure)."""
        pressures = [p.pressure_mpa for p in self.points if not math.isnan(p.pressure_mpa)]
        return bool(pressures) and max(pressures) > 1.05 * min(pressures) + 1e-9


def impedance_series(journal: Journal) -> ImpedanceSeries:
    """Fit every spectrum in the journal and summarise R_int against time and pressure."""
    start = run_start_ns(journal) or 0
    series = ImpedanceSeries()
    for spectrum in spectra_from_journal(journal):
        point = ImpedancePoint(
            spectrum=spectrum,
            t_h=(spectrum.t_ns - start) / 3.6e12,
            pressure_mpa=spectrum.pressure_pa / 1e6,
            temperature_c=units.kelvin_to_celsius(spectrum.temperature_k),
        )
        try:
            point.fit = spectrum.fit()
        except EisFitError as exc:
            point.error = str(exc)
        series.points.append(point)
    series.growth = _growth_law(series)
    return series


def _growth_law(series: ImpedanceSeries) -> str | None:
    """√t or linear growth of R_int (DOMAIN.md §4), from ≥ 4 acceptable fits at one pressure."""
    good = [p for p in series.points if p.fit is not None and p.fit.acceptable]
    if series.pressures_differ or len(good) < 4:
        return None
    t = np.array([p.t_h for p in good])
    r = np.array([p.fit.r_int.value for p in good if p.fit is not None])
    if t.max() - t.min() <= 0:
        return None
    if r[-1] <= r[0] * 1.02:
        return "not growing"
    residuals = {}
    for name, x in (("linear (non-passivating)", t), ("√t (passivating)", np.sqrt(np.maximum(t, 0.0)))):
        design = np.vstack([np.ones_like(x), x]).T
        _, ssr, _, _ = np.linalg.lstsq(design, r, rcond=None)
        residuals[name] = float(ssr[0]) if ssr.size else 0.0
    best, other = sorted(residuals, key=lambda k: residuals[k])
    # a clear winner only: the other law must leave at least twice the squared residuals
    return best if residuals[other] >= 2.0 * residuals[best] else None
