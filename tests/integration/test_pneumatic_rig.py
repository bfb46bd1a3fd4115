"""The pneumatic rig end to end: `labctl run --sim --rig pneumatic` holds each stack pressure.

The Alicat simulator (a cylinder coupled to the cell) sits on a pty and the real driver talks to it;
the run goes through the CLI, the session, the runner and `PneumaticPressureLoop` in simulated time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.errors import InstrumentRejectedError
from labctl.cli import main
from labctl.clock import SimulatedClock
from labctl.data import EventKind, Journal
from labctl.engine.pneumatic import PneumaticLoopSettings, PneumaticPressureLoop
from labctl.engine.pressure import PressureFault, StackPressureLoop

PROTOCOL = """\
labctl: 1
name: pneumatic-steps
cell: {kind: symmetric, material: Li6PS5Cl, area: 0.785 cm^2, thickness: 0.5 mm}
conditions: {pressure: 1 MPa, temperature: 25 degC}
safety:
  voltage: {min: -0.5 V, max: 0.5 V}
  pressure: {max: 30 MPa}
record: {sample: 10 s, poll: 1 min}
steps:
  - set: {pressure: 1 MPa}
  - rest: {until: {time: 5 min}}
  - set: {pressure: 10 MPa}
  - rest: {until: {time: 5 min}}
  - set: {pressure: 2 MPa}
  - rest: {until: {time: 5 min}}
"""

TARGETS_PA = {1: 1e6, 3: 10e6, 5: 2e6}
"""Rest step index → the stack pressure set just before it."""


def test_sim_pneumatic_rig_holds_each_set_point(tmp_path: Path):
    protocol = tmp_path / "pneumatic.yaml"
    protocol.write_text(PROTOCOL)
    out = tmp_path / "run"
    assert main(["run", str(protocol), "--sim", "--rig", "pneumatic", "--out", str(out), "--quiet"]) == 0
    journal = Journal(out / "journal.sqlite")
    try:
        ended = [e.data["reason"] for e in journal.events([EventKind.STEP_ENDED])]
        samples = list(journal.samples())
    finally:
        journal.close()
    assert sum("settled at" in reason for reason in ended) == 3
    for step, target in TARGETS_PA.items():
        measured = [s.values["pressure_pa"] for s in samples if s.step == step]
        assert len(measured) >= 20, f"step {step}: {len(measured)} samples"
        assert max(abs(p - target) for p in measured) < 0.1e6, (
            f"step {step}: {min(measured)}..{max(measured)}"
        )


def test_rig_flag_needs_sim(tmp_path: Path):
    protocol = tmp_path / "pneumatic.yaml"
    protocol.write_text(PROTOCOL)
    station = tmp_path / "bench.toml"
    station.write_text('[potentiostat]\nresource = "TCPIP0::127.0.0.1::1::SOCKET"\n')
    assert main(["run", str(protocol), "--station", str(station), "--rig", "pneumatic"]) == 1


class FakeController:
    """A gas pressure controller whose gas pressure follows the set-point at once (or not at all)."""

    identity = "fake"

    def __init__(self, *, stuck: bool = False, full_scale_pa: float = 1e6) -> None:
        self.gas_pa = 0.0
        self.stuck = stuck
        self.full_scale_pa = full_scale_pa
        self.held = False

    async def __aenter__(self) -> FakeController:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def read_pressure(self) -> float:
        return self.gas_pa

    async def set_pressure(self, pressure_pa: float) -> None:
        if pressure_pa > self.full_scale_pa:
            raise InstrumentRejectedError("command rejected ('?')")
        self.held = False
        if not self.stuck:
            self.gas_pa = pressure_pa

    async def hold(self) -> None:
        self.held = True

    async def release(self) -> None:
        self.held = False


class FakeGauge:
    def __init__(self, force_n: float) -> None:
        self.force_n = force_n

    async def __aenter__(self) -> FakeGauge:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def read_force(self) -> float:
        return self.force_n

    async def zero(self) -> None:
        return None


def _loop(controller: FakeController, **options: object) -> PneumaticPressureLoop:
    return PneumaticPressureLoop(controller, 50e-4, 1e-4, SimulatedClock(start_ns=0), **options)  # type: ignore[arg-type]


async def test_loop_sends_the_scaled_gas_set_point_and_settles():
    controller = FakeController()
    loop: StackPressureLoop = _loop(controller)
    pressure = await loop.settle(10e6, rate_below=0.01e6 / 60, hold_s=60, timeout_s=600)
    assert controller.gas_pa == pytest.approx(10e6 * 1e-4 / 50e-4)  # 200 kPa of gas
    assert pressure == pytest.approx(10e6)
    await loop.hold()
    assert controller.held and loop.target_pa is None


async def test_loop_faults_on_a_persistent_deviation_and_holds():
    controller = FakeController()
    loop = _loop(controller, settings=PneumaticLoopSettings(deviation_s=30.0))
    await loop.settle(5e6, rate_below=0.01e6 / 60, hold_s=60, timeout_s=600)
    controller.gas_pa *= 0.8  # a leak: 4 MPa on the stack
    with pytest.raises(PressureFault, match="off the 5 MPa target"):
        for _ in range(40):
            await loop.step()
            await loop.clock.sleep(1.0)
    assert controller.held and loop.fault is not None
    with pytest.raises(PressureFault):
        await loop.step()


async def test_loop_trips_on_the_gauge_force_limit():
    controller = FakeController()
    gauge = FakeGauge(force_n=300.0)  # the gauge, not the gas, measures the stack: 3 MPa on 1 cm²
    loop = _loop(controller, settings=PneumaticLoopSettings(max_force_n=250.0), gauge=gauge)
    with pytest.raises(PressureFault, match="300 N above the 250 N limit"):
        await loop.read_pressure()
    assert controller.held


async def test_loop_refuses_a_set_point_beyond_the_controller():
    loop = _loop(FakeController(full_scale_pa=100e3))
    with pytest.raises(PressureFault, match="larger piston"):
        await loop.settle(10e6, rate_below=0.01e6 / 60, hold_s=60, timeout_s=600)
    assert loop.target_pa is None
