"""The run report: on a real simulated CCD run, an aborted one, and synthetic cycling/EIS journals."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from labctl.analysis.eis import circuit_impedance
from labctl.analysis.report import write_report
from labctl.clock import SimulatedClock
from labctl.data import Bus, Event, EventKind, Journal, Sample, Status
from labctl.errors import LabctlError, RunDirError
from labctl.protocol import Overrides, compile_file
from labctl.session import run_protocol

ROOT = Path(__file__).resolve().parents[3]
CCD = ROOT / "protocols" / "ccd.yaml"
START_NS = 1_800_000_000 * 10**9
S_NS = 10**9


async def simulate_ccd(out: Path, *, abort_at_step: int | None = None):
    """protocols/ccd.yaml in simulated time at 15 °C (it shorts sooner than at 25 °C: a quicker test).

    Optionally the operator aborts it when it reaches a step.
    """
    plan, text = compile_file(CCD, Overrides(temperature_k=288.15))
    bus = Bus()
    runner = []
    if abort_at_step is not None:

        def abort_when_due(record: object) -> None:
            if isinstance(record, Status) and record.step >= abort_at_step and runner:
                runner[0].abort("aborted by the operator")

        bus.subscribe(abort_when_due)
    return await run_protocol(
        plan,
        text,
        simulate=True,
        station_config=None,
        seed=1,
        out=out,
        bus=bus,
        clock=SimulatedClock(start_ns=START_NS),
        on_runner=runner.append,
    )


def run_in_thread(coro):
    """Run a whole simulated run on its own loop, so module fixtures can share it between tests."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def ccd_run(tmp_path_factory) -> Path:
    return run_in_thread(simulate_ccd(tmp_path_factory.mktemp("ccd") / "run")).run_dir


def figures_in(summary: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", summary)


def assert_valid_pngs(report_dir: Path, names: list[str]) -> None:
    for name in names:
        image = imread(report_dir / name)  # matplotlib can read it back: a valid PNG
        height, width = image.shape[:2]
        assert 400 <= height <= 1000 and 800 <= width <= 1100, (name, image.shape)  # readable at 100 dpi
        assert image[..., :3].std() > 0.05, name  # not a blank canvas


def test_report_of_a_real_ccd_run_has_conditions_numbers_events_and_figures(ccd_run):
    summary_path = write_report(ccd_run)
    assert summary_path == ccd_run / "report" / "summary.md"
    summary = summary_path.read_text(encoding="utf-8")
    result = json.loads((ccd_run / "result.json").read_text())
    settings = json.loads((ccd_run / "settings.json").read_text())

    # every test condition, next to the numbers
    for text in ("ccd-constant-capacity", "Li6PS5Cl", "0.785 cm²", "0.5 mm", "1 MPa", "15 °C", "-1 V to 1 V"):
        assert text in summary, text
    assert f"| Seed | {settings['seed']} (simulated) |" in summary
    assert "MODEL 2450" in summary
    # the key results, as result.json has them
    assert f"| Critical current density (CCD) | {result['ccd_mA_cm2']:g} mA/cm² |" in summary
    assert f"at {result['short_at_mA_cm2']:g} mA/cm² after {result['short_time_s'] / 3600:.4g} h" in summary
    critical = result["critical_stripping_current_mA_cm2"]
    assert f"| Critical stripping current | {critical:g} mA/cm² |" in summary
    assert "Hours of cycling to failure" in summary
    # the event log shows the short, and a Markdown table survives "|V/I|" in its messages
    assert "detector (short_circuit)" in summary and "\\|V/I\\|" in summary
    assert "**Outcome: done**" in summary

    figures = figures_in(summary)
    assert figures == ["voltage_current.png", "polarization.png"]  # no spectra: no Nyquist
    assert_valid_pngs(ccd_run / "report", figures)
    assert write_report(ccd_run).read_text(encoding="utf-8") == summary  # can be written again


def test_report_of_an_aborted_run(tmp_path):
    report = run_in_thread(simulate_ccd(tmp_path / "aborted", abort_at_step=2))
    assert report.result["state"] == "aborted"
    summary = write_report(report.run_dir).read_text(encoding="utf-8")
    assert "**Outcome: aborted** — aborted by the operator" in summary
    assert "| Short circuit | none |" in summary and "no failure" in summary
    # where the abort lands within a step depends on I/O timing, so either form may be right
    ccd = report.result["ccd_mA_cm2"]
    expected = (
        "not determined (the run ended" if ccd is None else f"≥ {ccd:g} mA/cm² (the run ended without a short"
    )
    assert expected in summary
    assert_valid_pngs(report.run_dir / "report", figures_in(summary))


def test_a_directory_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(RunDirError, match="not a run directory") as caught:
        write_report(tmp_path)
    assert isinstance(caught.value, LabctlError)
    assert not (tmp_path / "journal.sqlite").exists() and not (tmp_path / "report").exists()
    (tmp_path / "journal.sqlite").write_bytes(b"this is not sqlite at all, just some bytes " * 20)
    with pytest.raises(RunDirError, match="cannot be read"):
        write_report(tmp_path)


# --- synthetic full-cell cycling with impedance ---------------------------------------------------


def write_json(run_dir: Path, settings: dict) -> None:
    run_dir.mkdir()
    (run_dir / "settings.json").write_text(json.dumps(settings))


async def full_cell_journal(run_dir: Path, *, active_mass_mg: float | None, finished: bool) -> None:
    """Five cycles at 0.2 mA (1.5 mAh fading 2 %/cycle, CE 99 %) and a spectrum after cycles 1, 3, 5."""
    cell = {
        "kind": "full",
        "material": "Li6PS5Cl",
        "cathode": "NMC811",
        "anode": "Li-In",
        "area_cm2": 0.785,
        "thickness_mm": 0.6,
    }
    if active_mass_mg is not None:
        cell["active_mass_mg"] = active_mass_mg
    settings = {
        "protocol": "full-cell-cycling",
        "source": "synthetic.yaml",
        "simulated": True,
        "seed": 9,
        "cell": cell,
        "pressure_MPa": 5.0,
        "temperature_C": 60.0,
        "instrument": "synthetic",
        "safety": {"voltage_V": [1.9, 3.7]},
    }
    write_json(run_dir, settings)
    t, step = START_NS, 0
    events = [Event(t, -1, EventKind.RUN_STARTED, {"protocol": "full-cell-cycling"})]
    samples: list[Sample] = []
    for n in range(1, 6):
        discharge_c = 1.5 * 3.6 * 0.98 ** (n - 1)
        for sign, charge_c, v0, v1 in ((1, discharge_c / 0.99, 3.0, 3.7), (-1, discharge_c, 3.6, 2.9)):
            duration = charge_c / 0.2e-3
            events.append(
                Event(
                    t,
                    step,
                    EventKind.STEP_STARTED,
                    {"kind": "current", "current_a": sign * 0.2e-3, "context": {"cycle": n}},
                )
            )
            for k in range(1, 11):
                samples.append(
                    Sample(
                        t + int(duration * k / 10 * S_NS),
                        step,
                        {
                            "voltage_v": v0 + (v1 - v0) * k / 10,
                            "current_a": sign * 0.2e-3,
                            "charge_c": sign * charge_c * k / 10,
                        },
                    )
                )
            t += int(duration * S_NS)
            events.append(
                Event(t, step, EventKind.STEP_ENDED, {"reason": "voltage end", "charge_c": sign * charge_c})
            )
            step += 1
        if n % 2:
            f = np.logspace(6, -1, 50)
            z = circuit_impedance(f, R_bulk=40.0, R_int=100.0 * n, Q_int=5e-6, alpha_int=0.85)
            noise = np.random.default_rng(n).standard_normal((2, len(f)))
            z = z + 0.005 * np.abs(z) * (noise[0] + 1j * noise[1])  # 0.5 % of |Z|, as a good instrument
            events.append(Event(t, step, EventKind.STEP_STARTED, {"kind": "eis", "context": {"cycle": n}}))
            for i, (fi, zi) in enumerate(zip(f, z, strict=True)):
                samples.append(
                    Sample(
                        t + i * S_NS,
                        step,
                        {
                            "frequency_hz": fi,
                            "z_real_ohm": zi.real,
                            "z_imag_ohm": zi.imag,
                            "spectrum": n,
                            "pressure_pa": 5e6,
                            "temperature_k": 333.15,
                        },
                        kind="eis",
                    )
                )
            t += 60 * S_NS
            step += 1
    events.append(Event(t, step, EventKind.NOTE, {"message": "fixture re-tightened"}))
    if finished:
        events.append(Event(t, step, EventKind.RUN_ENDED, {"state": "done", "reason": "all steps done"}))
    journal = Journal(run_dir / "journal.sqlite")
    await journal.append(samples, events)
    journal.close()


async def test_report_of_full_cell_cycling_with_impedance(tmp_path):
    await full_cell_journal(tmp_path / "full", active_mass_mg=10.0, finished=True)
    summary = write_report(tmp_path / "full").read_text(encoding="utf-8")
    for text in ("NMC811", "Li-In", "10 mg", "5 MPa", "60 °C", "1.9 V to 3.7 V"):
        assert text in summary, text
    assert "| First discharge capacity (cycle 1) | 1.5 mAh, 1.911 mAh/cm², 150 mAh/g |" in summary
    assert f"| Retention at cycle 5 | {100 * 0.98**4:.1f} % of cycle 1 |" in summary
    assert "first 99.00 %, last 99.00 %" in summary
    # area-specific R with ±: spectrum 1 has R_int = 100 Ω → 78.5 Ω·cm², spectrum 5 has 500 Ω → 392.5 Ω·cm²
    match = re.search(r"\| R_int \(first spectrum, #1\) \| ([\d.]+) ± ([\d.]+) Ω·cm² \|", summary)
    assert match and float(match[1]) == pytest.approx(78.5, rel=0.01) and 0 < float(match[2]) < 1
    match = re.search(r"\| R_int \(last spectrum, #5\) \| ([\d.]+) ± ([\d.]+) Ω·cm² \|", summary)
    assert match and float(match[1]) == pytest.approx(392.5, rel=0.01)
    assert "fixture re-tightened" in summary
    figures = figures_in(summary)
    assert figures == [
        "voltage_current.png",
        "capacity.png",
        "nyquist.png",
        "bode.png",
        "impedance_trend.png",
    ]
    assert_valid_pngs(tmp_path / "full" / "report", figures)


async def test_report_of_an_interrupted_run_without_mass_says_what_is_missing(tmp_path):
    await full_cell_journal(tmp_path / "cut", active_mass_mg=None, finished=False)  # no result.json either
    summary = write_report(tmp_path / "cut").read_text(encoding="utf-8")
    assert "**Outcome: interrupted**" in summary
    assert "not given (mAh/g unavailable)" in summary
    assert "mAh/g unavailable (no active mass)" in summary
    assert "| Q_dis / mAh g⁻¹ |" in summary  # the column is there, with dashes
