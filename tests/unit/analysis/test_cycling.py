"""Cycling metrics from synthetic journals whose right answers are known by construction."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labctl.analysis.cycling import full_cell_cycles, impedance_series, symmetric_cycling
from labctl.analysis.eis import circuit_impedance
from labctl.data import Event, EventKind, Journal, Sample
from labctl.data.export import step_executions

T0_NS = 1_800_000_000 * 10**9
S_NS = 10**9
AREA_CM2 = 0.785


class RunBuilder:
    """Writes a plausible journal step by step: events and samples as the runner would."""

    def __init__(self) -> None:
        self.t_ns = T0_NS
        self.step = 0
        self.samples: list[Sample] = []
        self.events = [Event(self.t_ns, -1, EventKind.RUN_STARTED, {"protocol": "synthetic", "steps": 0})]

    def current_step(
        self,
        current_a: float,
        duration_s: float,
        voltage: Callable[[float], float],
        *,
        context: dict[str, Any] | None = None,
        kind: str = "current",
        points: int = 20,
        ended: bool = True,
        reason: str = "capacity reached",
    ) -> None:
        """A step at constant current; voltage(fraction of the step done) gives V."""
        density = current_a / (AREA_CM2 * 1e-4)
        self.events.append(
            Event(
                self.t_ns,
                self.step,
                EventKind.STEP_STARTED,
                {
                    "kind": kind,
                    "description": kind,
                    "label": None,
                    "line": 1,
                    "current_a": current_a,
                    "density_a_m2": density,
                    "context": context or {},
                },
            )
        )
        for k in range(1, points + 1):
            elapsed = duration_s * k / points
            self.samples.append(
                Sample(
                    self.t_ns + int(elapsed * S_NS),
                    self.step,
                    {
                        "voltage_v": voltage(k / points),
                        "current_a": current_a,
                        "charge_c": current_a * elapsed,
                        "pressure_pa": 5e6,
                        "temperature_k": 298.15,
                    },
                )
            )
        self.t_ns += int(duration_s * S_NS)
        if ended:
            self.events.append(
                Event(
                    self.t_ns,
                    self.step,
                    EventKind.STEP_ENDED,
                    {
                        "reason": reason,
                        "action": "next",
                        "charge_c": current_a * duration_s,
                        "duration_s": duration_s,
                    },
                )
            )
        self.step += 1

    def spectrum(
        self, number: int, elements: dict[str, float], pressure_pa: float = 5e6, seed: int = 0
    ) -> None:
        f = np.logspace(6, -1, 50)
        z = circuit_impedance(f, **elements)
        rng = np.random.default_rng(seed)
        z = z + 0.005 * np.abs(z) * (rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f)))
        self.events.append(
            Event(
                self.t_ns,
                self.step,
                EventKind.STEP_STARTED,
                {"kind": "eis", "description": "eis", "current_a": 0.0, "context": {}},
            )
        )
        for i, (fi, zi) in enumerate(zip(f, z, strict=True)):
            self.samples.append(
                Sample(
                    self.t_ns + i * S_NS,
                    self.step,
                    {
                        "frequency_hz": fi,
                        "z_real_ohm": zi.real,
                        "z_imag_ohm": zi.imag,
                        "spectrum": number,
                        "pressure_pa": pressure_pa,
                        "temperature_k": 298.15,
                    },
                    kind="eis",
                )
            )
        self.t_ns += 60 * S_NS
        self.events.append(Event(self.t_ns, self.step, EventKind.STEP_ENDED, {"reason": "spectrum done"}))
        self.step += 1

    def wait(self, hours: float) -> None:
        self.t_ns += int(hours * 3600 * S_NS)

    def event(self, kind: EventKind, data: dict[str, Any]) -> None:
        self.events.append(Event(self.t_ns, max(self.step - 1, 0), kind, data))

    async def journal(self, path: Path) -> Journal:
        journal = Journal(path)
        await journal.append(self.samples, sorted(self.events, key=lambda e: e.t_ns))
        return journal


# --- full cells ----------------------------------------------------------------------------------

I_A = 0.2e-3  # 0.2 mA


def linear(start_v: float, end_v: float) -> Callable[[float], float]:
    return lambda x: start_v + (end_v - start_v) * x


def full_cell_run(cycles: int = 5, with_phase: bool = True, with_context: bool = True) -> RunBuilder:
    """Charge 3.0 → 3.7 V and discharge 3.6 → 2.9 V; capacity fades 2 %/cycle, first CE 80 %."""
    run = RunBuilder()
    for n in range(1, cycles + 1):
        discharge_mah = 1.5 * 0.98 ** (n - 1)
        charge_mah = discharge_mah / (0.8 if n == 1 else 0.99)
        for sign, mah, volts, phase in (
            (1, charge_mah, linear(3.0, 3.7), "charge"),
            (-1, discharge_mah, linear(3.6, 2.9), "discharge"),
        ):
            context = {"cycle": n, "phase": phase} if with_phase else {"cycle": n}
            run.current_step(sign * I_A, mah * 3.6 / I_A, volts, context=context if with_context else None)
    return run


async def test_full_cell_capacities_efficiency_retention_and_voltages(tmp_path):
    journal = await full_cell_run().journal(tmp_path / "j.sqlite")
    cycles = full_cell_cycles(journal, area_cm2=AREA_CM2, active_mass_mg=10.0)
    journal.close()
    assert [c.number for c in cycles] == [1, 2, 3, 4, 5]
    first, third = cycles[0], cycles[2]
    assert first.discharge_mah == pytest.approx(1.5, rel=1e-9)
    assert first.charge_mah == pytest.approx(1.5 / 0.8, rel=1e-9)
    assert first.discharge_mah_cm2 == pytest.approx(1.5 / AREA_CM2)
    assert first.discharge_mah_g == pytest.approx(150.0)  # 1.5 mAh in 10 mg
    assert first.coulombic_efficiency == pytest.approx(0.8)
    assert third.coulombic_efficiency == pytest.approx(0.99)
    assert third.retention == pytest.approx(0.98**2)
    # linear voltage against charge: the charge-weighted mean is the midpoint
    assert third.mean_charge_v == pytest.approx(3.35, abs=2e-3)
    assert third.mean_discharge_v == pytest.approx(3.25, abs=2e-3)
    assert third.overpotential_v == pytest.approx(0.05, abs=2e-3)
    assert third.energy_efficiency == pytest.approx(0.99 * 3.25 / 3.35, rel=2e-3)
    assert all(c.complete for c in cycles)


async def test_cycles_follow_current_sign_without_phase_or_context_and_mass_is_optional(tmp_path):
    for name, run in (
        ("no-phase", full_cell_run(with_phase=False)),
        ("no-context", full_cell_run(with_context=False)),
    ):
        journal = await run.journal(tmp_path / f"{name}.sqlite")
        cycles = full_cell_cycles(journal, area_cm2=AREA_CM2)  # no active mass given
        journal.close()
        assert len(cycles) == 5, name
        assert cycles[1].charge_mah == pytest.approx(1.5 * 0.98 / 0.99)
        assert cycles[1].discharge_mah == pytest.approx(1.5 * 0.98)
        assert all(c.discharge_mah_g is None for c in cycles)  # unavailable, not guessed


async def test_interrupted_discharge_counts_its_charge_so_far_and_the_cycle_is_incomplete(tmp_path):
    run = full_cell_run(cycles=2)
    run.current_step(I_A, 1.5 * 3.6 / I_A, linear(3.0, 3.7), context={"cycle": 3, "phase": "charge"})
    run.current_step(-I_A, 1000.0, linear(3.6, 3.4), context={"cycle": 3, "phase": "discharge"}, ended=False)
    run.event(EventKind.RUN_ENDED, {"state": "aborted", "reason": "aborted by the operator"})
    journal = await run.journal(tmp_path / "j.sqlite")
    cycles = full_cell_cycles(journal, area_cm2=AREA_CM2, active_mass_mg=10.0, reference_cycle=2)
    journal.close()
    last = cycles[-1]
    assert last.discharge_mah == pytest.approx(I_A * 1000.0 / 3.6)  # the last sample's running charge
    assert not last.complete and cycles[1].complete
    assert cycles[1].retention == pytest.approx(1.0)  # the reference cycle


# --- symmetric cells -----------------------------------------------------------------------------

J_A = 0.5e-3 * AREA_CM2  # 0.5 mA/cm²


def symmetric_run(cycles: int = 6, short_in_last: bool = True) -> RunBuilder:
    """1 h half-cycles at 0.5 mA/cm²: stripping polarization rises 20 → 45 mV, plating stays at 20 mV."""
    run = RunBuilder()
    run.current_step(0.0, 3600.0, lambda x: 0.0, kind="rest")
    for n in range(1, cycles + 1):
        strip_mv = 20.0 + 5.0 * (n - 1)
        run.current_step(J_A, 3600.0, lambda x, mv=strip_mv: mv / 1e3 * (1 + 0.1 * x), context={"cycle": n})
        last = short_in_last and n == cycles
        run.current_step(
            -J_A, 1800.0 if last else 3600.0, lambda x: -0.020, context={"cycle": n}, ended=not last
        )
        if last:
            run.event(
                EventKind.DETECTOR,
                {"type": "short_circuit", "message": "short circuit", "density_a_m2": -5.0, "t_ns": run.t_ns},
            )
            run.event(EventKind.RUN_ENDED, {"state": "done", "reason": "short circuit"})
    return run


async def test_symmetric_polarization_per_half_cycle_is_split_by_direction(tmp_path):
    journal = await symmetric_run().journal(tmp_path / "j.sqlite")
    result = symmetric_cycling(journal, area_cm2=AREA_CM2)
    journal.close()
    assert len(result.half_cycles) == 12
    strips = [h for h in result.half_cycles if h.direction == "strip"]
    plates = [h for h in result.half_cycles if h.direction == "plate"]
    assert len(strips) == len(plates) == 6
    assert all(h.density_ma_cm2 == pytest.approx(0.5) for h in result.half_cycles)
    # late polarization = median of the last fifth: 1.09–1.1 × the level for stripping
    assert strips[0].late_mv == pytest.approx(20.0 * 1.095, rel=0.01)
    assert strips[-1].late_mv == pytest.approx(45.0 * 1.095, rel=0.01)
    assert all(h.late_mv == pytest.approx(20.0) for h in plates)
    assert strips[0].capacity_mah_cm2 == pytest.approx(0.5)
    assert strips[0].t_start_h == pytest.approx(1.0)
    assert not plates[-1].completed and plates[0].completed


async def test_hours_to_failure_and_the_polarization_trend(tmp_path):
    journal = await symmetric_run().journal(tmp_path / "j.sqlite")
    result = symmetric_cycling(journal, area_cm2=AREA_CM2)
    journal.close()
    assert result.failure == "short circuit"
    # 5 full cycles (10 h) and one stripping hour and half a plating hour, counted from the first current
    assert result.hours_to_failure == pytest.approx(11.5)
    assert result.failure_density_ma_cm2 == pytest.approx(0.5)
    trends = {t.direction: t for t in result.trends}
    assert trends["strip"].slope_mv_per_h == pytest.approx(5.0 * 1.095 / 2.0, rel=0.02)  # 5 mV per 2 h cycle
    assert trends["strip"].change == pytest.approx(45.0 / 20.0 - 1.0, rel=0.01)
    assert abs(trends["plate"].slope_mv_per_h) < 1e-6
    assert trends["plate"].n == 5  # the cut-short plating is left out of the trend


async def test_cycling_without_failure_reports_the_hours_cycled(tmp_path):
    journal = await symmetric_run(cycles=3, short_in_last=False).journal(tmp_path / "j.sqlite")
    result = symmetric_cycling(journal, area_cm2=AREA_CM2)
    journal.close()
    assert result.failure is None and result.hours_to_failure is None
    assert result.cycling_h == pytest.approx(6.0)


# --- impedance over time -------------------------------------------------------------------------

INTERFACE = dict(R_bulk=48.0, Q_int=2e-6, alpha_int=0.85)


async def test_impedance_series_tells_sqrt_t_from_linear_growth(tmp_path):
    laws = {
        "√t (passivating)": lambda h: 200.0 + 100.0 * np.sqrt(h),
        "linear (non-passivating)": lambda h: 200.0 + 25.0 * h,
    }
    for expected, law in laws.items():
        run = RunBuilder()
        for n, hours in enumerate([0.5, 2, 4, 8, 16, 24], start=1):
            run.t_ns = T0_NS + int(hours * 3600 * S_NS)
            run.spectrum(n, dict(INTERFACE, R_int=law(hours)), seed=n)
        journal = await run.journal(tmp_path / f"{expected[:3]}.sqlite")
        series = impedance_series(journal)
        journal.close()
        assert len(series.points) == 6 and not series.pressures_differ
        for point in series.points:
            assert point.fit is not None and point.fit.acceptable
            assert point.fit.r_int.value == pytest.approx(law(point.t_h), rel=0.05)
        assert series.growth == expected


async def test_impedance_against_pressure_and_an_unfittable_spectrum(tmp_path):
    run = RunBuilder()
    for n, mpa in enumerate([1, 5, 10], start=1):
        run.spectrum(n, dict(INTERFACE, R_int=2000.0 / mpa), pressure_pa=mpa * 1e6, seed=n)
    f = np.logspace(6, -1, 50)
    run.events.append(Event(run.t_ns, run.step, EventKind.STEP_STARTED, {"kind": "eis", "context": {}}))
    for i, fi in enumerate(f):  # after a short: ~2 Ω, no arc
        run.samples.append(
            Sample(
                run.t_ns + i * S_NS,
                run.step,
                {"frequency_hz": fi, "z_real_ohm": 2.0, "z_imag_ohm": -1e-4, "spectrum": 4},
                kind="eis",
            )
        )
    journal = await run.journal(tmp_path / "j.sqlite")
    series = impedance_series(journal)
    journal.close()
    assert series.pressures_differ and series.growth is None
    assert [p.pressure_mpa for p in series.points[:3]] == [1.0, 5.0, 10.0]
    assert series.points[2].fit is not None and series.points[2].fit.r_int.value == pytest.approx(
        200.0, rel=0.05
    )
    assert series.points[3].fit is None and "no capacitive arc" in (series.points[3].error or "")


# --- steps and cycles ----------------------------------------------------------------------------


async def test_late_readings_and_repeated_steps_land_in_the_right_execution(tmp_path):
    run = RunBuilder()
    run.current_step(J_A, 100.0, lambda x: 0.01, context={"cycle": 1})
    run.current_step(-J_A, 100.0, lambda x: -0.01, context={"cycle": 1})
    run.step = 0  # a goto back to step 0: the same plan step runs again, in a new cycle
    run.current_step(J_A, 100.0, lambda x: 0.01, context={"cycle": 2})
    # a reading of step 1 measured at the instant step 0 restarted, journaled afterwards
    restart_ns = T0_NS + 200 * S_NS
    run.samples.append(Sample(restart_ns, 1, {"voltage_v": -0.01, "current_a": -J_A, "charge_c": -J_A * 100}))
    journal = await run.journal(tmp_path / "j.sqlite")
    executions = step_executions(journal)
    journal.close()
    assert [(e.number, e.step, e.cycle) for e in executions] == [(1, 0, 1), (2, 1, 1), (3, 0, 2)]
    assert [len(e.samples) for e in executions] == [20, 21, 20]
    assert executions[1].samples[-1].t_ns == restart_ns


async def test_a_safety_limit_ends_cycling_as_a_failure(tmp_path):
    run = symmetric_run(cycles=2, short_in_last=False)
    run.current_step(J_A, 600.0, lambda x: 0.9, context={"cycle": 3}, ended=False)
    run.event(EventKind.LIMIT, {"message": "voltage 1.01 V left the safety window -1..1 V"})
    journal = await run.journal(tmp_path / "j.sqlite")
    result = symmetric_cycling(journal, area_cm2=AREA_CM2)
    journal.close()
    assert result.failure == "safety limit"
    assert result.hours_to_failure == pytest.approx(4.0 + 600 / 3600)
    assert result.failure_density_ma_cm2 == pytest.approx(0.5)  # from the half-cycle it happened in
