"""The Mark-10 and Zaber drivers against their simulators over socket:// and a pty, on a fake clock."""

from __future__ import annotations

import pytest

from drivers.base import Actuator, ForceSensor
from drivers.errors import InstrumentRejectedError, InstrumentReplyError, InstrumentStateError, LinkError
from drivers.mark10 import Mark10Gauge
from drivers.zaber import ZaberActuator
from simulators.mark10 import ConstantForce, Mark10PtyServer, Mark10Server, Mark10Simulator
from simulators.mechanics import StackMechanics
from simulators.zaber import ZaberPtyServer, ZaberServer, ZaberSimulator


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tcp(port: int) -> str:
    return f"socket://127.0.0.1:{port}"


async def test_gauge_driver_connects_in_newtons_reads_and_zeroes():
    sim = Mark10Simulator(ConstantForce(42.0), Clock(), noise_n=0.0)
    async with Mark10Server(sim) as server:
        async with Mark10Gauge(Mark10Gauge.transport_for(tcp(server.port))) as gauge:
            assert isinstance(gauge, ForceSensor)
            assert gauge.identity == "Mark-10 M7-500 s/n 1234567 V1.00"
            assert gauge.settings.startswith("V1.00;N;CUR")
            assert await gauge.read_force() == pytest.approx(42.0)
            sim.unit = "LB"  # someone pressed UNITS at the keypad
            assert await gauge.read_force() == pytest.approx(42.0)
            await gauge.zero()
            assert await gauge.read_force() == 0.0
            server.faults.garble_next_reply = True
            with pytest.raises(InstrumentReplyError, match="garbled"):
                await gauge.read_force()
            assert await gauge.read_force() == 0.0
            sim.source.value_n = 5000.0  # type: ignore[attr-defined]
            with pytest.raises(InstrumentStateError, match="overloaded"):
                await gauge.read_force()
            with pytest.raises(InstrumentRejectedError, match=r"\*10 illegal command"):
                await gauge._query("BOGUS")


async def test_gauge_driver_over_a_pty_and_unplug_is_a_link_error():
    sim = Mark10Simulator(ConstantForce(1.0), Clock(), noise_n=0.0)
    async with Mark10PtyServer(sim) as pty:
        async with Mark10Gauge(Mark10Gauge.transport_for(pty.path)) as gauge:
            assert await gauge.read_force() == pytest.approx(1.0)
            pty.unplug()
            with pytest.raises(LinkError):
                await gauge.read_force()


async def test_gauge_driver_drop_is_a_link_error():
    sim = Mark10Simulator(ConstantForce(1.0), Clock(), noise_n=0.0)
    async with Mark10Server(sim) as server:
        async with Mark10Gauge(Mark10Gauge.transport_for(tcp(server.port))) as gauge:
            server.faults.drop_next_command = True
            with pytest.raises(LinkError):
                await gauge.read_force()


async def test_moving_the_actuator_raises_the_gauge_force_and_a_stall_is_reported():
    clock = Clock()
    rig = StackMechanics(x_contact_m=1e-3, stiffness_n_m=5e6)
    stage = ZaberSimulator(rig, clock, start_position=0, thrust_limit_n=800.0)
    gauge_sim = Mark10Simulator(rig, clock, noise_n=0.0)
    async with ZaberServer(stage) as zserver, Mark10PtyServer(gauge_sim) as gpty:
        async with (
            ZaberActuator(ZaberActuator.transport_for(tcp(zserver.port))) as actuator,
            Mark10Gauge(Mark10Gauge.transport_for(gpty.path)) as gauge,
        ):
            assert isinstance(actuator, Actuator)
            assert not actuator.homed
            with pytest.raises(InstrumentStateError, match="home"):
                await actuator.move_to(1.05e-3)
            await actuator.home()
            clock.now += 1.0
            assert not await actuator.is_moving()
            assert actuator.homed and await actuator.position() == 0.0
            await actuator.move_to(1.05e-3)  # 50 µm past contact: 250 N
            assert await actuator.is_moving()
            clock.now += 10.0
            assert not await actuator.is_moving()
            assert await actuator.position() == pytest.approx(1.05e-3)
            assert await gauge.read_force() == pytest.approx(250.0, abs=1.0)
            await actuator.move_by(200e-6)  # would be 1250 N > 800 N thrust
            clock.now += 10.0
            with pytest.raises(InstrumentStateError, match="stalled"):
                await actuator.is_moving()
            assert await gauge.read_force() == pytest.approx(800.0, abs=5.0)
            await actuator.move_by(-20e-6)
            clock.now += 1.0
            assert not await actuator.is_moving()
            assert await gauge.read_force() == pytest.approx(700.0, abs=5.0)
            with pytest.raises(InstrumentRejectedError, match="BADDATA"):
                await actuator.move_to(1.0)


async def test_actuator_over_a_pty_unplug_is_a_link_error():
    stage = ZaberSimulator(None, Clock())
    async with ZaberPtyServer(stage) as pty:
        actuator = ZaberActuator(ZaberActuator.transport_for(pty.path))
        async with actuator:
            await actuator.stop()
            pty.unplug()
            with pytest.raises(LinkError):
                await actuator.position()
