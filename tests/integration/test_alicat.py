"""Alicat simulator and driver together over a real pty and TCP, on a controllable clock."""

from __future__ import annotations

import math

import pytest

from drivers.alicat import AlicatPressureController, parse_frame
from drivers.errors import InstrumentRejectedError, InstrumentReplyError, InstrumentTimeout
from drivers.transports.serial import SerialTransport
from simulators.alicat import AlicatPtyServer, AlicatServer, AlicatSimulator, PneumaticCylinder
from simulators.tcp import Faults

PSI = 6894.757293168


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Cell:
    pressure_pa = 0.0


def test_frame_layout_and_commands_without_a_link():
    clock = Clock()
    sim = AlicatSimulator(clock)
    assert sim.handle_bytes(b"A\r") == b"A +000.00 +000.00\r"
    assert sim.handle_bytes(b"AS15\r") == b"A +000.00 +015.00\r"
    assert sim.handle_bytes(b"AHP\r").endswith(b"HLD\r")
    assert sim.handle_bytes(b"AC\r") == b"A +000.00 +015.00\r"
    assert sim.handle_bytes(b"AXYZ\r") == b"?\r"
    assert sim.handle_bytes(b"B\r") == b""  # another unit's command: silence
    assert sim.handle_bytes(b"AVE\r").startswith(b"A ")
    assert sim.handle_bytes(b"A??D*\r").count(b"\r") == 3


def test_lag_and_rate_limit_are_exact():
    cyl = PneumaticCylinder(tau_s=2.0, max_rate=10.0)
    cyl.setpoint = 50.0
    cyl.advance(3.0)  # linear until error = 20 psi: 30 psi in 3 s
    assert cyl.pressure == pytest.approx(30.0)
    cyl.advance(2.0)
    assert cyl.pressure == pytest.approx(50.0 - 20.0 * math.exp(-1.0))


def test_overpressure_and_force_drive_the_cell():
    clock = Clock()
    cell = Cell()
    sim = AlicatSimulator(clock, cell=cell, cell_area_m2=1e-4)
    sim.cylinder.pressure = 120.0
    assert sim.handle_bytes(b"A\r").endswith(b"OVR\r")
    assert sim.force_n() == pytest.approx(120.0 * PSI * 1e-3)
    assert cell.pressure_pa == pytest.approx(120.0 * PSI * 1e-3 / 1e-4)


def test_streaming_loses_slowly_typed_commands():
    clock = Clock()
    sim = AlicatSimulator(clock)
    assert sim.handle_bytes(b"A@=@\r") == b""
    clock.t += 0.1
    assert sim.poll().count(b"@ ") == 2
    sim.handle_bytes(b"@S1")  # half a command...
    clock.t += 0.05
    sim.poll()  # ...a streamed frame goes out and the half command is lost
    assert sim.handle_bytes(b"0\r") == b""  # the tail alone is not a command for @
    assert sim.commands_lost == 1


async def test_driver_over_pty_forces_polling_and_reaches_setpoint():
    clock = Clock()
    sim = AlicatSimulator(clock)
    sim.handle_bytes(b"A@=@\r")  # left streaming by a previous program
    async with AlicatPtyServer(sim) as pty:
        clock.t += 1.0  # 20 stream frames pile up on the line
        transport = SerialTransport(pty.path, baudrate=19200, eol=b"\r", timeout_s=1.0)
        async with AlicatPressureController(transport, piston_area_m2=1e-3) as pc:
            assert not sim.streaming
            assert pc.identity.startswith("Alicat A")
            await pc.set_pressure(50.0 * PSI)
            clock.t += 3.0
            assert await pc.read_pressure() == pytest.approx(30.0 * PSI, rel=1e-3)
            clock.t += 60.0
            assert await pc.read_pressure() == pytest.approx(50.0 * PSI, rel=1e-3)
            assert await pc.read_force() == pytest.approx(50.0 * PSI * 1e-3, rel=1e-3)
            await pc.hold()
            await pc.set_pressure(10.0 * PSI)  # releases the hold
            assert not sim.cylinder.held
            await pc.hold()
            clock.t += 60.0
            assert await pc.read_pressure() == pytest.approx(sim.cylinder.pressure * PSI, rel=1e-3)
        assert sim.cylinder.held  # closing leaves the valve held


async def test_driver_over_tcp_in_bar_and_errors():
    clock = Clock()
    faults = Faults()
    sim = AlicatSimulator(clock, unit="bar", unit_id="C")
    async with AlicatServer(sim, faults=faults) as server:
        transport = SerialTransport(f"socket://127.0.0.1:{server.port}", eol=b"\r", timeout_s=1.0)
        async with AlicatPressureController(transport, unit="C", pressure_unit="bar", timeout_s=0.2) as pc:
            await pc.set_pressure(2.0e5)
            clock.t += 100.0
            assert await pc.read_pressure() == pytest.approx(2.0e5, rel=1e-3)
            with pytest.raises(InstrumentRejectedError):
                await pc.set_pressure(500.0e5)  # beyond the 100 bar full scale
            faults.garble_next_reply = True
            with pytest.raises(InstrumentReplyError):
                await pc.read_pressure()
            sim.unit_id = "D"  # the device stops answering to C
            for _ in range(2):
                with pytest.raises(InstrumentTimeout):
                    await pc.read_pressure()
            assert pc.consecutive_timeouts == 2
            sim.unit_id = "C"
            transport.discard_input()
            await pc.read_pressure()
            assert pc.consecutive_timeouts == 0


def test_parse_frame_rejects_garbage():
    with pytest.raises(InstrumentReplyError):
        parse_frame("hello")
    with pytest.raises(InstrumentReplyError):
        parse_frame("A +1.0 xx")
    assert parse_frame("A +014.70 +015.00 HLD").held
