"""Checkpoints and `labctl resume`'s refusals: a finished run, a directory that is not a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.cli import main
from labctl.engine.checkpoint import Checkpoint, StepCheckpoint, pack_engine, unpack_engine
from labctl.errors import RunDirError
from labctl.session import read_crashed_run

SHORT = """
labctl: 1
name: short
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
conditions: {pressure: 5 MPa, temperature: 25 degC}
safety: {voltage: {min: -1 V, max: 1 V}}
record: {sample: 1 s, every: 10 s, poll: 10 s}
steps:
  - rest: {until: {time: 1 min}}
  - current: {density: 0.1 mA/cm^2, until: {time: 5 min}}
results: [polarization]
"""


def test_a_checkpoint_reads_back_as_written() -> None:
    step = StepCheckpoint(120.0, 0.01, "cv", 0.4, 1e-4, 3.0, 0.01, 1e-4, [(1.0, 0.01)], {0: 2.0}, ["short"])
    checkpoint = Checkpoint(7, 3600.0, 10**18, 3, True, seed=1, progress=step, engine=pack_engine([1, 2]))
    again = Checkpoint.from_json(checkpoint.to_json())
    assert again == checkpoint
    assert unpack_engine(again.engine) == [1, 2]


def test_resume_refuses_a_finished_run(tmp_path: Path, capsys) -> None:
    protocol = tmp_path / "short.yaml"
    protocol.write_text(SHORT)
    run_dir = tmp_path / "run"
    assert main(["run", str(protocol), "--sim", "--out", str(run_dir), "--quiet"]) == 0
    with pytest.raises(RunDirError, match="finished"):
        read_crashed_run(run_dir)
    assert main(["resume", str(run_dir), "--sim"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    (run_dir / "result.json").unlink()  # ended, but crashed before its result was written
    with pytest.raises(RunDirError, match="ended"):
        read_crashed_run(run_dir)


def test_resume_refuses_a_directory_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["resume", str(tmp_path), "--sim"]) == 1
    assert "not a run directory" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "missing"), "--sim"]) == 1
