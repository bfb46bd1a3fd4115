"""Exports round-trip: every journaled sample is a row, in its unit, under the documented column names."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from labctl.data import Event, EventKind, Journal, Sample
from labctl.data.export import BDF_VERSION, export_run
from labctl.errors import LabctlError, RunDirError

T0_NS = 1_800_000_000 * 10**9
S_NS = 10**9
SETTINGS = {"protocol": "synthetic", "cell": {"kind": "symmetric", "area_cm2": 0.785}, "seed": 4}


def write_settings(run_dir: Path) -> None:
    run_dir.mkdir()
    (run_dir / "settings.json").write_text(json.dumps(SETTINGS))


async def make_run(run_dir: Path, *, spectra: bool = True) -> tuple[list[Sample], list[Sample]]:
    """A rest, then two cycles of +1 mA for 100 s / −1 mA for 50 s, and one 5-point spectrum."""
    write_settings(run_dir)
    events = [Event(T0_NS, -1, EventKind.RUN_STARTED, {"protocol": "synthetic"})]
    dc: list[Sample] = []
    eis: list[Sample] = []
    t = T0_NS
    plan = [("rest", 0.0, 30.0, {})]
    for cycle in (1, 2):
        plan += [("current", 1e-3, 100.0, {"cycle": cycle}), ("current", -1e-3, 50.0, {"cycle": cycle})]
    for step, (kind, current, duration, context) in enumerate(plan):
        events.append(
            Event(t, step, EventKind.STEP_STARTED, {"kind": kind, "current_a": current, "context": context})
        )
        for k in range(1, 6):
            elapsed = duration * k / 5
            dc.append(
                Sample(
                    t + int(elapsed * S_NS),
                    step,
                    {
                        "voltage_v": 0.01 * (1 if current >= 0 else -1),
                        "current_a": current,
                        "charge_c": current * elapsed,
                        "pressure_pa": 1e6,
                        "temperature_k": 298.15,
                    },
                )
            )
        t += int(duration * S_NS)
        events.append(
            Event(t, step, EventKind.STEP_ENDED, {"reason": "time", "charge_c": current * duration})
        )
    if spectra:
        step = len(plan)
        events.append(Event(t, step, EventKind.STEP_STARTED, {"kind": "eis", "context": {}}))
        for k, f in enumerate([1e5, 1e4, 1e3, 1e2, 1e1]):
            eis.append(
                Sample(
                    t + k * S_NS,
                    step,
                    {"frequency_hz": f, "z_real_ohm": 50.0 + k, "z_imag_ohm": -10.0 * k - 1, "spectrum": 1},
                    kind="eis",
                )
            )
    journal = Journal(run_dir / "journal.sqlite")
    await journal.append(dc + eis, events)
    journal.close()
    return dc, eis


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


async def test_csv_has_one_row_per_sample_in_si_units(tmp_path):
    dc, eis = await make_run(tmp_path / "run")
    files = export_run(tmp_path / "run", "csv", None)
    assert files == [
        tmp_path / "run" / "export" / "timeseries.csv",
        tmp_path / "run" / "export" / "spectra.csv",
    ]
    columns, rows = read_csv(files[0])
    assert len(rows) == len(dc) == 25
    assert columns[:6] == ["time_s", "unix_time_s", "step", "step_count", "step_kind", "cycle"]
    assert {"voltage_v", "current_a", "charge_c", "pressure_pa", "temperature_k"} <= set(columns)
    assert [float(r["time_s"]) for r in rows[:2]] == [6.0, 12.0]  # seconds since run_started
    assert float(rows[0]["unix_time_s"]) == pytest.approx(T0_NS / 1e9 + 6.0)
    assert [float(r["current_a"]) for r in rows] == [s.values["current_a"] for s in dc]  # full precision
    assert [r["cycle"] for r in rows[::5]] == ["0", "1", "1", "2", "2"]
    spectrum_columns, spectrum_rows = read_csv(files[1])
    assert len(spectrum_rows) == len(eis) == 5
    assert {"frequency_hz", "z_real_ohm", "z_imag_ohm", "z_mod_ohm", "z_phase_deg", "spectrum"} <= set(
        spectrum_columns
    )
    first = spectrum_rows[1]
    assert float(first["z_mod_ohm"]) == pytest.approx(math.hypot(51.0, -11.0))
    assert float(first["z_phase_deg"]) < 0  # capacitive: the math sign is kept


async def test_parquet_carries_units_and_settings(tmp_path):
    dc, eis = await make_run(tmp_path / "run")
    files = export_run(tmp_path / "run", "parquet", tmp_path / "out")
    assert [f.name for f in files] == ["timeseries.parquet", "spectra.parquet"]
    table = pq.read_table(files[0])
    assert table.num_rows == len(dc)
    assert table.schema.field("voltage_v").metadata == {b"unit": b"V"}
    assert table.schema.field("pressure_pa").metadata == {b"unit": b"Pa"}
    assert table.schema.field("time_s").metadata == {b"unit": b"s"}
    assert json.loads(table.schema.metadata[b"labctl.settings"]) == SETTINGS
    assert table.column("charge_c").to_pylist() == [s.values["charge_c"] for s in dc]
    spectra = pq.read_table(files[1])
    assert spectra.num_rows == len(eis)
    assert spectra.schema.field("z_imag_ohm").metadata == {b"unit": b"\xce\xa9"}  # Ω


async def test_bdf_uses_the_battery_data_format_labels_and_definitions(tmp_path):
    dc, eis = await make_run(tmp_path / "run")
    files = export_run(tmp_path / "run", "bdf", tmp_path / "bdf")
    assert [f.name for f in files] == ["timeseries.bdf.csv", "spectra.bdf.csv"]
    assert BDF_VERSION == "1.2.0"
    columns, rows = read_csv(files[0])
    assert len(rows) == len(dc)
    assert columns[:4] == [
        "Test Time / s",
        "Unix Time / s",
        "Voltage / V",
        "Current / A",
    ]  # BDF's required three
    assert {
        "Cycle Count / 1",
        "Step Count / 1",
        "Step ID",
        "Step Index / 1",
        "Step Time / s",
        "Step Type",
        "Charging Capacity / Ah",
        "Discharging Capacity / Ah",
        "Net Capacity / Ah",
        "Cumulative Capacity / Ah",
        "Step Cumulative Capacity / Ah",
        "Applied Pressure / Pa",
        "Temperature T1 / degC",
        "Record Index / 1",
    } <= set(columns)
    last = rows[-1]
    # 2 × 100 s at +1 mA charged, 2 × 50 s at −1 mA discharged; BDF capacities never reset
    assert float(last["Charging Capacity / Ah"]) == pytest.approx(0.2 / 3600)
    assert float(last["Discharging Capacity / Ah"]) == pytest.approx(0.1 / 3600)
    assert float(last["Net Capacity / Ah"]) == pytest.approx(0.1 / 3600)
    assert float(last["Cumulative Capacity / Ah"]) == pytest.approx(0.3 / 3600)
    assert float(last["Step Cumulative Capacity / Ah"]) == pytest.approx(0.05 / 3600)  # unsigned, per step
    assert [r["Step Type"] for r in rows[::5]] == ["REST", "CC_CHG", "CC_DCH", "CC_CHG", "CC_DCH"]
    assert [int(r["Step Count / 1"]) for r in rows[::5]] == [1, 2, 3, 4, 5]
    assert [int(r["Step Index / 1"]) for r in rows[:6]] == [1, 2, 3, 4, 5, 1]  # resets with each step
    cycles = [int(r["Cycle Count / 1"]) for r in rows]
    assert cycles == sorted(cycles)  # monotonically non-decreasing, as BDF requires
    assert float(rows[6]["Step Time / s"]) == pytest.approx(40.0)
    assert float(rows[0]["Temperature T1 / degC"]) == pytest.approx(25.0)
    assert float(rows[0]["Applied Pressure / Pa"]) == 1e6
    assert [int(r["Record Index / 1"]) for r in rows] == list(range(1, len(dc) + 1))
    spectrum_columns, spectrum_rows = read_csv(files[1])
    assert len(spectrum_rows) == len(eis)
    assert {
        "Frequency / Hz",
        "Real Impedance / ohm",
        "Imaginary Impedance / ohm",
        "Absolute Impedance / ohm",
        "Phase / deg",
    } <= set(spectrum_columns)
    assert float(spectrum_rows[2]["Imaginary Impedance / ohm"]) == -21.0  # as reported: capacitive negative


async def test_a_run_without_spectra_exports_only_the_time_series(tmp_path):
    await make_run(tmp_path / "run", spectra=False)
    for fmt in ("csv", "parquet", "bdf"):
        files = export_run(tmp_path / "run", fmt, tmp_path / fmt)
        assert len(files) == 1 and files[0].name.startswith("timeseries")


async def test_an_empty_journal_exports_headers_only(tmp_path):
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    Journal(run_dir / "journal.sqlite").close()
    (csv_file,) = export_run(run_dir, "csv", None)
    columns, rows = read_csv(csv_file)
    assert rows == [] and columns[0] == "time_s"
    (parquet_file,) = export_run(run_dir, "parquet", None)
    assert pq.read_table(parquet_file).num_rows == 0


def test_a_directory_that_is_not_a_run_is_refused_clearly(tmp_path):
    with pytest.raises(RunDirError, match="not a run directory") as caught:
        export_run(tmp_path, "csv", None)
    assert isinstance(caught.value, LabctlError)
    assert not (tmp_path / "journal.sqlite").exists()  # and no empty journal was created in passing


async def test_an_unknown_format_is_refused(tmp_path):
    await make_run(tmp_path / "run")
    with pytest.raises(RunDirError, match="csv, parquet or bdf"):
        export_run(tmp_path / "run", "xlsx", None)  # type: ignore[arg-type]
