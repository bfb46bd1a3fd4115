"""Eurotherm 3200 simulator (pymodbus server) and driver together over RTU on a pty and Modbus TCP."""

from __future__ import annotations

import pytest

from drivers.errors import InstrumentRejectedError, InstrumentTimeout
from drivers.eurotherm import Eurotherm3200
from simulators.eurotherm import (
    RM_SP,
    SP1,
    TG_SP,
    Eurotherm3200Simulator,
    EurothermRtuPtyServer,
    EurothermTcpServer,
)

KELVIN = 273.15


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


class Cell:
    temperature_k = 0.0


def test_pid_reaches_setpoint_in_simulated_minutes():
    clock = Clock()
    cell = Cell()
    sim = Eurotherm3200Simulator(clock, cell=cell)
    sim.write(276, 1)
    sim.write(RM_SP, 80.0)
    clock.t += 1800.0
    assert sim.temperature_c == pytest.approx(80.0, abs=0.5)
    assert cell.temperature_k == pytest.approx(80.0 + KELVIN, abs=0.5)
    assert 0.0 < sim.values[4] < 100.0


async def test_driver_over_tcp_uses_remote_setpoint_only():
    clock = Clock()
    sim = Eurotherm3200Simulator(clock)
    async with EurothermTcpServer(sim) as server:
        async with Eurotherm3200(f"tcp://127.0.0.1:{server.port}") as tc:
            assert await tc.read_temperature() == pytest.approx(25.0 + KELVIN)
            await tc.set_temperature(60.0 + KELVIN)
            assert await tc.working_setpoint() == pytest.approx(60.0 + KELVIN)
            clock.t += 5.0
            assert await tc.output_percent() > 30.0  # heating hard toward the new set-point
            clock.t += 1800.0
            assert await tc.read_temperature() == pytest.approx(60.0 + KELVIN, abs=0.5)
            for step in range(10):  # a ramp: many writes, none to EEPROM
                await tc.set_temperature(60.0 + step + KELVIN)
            with pytest.raises(InstrumentRejectedError):
                await tc.set_temperature(900.0 + KELVIN)
            with pytest.raises(InstrumentRejectedError):
                await tc.write_register(1, 20.0)  # PV is read-only
            with pytest.raises(InstrumentRejectedError):
                await tc.read_register(1000)
        assert sim.eeprom_writes == {TG_SP: 0, SP1: 0, 25: 0}
        assert sim.values[RM_SP] == pytest.approx(69.0)  # safe state held the set-point


async def test_driver_over_rtu_pty_and_link_faults():
    clock = Clock()
    sim = Eurotherm3200Simulator(clock, setpoint_c=40.0)
    async with EurothermRtuPtyServer(sim, baudrate=19200) as pty:
        async with Eurotherm3200(pty.path, baudrate=19200, timeout_s=0.3, retries=0) as tc:
            clock.t += 1800.0
            assert await tc.read_temperature() == pytest.approx(40.0 + KELVIN, abs=0.5)
            await tc.set_temperature(45.0 + KELVIN)
            assert sim.working_setpoint_c == pytest.approx(45.0)
            pty.garble_next_reply = True
            with pytest.raises(InstrumentTimeout):
                await tc.read_temperature()
            assert await tc.read_temperature() == pytest.approx(40.0 + KELVIN, abs=0.5)
            pty.unplug()
            with pytest.raises(InstrumentTimeout):
                await tc.output_percent()
    assert sim.eeprom_writes[TG_SP] == sim.eeprom_writes[SP1] == 0


def test_full_resolution_float_block_matches_scaled_registers():
    import asyncio
    import struct

    clock = Clock()
    sim = Eurotherm3200Simulator(clock, setpoint_c=33.3)
    regs = [0] * (0x8000 + 2 * 276 + 2)
    asyncio.run(sim.action(3, 0, 1, 1, regs, None))
    assert regs[24] == 333
    (value,) = struct.unpack(">f", struct.pack(">HH", regs[0x8000 + 48], regs[0x8000 + 49]))
    assert value == pytest.approx(33.3, abs=1e-5)
