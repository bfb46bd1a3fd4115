"""Every protocol in the library runs to its end on the simulators, and its report has its plots.

Each protocol runs once; protocols whose physics is checked further have a check in CHECKS.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from labctl.analysis.report import write_report
from labctl.clock import SimulatedClock
from labctl.data import Bus, EventKind, Journal
from labctl.protocol import compile_file
from labctl.session import RunReport, run_protocol

LIBRARY = sorted((Path(__file__).resolve().parents[2] / "protocols").glob("*.yaml"))

EXPECTED = {
    "ccd.yaml": (
        {"ccd_mA_cm2", "short_at_mA_cm2", "critical_stripping_current_mA_cm2"},
        {"voltage_current.png"},
    ),
    "ccd_constant_time.yaml": ({"ccd_mA_cm2", "impedance"}, {"voltage_current.png", "nyquist.png"}),
    "symmetric_cycling.yaml": ({"hours_to_failure"}, {"voltage_current.png", "polarization.png"}),
    "full_cell_cycling.yaml": (
        {"cycles", "impedance"},
        {"capacity.png", "nyquist.png", "impedance_trend.png"},
    ),
    "rate_test.yaml": ({"cycles"}, {"capacity.png"}),
    "interphase_growth.yaml": ({"impedance", "interphase_growth"}, {"nyquist.png", "impedance_trend.png"}),
    "stack_pressure_sweep.yaml": ({"impedance"}, {"nyquist.png", "impedance_trend.png"}),
    "temperature_sweep.yaml": ({"impedance"}, {"nyquist.png", "impedance_trend.png"}),
    "full_cell_pressure.yaml": ({"cycles"}, {"pressure.png", "capacity.png"}),
    "ccd_vs_pressure.yaml": ({"ccd_per_cell"}, {"ccd_per_cell.png", "pressure.png"}),
    "ccd_vs_temperature.yaml": ({"ccd_per_cell"}, {"ccd_per_cell.png"}),
    "pressure_hold_short_watch.yaml": ({"short_watch"}, {"pressure.png", "voltage_current.png"}),
}


def _stack_pressure_sweep(report: RunReport, journal: Journal) -> None:
    """R_int falls with pressure, keeps its gain on the way down; the gauge's pressure is logged."""
    spectra = report.result["impedance"]
    pressures = [s["pressure_MPa"] for s in spectra]
    assert pressures[:6] == pytest.approx([1, 2, 5, 10, 15, 25], abs=0.1)  # measured by the gauge
    r_int = [s["R_int_ohm"] for s in spectra]
    assert r_int[5] < 0.8 * r_int[0]  # better contact at 25 MPa than at 1 MPa
    assert r_int[-1] < r_int[0]  # and the contact gained by creep is kept on the way down


def _temperature_sweep(report: RunReport, journal: Journal) -> None:
    """R_bulk follows Arrhenius; the heater's measured temperature is logged with the spectra."""
    r_bulk = [s["R_bulk_ohm"] for s in report.result["impedance"]]
    # 25 → 80 °C with Ea = 0.33 eV: conductivity × exp(0.33/k·(1/298.15 − 1/353.15)) ≈ 7.3
    expected = math.exp(0.33 / 8.617e-5 * (1 / 298.15 - 1 / 353.15))
    assert r_bulk[0] / r_bulk[3] == pytest.approx(expected, rel=0.15)
    assert r_bulk[4] == pytest.approx(r_bulk[0], rel=0.05)  # back at 25 °C
    temperatures = {round(s.values["temperature_k"] - 273.15) for s in journal.samples(kind="eis")}
    assert {25, 40, 60, 80} <= temperatures  # measured by the heater, within 0.5 K


def _full_cell_pressure(report: RunReport, journal: Journal) -> None:
    """The rig holds 5 MPa through a full-cell cycle; then, at a fixed gap, the cell's breathing shows."""
    gap_fixed = next(
        e.step for e in journal.events([EventKind.STEP_ENDED]) if "gap fixed" in e.data["reason"]
    )
    held = [s.values["pressure_pa"] for s in journal.samples() if 0 < s.step < gap_fixed]
    breathing = [s.values["pressure_pa"] for s in journal.samples() if s.step > gap_fixed]
    assert max(abs(p - 5e6) for p in held) < 0.1e6  # held within ±0.1 MPa through a whole cycle
    assert max(breathing) - min(breathing) > 0.1e6


def _ccd_per_cell(condition: str, levels: list[float]):
    """One fresh cell per level, each shorted by its own ramp; the CCD rises with the condition."""

    def check(report: RunReport, journal: Journal) -> None:
        cells = report.result["ccd_per_cell"]
        assert [c[condition] for c in cells] == pytest.approx(levels, abs=0.1)  # measured, not stated
        assert all(c["short_at_mA_cm2"] is not None for c in cells)  # each cell's ramp ended at its short
        ccds = [c["ccd_mA_cm2"] for c in cells]
        assert all(b > a for a, b in itertools.pairwise(ccds)), ccds
        assert ccds[-1] > 5 * ccds[0]

    return check


def _pressure_hold_short_watch(report: RunReport, journal: Journal) -> None:
    """At 25 MPa Li creeps through the pores: a short with no current hours into the hold, seen by a probe."""
    watch = report.result["short_watch"]
    assert watch["shorted"] and report.outcome.state.value == "done"
    assert 5 < watch["time_to_short_h"] < 50
    assert watch["hold_pressure_MPa"] == pytest.approx(25, abs=0.1)
    assert watch["probes"] > 10  # it held for hours before the short, probed every 30 min
    short = next(e for e in journal.events([EventKind.DETECTOR]))
    assert abs(short.data["current_a"]) < 20e-6  # seen by a probe: nothing drove it


CHECKS = {
    "pressure_hold_short_watch.yaml": _pressure_hold_short_watch,
    "ccd_vs_pressure.yaml": _ccd_per_cell("pressure_MPa", [1, 2, 3, 5]),
    "ccd_vs_temperature.yaml": _ccd_per_cell("temperature_C", [25, 40, 60, 80]),
    "stack_pressure_sweep.yaml": _stack_pressure_sweep,
    "temperature_sweep.yaml": _temperature_sweep,
    "full_cell_pressure.yaml": _full_cell_pressure,
}


def test_every_library_protocol_is_covered():
    assert {p.name for p in LIBRARY} == set(EXPECTED)
    assert set(CHECKS) <= set(EXPECTED)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
async def test_library_protocol_runs_to_its_end_with_its_report(path, tmp_path):
    plan, text = compile_file(path)
    report = await run_protocol(
        plan,
        text,
        simulate=True,
        station_config=None,
        seed=1,
        out=tmp_path / "run",
        bus=Bus(),
        clock=SimulatedClock(start_ns=0),
    )
    assert report.outcome.state.value == "done", report.outcome.reason
    assert not report.outcome.unsafe
    keys, figures = EXPECTED[path.name]
    assert keys <= set(report.result), f"missing results: {keys - set(report.result)}"
    summary = write_report(report.run_dir)
    assert figures <= {p.name for p in summary.parent.glob("*.png")}
    assert plan.name in summary.read_text()
    if path.name in CHECKS:
        journal = Journal(report.run_dir / "journal.sqlite")
        try:
            CHECKS[path.name](report, journal)
        finally:
            journal.close()


async def test_a_pressure_hold_below_the_pore_entry_pressure_never_shorts(tmp_path):
    """The same 100 h watch at 8 MPa (below LPSCl's pore-entry pressure) ends without a short."""
    text = (LIBRARY[0].parent / "pressure_hold_short_watch.yaml").read_text(encoding="utf-8")
    path = tmp_path / "hold8.yaml"
    path.write_text(text.replace("set: {pressure: 25 MPa", "set: {pressure: 8 MPa"), encoding="utf-8")
    plan, text = compile_file(path)
    report = await run_protocol(
        plan,
        text,
        simulate=True,
        station_config=None,
        seed=1,
        out=tmp_path / "run",
        bus=Bus(),
        clock=SimulatedClock(start_ns=0),
    )
    watch = report.result["short_watch"]
    assert not watch["shorted"] and watch["time_to_short_h"] is None
    assert watch["watched_h"] > 99 and watch["hold_pressure_MPa"] == pytest.approx(8, abs=0.1)
