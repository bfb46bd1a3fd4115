"""`set` with a ramp rate and `set: {pressure: 0 MPa}` (release), on both simulated rigs and the heater.

Each run goes through the CLI, the real drivers on serial links (ptys, Modbus RTU) and the simulated
physics, in simulated time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.cli import main
from labctl.data import EventKind, Journal

PRESSURE = """\
labctl: 1
name: ramp-release
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
conditions: {pressure: 2 MPa, temperature: 25 degC}
safety: {voltage: {min: -0.5 V, max: 0.5 V}, pressure: {max: 30 MPa}}
record: {sample: 10 s, poll: 1 min}
steps:
  - set: {pressure: 10 MPa, rate: 2 MPa/min}
  - rest: {until: {time: 5 min}}
  - set: {pressure: 0 MPa}
  - rest: {until: {time: 5 min}}
"""

TEMPERATURE = """\
labctl: 1
name: temperature-ramp
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
conditions: {pressure: 5 MPa, temperature: 25 degC}
safety: {voltage: {min: -0.5 V, max: 0.5 V}, temperature: {max: 90 degC}}
record: {sample: 10 s, poll: 1 min}
steps:
  - set: {temperature: 45 degC, rate: 1 K/min, settle: {rate_below: 0.1 K/min, hold: 2 min}}
  - rest: {until: {time: 5 min}}
"""


def _run(tmp_path: Path, text: str, *options: str) -> tuple[dict[int, float], list]:
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(text)
    out = tmp_path / "run"
    assert main(["run", str(protocol), "--sim", "--out", str(out), "--quiet", *options]) == 0
    journal = Journal(out / "journal.sqlite")
    try:
        started = {e.step: e.t_ns for e in journal.events([EventKind.STEP_STARTED])}
        ended = {e.step: e.t_ns for e in journal.events([EventKind.STEP_ENDED])}
        samples = list(journal.samples())
    finally:
        journal.close()
    return {step: (ended[step] - started[step]) / 1e9 for step in ended}, samples


@pytest.mark.parametrize("rig", ["screw", "pneumatic"])
def test_a_pressure_ramp_takes_its_time_and_a_release_takes_the_pressure_off(tmp_path, rig):
    durations, samples = _run(tmp_path, PRESSURE, "--rig", rig)
    assert durations[0] >= 8e6 / (2e6 / 60)  # 2 → 10 MPa at 2 MPa/min: at least 4 min
    held = [s.values["pressure_pa"] for s in samples if s.step == 1]
    assert max(abs(p - 10e6) for p in held) < 0.1e6
    released = [s.values["pressure_pa"] for s in samples if s.step == 3]
    assert released and max(released) < 0.05e6


def test_a_temperature_ramp_follows_its_rate(tmp_path):
    durations, samples = _run(tmp_path, TEMPERATURE)
    assert durations[0] >= 20 * 60  # 25 → 45 °C at 1 K/min: at least 20 min
    at_45 = [s.values["temperature_k"] - 273.15 for s in samples if s.step == 1]
    assert at_45 and all(abs(t - 45) < 0.5 for t in at_45)
