"""The stack-pressure loop holds a set-point on the screw rig, over real serial links, in simulated time."""

from __future__ import annotations

import contextlib

import pytest

from drivers.mark10 import Mark10Gauge
from drivers.zaber import ZaberActuator
from labctl.clock import SimulatedClock
from labctl.engine.pressure import PressureFault, PressureLoopSettings, StackPressureController
from simulators.mark10 import Mark10PtyServer, Mark10Simulator
from simulators.mechanics import StackMechanics
from simulators.zaber import ZaberPtyServer, ZaberSimulator

AREA = 0.785e-4


@contextlib.asynccontextmanager
async def rig(clock: SimulatedClock, **mechanics):
    stack = StackMechanics(area_m2=AREA, **mechanics)
    gauge_sim = Mark10Simulator(stack, clock.monotonic, seed=3)
    zaber_sim = ZaberSimulator(stack, clock.monotonic)
    async with Mark10PtyServer(gauge_sim) as gauge_port, ZaberPtyServer(zaber_sim) as zaber_port:
        async with (
            Mark10Gauge(Mark10Gauge.transport_for(gauge_port.path)) as gauge,
            ZaberActuator(ZaberActuator.transport_for(zaber_port.path)) as actuator,
        ):
            await actuator.home()
            while await actuator.is_moving():
                await clock.sleep(0.5)
            await actuator.move_to(0.95e-3)  # just short of contact (1 mm)
            while await actuator.is_moving():
                await clock.sleep(0.5)
            yield stack, StackPressureController(gauge, actuator, AREA, clock)


async def test_settles_at_5_mpa_and_holds_within_0_1_mpa_against_creep():
    clock = SimulatedClock(start_ns=0)
    async with rig(clock) as (stack, loop):
        pressure = await loop.settle(5e6, rate_below=0.01e6 / 60, hold_s=60, timeout_s=1800)
        assert pressure == pytest.approx(5e6, abs=0.1e6)
        settled_at = clock.monotonic()
        worst = 0.0
        while clock.monotonic() < settled_at + 3 * 3600:  # three hours of Li creep at a held pressure
            measured = await loop.step()
            worst = max(worst, abs(measured - 5e6))
            await clock.sleep(loop.settings.period_s)
        assert worst < 0.1e6
        assert stack.pressure_pa() == pytest.approx(5e6, abs=0.1e6)


async def test_a_force_limit_stops_the_screw_and_says_why():
    clock = SimulatedClock(start_ns=0)
    async with rig(clock) as (_, loop):
        loop.settings = PressureLoopSettings(max_force_n=200.0)  # 2.5 MPa on 0.785 cm²
        with pytest.raises(PressureFault, match=r"force .* above the 200 N limit"):
            await loop.settle(5e6, rate_below=1e3, hold_s=30, timeout_s=1800)
        assert not await loop.actuator.is_moving()
