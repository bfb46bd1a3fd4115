"""Watches that run alongside every step and judge each sample as it arrives.

Each detector sees every acquired sample (not only the kept ones), keeps its own small state, and
reports `Finding`s; the runner decides what a finding does (its watch's action).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from labctl.engine.cycles import Cycle
from labctl.protocol.plan import PlanStep, Watch

_EARLY_SAMPLES = 5
FULL_CELL_REST_V = 0.1
"""A rest voltage above this means the cell has an OCV of its own (a full cell), V."""


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector saw: `fired` findings trigger the watch's action, others are only recorded."""

    watch: str
    fired: bool
    t: float
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class ShortCircuitDetector:
    """A debounced collapse of the apparent resistance |V/I| under current (DOMAIN.md §2.1).

    Why a *relative* collapse and not a fixed "V < a few mV": a hot, well-pressed LPSCl cell at
    0.05 mA/cm² polarises by well under a millivolt, so a fixed threshold would call it shorted.
    The reference is the median apparent resistance of the last healthy current step (or, on the
    first one, of its own first samples). A collapse shorter than `debounce` is a soft short.
    A cell with an open-circuit voltage (a full cell: the last rest read more than 0.1 V) instead
    collapses towards 0 V: there the test is |V| < `collapse` × the rest voltage, because its
    V/I is dominated by the state of charge, not by polarization.
    """

    def __init__(self, watch: Watch) -> None:
        self.name = watch.name
        self.collapse = watch.params["collapse"]
        self.floor = watch.params["floor"]
        self.debounce = watch.params["debounce"]
        self.settle = watch.params["settle"]
        self.reference: float | None = None
        self._active = False
        self._t0 = 0.0
        self._set_current = 0.0
        self._healthy: list[float] = []
        self._collapsed_since: float | None = None
        self._fired = False
        self._resting = False
        self._v_rest = 0.0

    def begin_step(self, step: PlanStep, t0: float) -> None:
        """Arm for a step; current steps are judged, rests give the open-circuit voltage."""
        self._active = step.kind in ("current", "cccv") and step.current_a != 0.0
        self._resting = step.kind == "rest"
        self._t0, self._set_current = t0, step.current_a
        self._healthy, self._collapsed_since, self._fired = [], None, False

    def end_step(self) -> None:
        """The healthy samples of a finished step become the next reference."""
        if self._active and not self._fired and len(self._healthy) >= _EARLY_SAMPLES:
            self.reference = statistics.median(self._healthy)

    def update(self, t: float, voltage_v: float, current_a: float) -> Finding | None:
        """Judge one sample."""
        if self._resting:
            self._v_rest = voltage_v
            return None
        if not self._active or self._fired or t - self._t0 < self.settle:
            return None
        if abs(current_a) < 0.5 * abs(self._set_current):
            return None  # the instrument is limiting (or a CV hold): the voltage is not the cell's
        if abs(self._v_rest) > FULL_CELL_REST_V:
            return self._judge_collapse(
                t, voltage_v, current_a, abs(voltage_v) < self.collapse * abs(self._v_rest), abs(self._v_rest)
            )
        resistance = voltage_v / current_a
        reference = self.reference
        if reference is None:
            if len(self._healthy) < _EARLY_SAMPLES:
                self._healthy.append(resistance)
                return None
            reference = statistics.median(self._healthy[:_EARLY_SAMPLES])
        collapsed = resistance < self.collapse * reference or abs(voltage_v) < self.floor
        if not collapsed:
            self._healthy.append(resistance)
        return self._judge_collapse(t, voltage_v, current_a, collapsed, reference, resistance)

    def _judge_collapse(
        self,
        t: float,
        voltage_v: float,
        current_a: float,
        collapsed: bool,
        reference: float,
        resistance: float | None = None,
    ) -> Finding | None:
        """Debounce a collapse: long enough is a short, a recovered one a soft short."""
        if not collapsed:
            finding = None
            if self._collapsed_since is not None:
                finding = Finding(
                    self.name,
                    False,
                    t,
                    f"soft short: the voltage collapsed for {t - self._collapsed_since:.0f} s and recovered",
                    {"duration_s": t - self._collapsed_since, "reference_ohm": reference},
                )
            self._collapsed_since = None
            return finding
        if self._collapsed_since is None:
            self._collapsed_since = t
        if t - self._collapsed_since >= self.debounce:
            self._fired = True
            against = (
                f"|V/I| {resistance:.3g} Ω vs {reference:.3g} Ω healthy"
                if resistance is not None
                else f"vs {reference:.3g} V at rest"
            )
            return Finding(
                self.name,
                True,
                t,
                f"short circuit: {voltage_v * 1e3:.3g} mV at {current_a * 1e3:.3g} mA "
                f"({against}) for {self.debounce:.0f} s",
                {
                    "voltage_v": voltage_v,
                    "current_a": current_a,
                    "resistance_ohm": resistance,
                    "reference_ohm": reference,
                    "since_t": self._collapsed_since,
                },
            )
        return None


class StrippingPolarizationDetector:
    """|V| rising within a current step above its early level by `rise`: voids opening (DOMAIN.md §2.1)."""

    def __init__(self, watch: Watch) -> None:
        self.name = watch.name
        self.rise = watch.params["rise"]
        self.settle = watch.params["settle"]
        self._active = False
        self._t0 = 0.0
        self._early: list[float] = []
        self._above = 0
        self._fired = False

    def begin_step(self, step: PlanStep, t0: float) -> None:
        """Arm for a current step."""
        self._active = step.kind == "current" and step.current_a != 0.0
        self._t0, self._early, self._above, self._fired = t0, [], 0, False

    def end_step(self) -> None:
        """Nothing carries over: each half-cycle is judged on its own."""

    def update(self, t: float, voltage_v: float, current_a: float) -> Finding | None:
        """Judge one sample; three consecutive samples above the threshold fire (noise guard)."""
        if not self._active or self._fired or t - self._t0 < self.settle:
            return None
        if len(self._early) < _EARLY_SAMPLES:
            self._early.append(abs(voltage_v))
            return None
        early = statistics.median(self._early)
        self._above = self._above + 1 if abs(voltage_v) > (1 + self.rise) * early else 0
        if self._above >= 3:
            self._fired = True
            return Finding(
                self.name,
                True,
                t,
                f"stripping polarization rose from {early * 1e3:.3g} mV to {abs(voltage_v) * 1e3:.3g} mV",
                {"early_v": early, "voltage_v": voltage_v, "current_a": current_a},
            )
        return None


class _CycleDetector:
    """Base of watches judged once per finished cycle, not per sample."""

    def __init__(self, watch: Watch) -> None:
        self.name = watch.name
        self.below = watch.params["below"]

    def begin_step(self, step: PlanStep, t0: float) -> None:
        """Nothing to arm per step."""

    def end_step(self) -> None:
        """Nothing carries over per step."""

    def update(self, t: float, voltage_v: float, current_a: float) -> Finding | None:
        """Samples are not judged."""
        return None


class CapacityRetentionDetector(_CycleDetector):
    """Discharge capacity below `below` × the reference cycle's (DOMAIN.md §2.3: stop at 80 %)."""

    def cycle_ended(self, cycle: Cycle, t: float) -> Finding | None:
        """Judge one finished cycle."""
        retention = cycle.retention
        if retention is None or retention >= self.below:
            return None
        return Finding(
            self.name,
            True,
            t,
            f"capacity retention {retention:.1%} in cycle {cycle.number} is below {self.below:.0%}",
            cycle.as_data(),
        )


class CoulombicEfficiencyDetector(_CycleDetector):
    """Coulombic efficiency below `below` after the formation cycles."""

    def __init__(self, watch: Watch) -> None:
        super().__init__(watch)
        self.after_cycle = int(watch.params["after_cycle"])

    def cycle_ended(self, cycle: Cycle, t: float) -> Finding | None:
        """Judge one finished cycle."""
        efficiency = cycle.efficiency
        if cycle.number <= self.after_cycle or efficiency is None or efficiency >= self.below:
            return None
        return Finding(
            self.name,
            True,
            t,
            f"Coulombic efficiency {efficiency:.2%} in cycle {cycle.number} is below {self.below:.2%}",
            cycle.as_data(),
        )


class ConditionDriftDetector:
    """A measured condition (stack pressure or temperature) held off its set-point for too long.

    Judged on every sample through `conditions()`, which the runner calls with the measured values
    and the set-points in force (None while nothing is held).
    """

    def __init__(self, watch: Watch) -> None:
        self.name = watch.name
        self.quantity = "pressure" if watch.type == "pressure_drift" else "temperature"
        self.band = watch.params["band"]
        self.debounce = watch.params["debounce"]
        self._off_since: float | None = None
        self._fired = False

    def begin_step(self, step: PlanStep, t0: float) -> None:
        """Drift is judged across steps: nothing to arm."""

    def end_step(self) -> None:
        """Nothing carries over per step."""

    def update(self, t: float, voltage_v: float, current_a: float) -> Finding | None:
        """Voltage and current are not judged."""
        return None

    def conditions(
        self, t: float, measured: dict[str, float], targets: dict[str, float | None]
    ) -> Finding | None:
        """Judge the measured pressure (Pa) or temperature (K) against its set-point."""
        target = targets.get(self.quantity)
        value = measured.get(self.quantity)
        if target is None or value is None or abs(value - target) <= self.band:
            self._off_since = None
            self._fired = False  # back in band: a later drift is a new finding
            return None
        if self._off_since is None:
            self._off_since = t
        if self._fired or t - self._off_since < self.debounce:
            return None
        self._fired = True
        scale, unit = (1e-6, "MPa") if self.quantity == "pressure" else (1.0, "K")
        where = f"{value * scale:.4g} {unit}" if self.quantity == "pressure" else f"{value - 273.15:.1f} °C"
        return Finding(
            self.name,
            True,
            t,
            f"{self.quantity} {where} is {abs(value - target) * scale:.3g} {unit} off its set-point "
            f"for {t - self._off_since:.0f} s: check the rig or heater",
            {"measured": value, "target": target, "since_t": self._off_since},
        )


DETECTORS: dict[str, Any] = {
    "short_circuit": ShortCircuitDetector,
    "stripping_polarization": StrippingPolarizationDetector,
    "capacity_retention": CapacityRetentionDetector,
    "coulombic_efficiency": CoulombicEfficiencyDetector,
    "pressure_drift": ConditionDriftDetector,
    "temperature_drift": ConditionDriftDetector,
}
"""Watch type → detector class (the registry the runner builds from)."""
