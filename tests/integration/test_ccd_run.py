"""A whole CCD test in simulated time: protocol → engine → driver → TCP → simulator → cell model."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from labctl.cli import main
from labctl.clock import SimulatedClock
from labctl.data import Bus
from labctl.protocol import Overrides, compile_file
from labctl.session import run_protocol

ROOT = Path(__file__).resolve().parents[2]
CCD = ROOT / "protocols" / "ccd.yaml"
START_NS = 1_800_000_000 * 10**9


async def _run(tmp_path: Path, name: str, seed: int = 1, **overrides: float):
    plan, text = compile_file(CCD, Overrides(**overrides))
    return await run_protocol(
        plan,
        text,
        simulate=True,
        station_config=None,
        seed=seed,
        out=tmp_path / name,
        bus=Bus(),
        clock=SimulatedClock(start_ns=START_NS),
    )


def _rows(run_dir: Path) -> list[tuple]:
    db = sqlite3.connect(run_dir / "journal.sqlite")
    try:
        return db.execute('SELECT t_ns, step, "values" FROM samples ORDER BY seq').fetchall()
    finally:
        db.close()


async def test_ccd_run_shorts_and_reports_the_ccd(tmp_path):
    report = await _run(tmp_path, "a")
    result = json.loads((report.run_dir / "result.json").read_text())
    assert result["state"] == "done" and "short circuit" in result["reason"]
    assert result["short_at_mA_cm2"] is not None
    assert result["ccd_mA_cm2"] < 0.25  # LPSCl at 1 MPa, 25 °C (DOMAIN.md §2.1)
    assert result["ccd_mA_cm2"] == pytest.approx(result["short_at_mA_cm2"] - 0.05)
    assert result["pressure_MPa"] == 1 and result["temperature_C"] == 25
    assert result["cell"]["material"] == "Li6PS5Cl"
    assert report.simulated_s > 3 * 3600  # hours of test ...
    assert report.samples == len(_rows(report.run_dir)) > 1000
    assert (report.run_dir / "protocol.yaml").read_text() == CCD.read_text()
    settings = json.loads((report.run_dir / "settings.json").read_text())
    assert settings["seed"] == 1 and settings["simulated"] is True
    assert "MODEL 2450" in settings["instrument"]  # answered over the wire, and recorded


async def test_same_seed_same_journal_and_another_seed_differs(tmp_path):
    first = await _run(tmp_path, "a", seed=7)
    second = await _run(tmp_path, "b", seed=7)
    third = await _run(tmp_path, "c", seed=8)
    assert _rows(first.run_dir) == _rows(second.run_dir)
    assert _rows(first.run_dir) != _rows(third.run_dir)


async def test_ccd_rises_with_temperature(tmp_path):
    cold = await _run(tmp_path, "cold")
    hot = await _run(tmp_path, "hot", temperature_k=353.15)
    assert hot.result["ccd_mA_cm2"] > 0.5 > cold.result["ccd_mA_cm2"]


def test_cli_runs_the_readme_command_and_prints_a_summary(tmp_path, capsys):
    code = main(["run", str(CCD), "--sim", "--out", str(tmp_path / "cli"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "CCD" in out and "mA/cm²" in out and "simulated" in out


def test_cli_bad_protocol_is_one_line_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("labctl: 1\nname: x\nsteps:\n  - rest: {until: {tiem: 1 h}}\n")
    code = main(["run", str(bad), "--sim", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{bad}:4:" in err and "did you mean 'time'" in err and "Traceback" not in err


def test_cli_needs_to_know_where_to_run(tmp_path, capsys):
    assert main(["run", str(CCD)]) == 1
    assert "--sim" in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    out = tmp_path / "once"
    assert main(["run", str(CCD), "--sim", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", str(CCD), "--sim", "--out", str(out), "--quiet"]) == 1
    assert "already holds a run" in capsys.readouterr().err


def test_cli_unreachable_instrument_is_one_clear_line(tmp_path, capsys, unused_tcp_port):
    station = tmp_path / "bench.toml"
    station.write_text(
        f'name = "b"\n[potentiostat]\nresource = "TCPIP0::127.0.0.1::{unused_tcp_port}::SOCKET"\n'
        'timeout = "1 s"\n'
    )
    code = main(["run", str(CCD), "--station", str(station), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1
    assert "cannot connect" in err and "Traceback" not in err


def test_cli_unknown_material_lists_the_valid_ones(tmp_path, capsys):
    code = main(["run", str(CCD), "--sim", "--material", "Unobtainium", "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 1 and "Li6PS5Cl" in err and "Traceback" not in err


def test_sigterm_aborts_through_the_engine_and_still_writes_the_result(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "aborted"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labctl",
            "run",
            str(CCD),
            "--sim",
            "--temperature",
            "80 degC",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    for line in process.stderr:  # the first progress line: the runner is running
        if line.startswith("step "):
            break
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Run aborted" in stdout
    result = json.loads((out / "result.json").read_text())
    assert result["state"] == "aborted"
