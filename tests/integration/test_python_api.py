"""The Python API drives the same engine, wire and journal as protocol files."""

from __future__ import annotations

import json

import pytest

from labctl.api import Lab
from labctl.clock import SimulatedClock
from labctl.data import EventKind, Journal
from labctl.errors import ProtocolError


async def test_a_ccd_ramp_written_in_python_finds_the_same_short(tmp_path):
    lab = Lab(
        "ccd-python",
        out=tmp_path / "run",
        clock=SimulatedClock(start_ns=0),
        watch={"short": {"type": "short_circuit"}},
        record={"every": "10 s", "poll": "10 s"},
        results=["ccd"],
    )
    shorted_at = None
    async with lab:
        await lab.rest(until={"time": "1 h"})
        for level in range(1, 21):
            density = f"{0.05 * level:.2f} mA/cm^2"
            strip = await lab.current(density=density, until={"capacity": "0.1 mAh/cm^2"})
            if "short" in strip.fired:
                shorted_at = density
                break
            plate = await lab.current(density=f"-{density}", until={"capacity": "0.1 mAh/cm^2"})
            if "short" in plate.fired:
                shorted_at = density
                break
            assert plate.charge_c == pytest.approx(-0.1 * 36_000 * 0.785e-4, rel=1e-6)
    assert shorted_at == "0.20 mA/cm^2"  # as protocols/ccd.yaml finds with the same seed
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["ccd_mA_cm2"] == 0.15 and result["state"] == "done"
    journal = Journal(tmp_path / "run" / "journal.sqlite")
    try:
        kinds = [e.kind for e in journal.events()]
        assert kinds[0] is EventKind.RUN_STARTED and kinds[-1] is EventKind.RUN_ENDED
        assert journal.count_samples() > 500
    finally:
        journal.close()


async def test_api_steps_are_validated_like_protocol_files(tmp_path):
    async with Lab("bad", out=tmp_path / "run", clock=SimulatedClock(start_ns=0)) as lab:
        with pytest.raises(ProtocolError, match=r"'5 mA' is not a current density"):
            await lab.current(density="5 mA", until={"time": "1 h"})
        with pytest.raises(ProtocolError, match="did you mean 'until'"):
            await lab.rest(untill={"time": "1 h"})
        result = await lab.rest(until={"time": "10 min"})
        assert result.duration_s == pytest.approx(600)


async def test_an_exception_in_user_code_still_leaves_the_cell_safe_and_the_run_recorded(tmp_path):
    lab = Lab("boom", out=tmp_path / "run", clock=SimulatedClock(start_ns=0))
    with pytest.raises(RuntimeError, match="analysis crashed"):
        async with lab:
            await lab.current(density="0.1 mA/cm^2", until={"time": "10 min"})
            raise RuntimeError("analysis crashed")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["state"] == "failed" and "analysis crashed" in result["reason"]
