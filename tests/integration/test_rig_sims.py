"""The Mark-10 and Zaber simulators over a real pty and TCP, on a hand-moved clock."""

from __future__ import annotations

import asyncio
import os

import pytest

from simulators.mark10 import ConstantForce, Mark10PtyServer, Mark10Server, Mark10Simulator
from simulators.mechanics import StackMechanics
from simulators.zaber import ZaberPtyServer, ZaberServer, ZaberSimulator


class Clock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: bytes) -> bytes:
    writer.write(command)
    await writer.drain()
    return await asyncio.wait_for(reader.readuntil(b"\r\n"), 2.0)


def gauge(force: float = 0.0, clock: Clock | None = None) -> Mark10Simulator:
    return Mark10Simulator(ConstantForce(force), clock or Clock(), noise_n=0.0, capacity_n=2500.0)


def test_gauge_commands_units_peaks_zero_and_errors():
    sim = gauge(123.456)
    assert sim.handle_bytes(b"?\r") == b"27.764 lbF\r\n"  # power-on lbF; 0.25 N steps
    assert sim.handle_bytes(b"N\r\n?\r\n") == b"\r\n123.50 N\r\n"
    assert sim.handle_bytes(b"?C\n") == b""  # LF alone ignored
    assert sim.handle_bytes(b"\r") == b"123.50 N\r\n"
    assert sim.handle_line("KN") == "" and sim.handle_line("?") == "0.12350 kN"
    assert sim.handle_line("MN") == "*11" and sim.handle_line("G") == "*11"
    sim.handle_line("N")
    sim.source.value_n = -10.0  # type: ignore[attr-defined]
    assert sim.handle_line("?") == "-10.00 N"
    assert sim.handle_line("?PT") == "-10.00 N" and sim.handle_line("?PC") == "123.50 N"
    assert sim.handle_line("CLR") == "" and sim.handle_line("?PC") == "0.00 N"
    sim.source.value_n = 50.0  # type: ignore[attr-defined]
    assert sim.handle_line("Z") == "" and sim.handle_line("?") == "0.00 N"
    assert sim.handle_line("PC") == "" and sim.handle_line("FLTC3") == "" and sim.handle_line("FLTP10") == ""
    assert sim.handle_line("LIST") == "V1.00;N;PC;FLTC3;FLTP10;AOUT00;AOFF5;FULL;MIT;POL;B0"
    assert sim.handle_line("FLTC11") == "*22" and sim.handle_line("FLTCX") == "*12"
    assert sim.handle_line("BOGUS") == "*10" and sim.handle_line("?A") == "*11"
    assert [sim.handle_line(c) for c in ("RN", "RM", "RV", "RS")] == [
        "Series 7",
        "M7-500",
        "V1.00",
        "1234567",
    ]
    sim.source.value_n = 3000.0  # type: ignore[attr-defined]
    assert sim.handle_line("?") == "OVER"


def test_gauge_noise_is_seeded_and_shrinks_with_the_filter():
    def readings(seed: int, flt: int) -> list[float]:
        sim = Mark10Simulator(ConstantForce(100.0), Clock(), seed=seed, resolution_n=0.001, noise_n=1.0)
        sim.handle_line("N")
        sim.handle_line(f"FLTC{flt}")
        return [float(sim.handle_line("?").split()[0]) for _ in range(200)]

    assert readings(1, 0) == readings(1, 0) != readings(2, 0)
    spread = [max(r) - min(r) for r in (readings(1, 0), readings(1, 8))]
    assert spread[1] < spread[0] / 5


def test_gauge_reads_the_mechanics_at_the_clock_time():
    clock = Clock(0.0)
    rig = StackMechanics(x_contact_m=0.0, t0=0.0)
    rig.position_m = 80e-6
    sim = Mark10Simulator(rig, clock, noise_n=0.0, resolution_n=0.01)
    sim.handle_line("N")
    first = float(sim.handle_line("?").split()[0])
    clock.now = 7200.0
    later = float(sim.handle_line("?").split()[0])
    assert first == pytest.approx(400.0) and later < first - 10  # Li creep relaxes the fixed gap
    assert rig.t == 7200.0


async def test_gauge_over_tcp_with_faults():
    async with Mark10Server(gauge(10.0)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert await exchange(reader, writer, b"N\r\n") == b"\r\n"
            assert await exchange(reader, writer, b"?\r") == b"10.00 N\r\n"
            server.faults.garble_next_reply = True
            garbled = await exchange(reader, writer, b"?\r\n")
            assert garbled.endswith(b"\r\n") and all(b >= 0x80 for b in garbled[:-2])
            assert await exchange(reader, writer, b"?\r\n") == b"10.00 N\r\n"
            server.faults.drop_next_command = True
            writer.write(b"?\r\n")
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
        finally:
            writer.close()
            await writer.wait_closed()


async def test_gauge_over_a_pty_and_unplug():
    async with Mark10PtyServer(gauge(5.0)) as pty:
        fd = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"N\r?\r")
            data = b""
            while data.count(b"\r\n") < 2:
                await asyncio.sleep(0.005)  # wall: the pty round trip
                data += os.read(fd, 100)
            assert data == b"\r\n5.00 N\r\n"
            pty.unplug()
            try:
                assert os.read(fd, 100) == b""  # end of file, or EIO: the device is gone
            except OSError:
                pass
        finally:
            os.close(fd)


def test_zaber_commands_homing_moves_and_rejections():
    clock = Clock(0.0)
    sim = ZaberSimulator(None, clock, maxspeed=1000, start_position=500)
    assert sim.handle_bytes(b"/1\r\n") == b"@01 0 OK IDLE WR 0\r\n"
    assert sim.handle_line("/1 1 move abs 100") == "@01 1 RJ IDLE WR BADCOMMAND"
    assert sim.handle_line("/1 1 home") == "@01 1 OK BUSY WR 0"
    clock.now = 0.25
    assert sim.handle_line("/1 1 get pos") == "@01 1 OK BUSY WR 250"
    clock.now = 1.0
    assert sim.handle_line("/1 1") == "@01 1 OK IDLE -- 0"
    assert sim.handle_bytes(b"/1 1 move abs 2000\r") == b"@01 1 OK BUSY -- 0\r\n"
    clock.now = 2.0
    assert sim.handle_line("/1 1 stop") == "@01 1 OK IDLE -- 0"
    assert sim.handle_line("/1 1 get pos") == "@01 1 OK IDLE -- 1000"
    assert sim.handle_line("/1 1 move rel -400") == "@01 1 OK BUSY -- 0"
    clock.now = 3.0
    assert sim.handle_line("/1 1 get pos") == "@01 1 OK IDLE -- 600"
    assert sim.handle_line("/1 1 set maxspeed 5000") == "@01 1 OK IDLE -- 0"
    assert sim.handle_line("/1 1 get maxspeed") == "@01 1 OK IDLE -- 5000"
    assert sim.handle_line("/1 1 set maxspeed -1") == "@01 1 RJ IDLE -- BADDATA"
    assert sim.handle_line("/1 1 move abs 9999999") == "@01 1 RJ IDLE -- BADDATA"
    assert sim.handle_line("/1 1 move abs x") == "@01 1 RJ IDLE -- BADDATA"
    assert sim.handle_line("/1 1 bogus") == "@01 1 RJ IDLE -- BADCOMMAND"
    assert sim.handle_line("/1 3 get pos") == "@01 3 RJ IDLE -- BADAXIS"
    assert sim.handle_line("/2 1 get pos") is None and sim.handle_line("noise") is None
    assert sim.handle_line("/1 system reset") == "@01 0 OK IDLE WR 0"


def test_zaber_drives_the_mechanics_and_stalls_at_the_thrust_limit():
    clock = Clock(0.0)
    rig = StackMechanics(x_contact_m=1e-3, stiffness_n_m=5e6)
    sim = ZaberSimulator(rig, clock, maxspeed=20_000, start_position=0, thrust_limit_n=500.0)
    sim.homed = True
    assert sim.handle_line("/1 1 move abs 10080") == "@01 1 OK BUSY -- 0"  # 1.008 mm: 40 N
    clock.now = 0.3
    assert rig.force_n() == 0.0
    clock.now = 1.0
    assert sim.handle_line("/1 1") == "@01 1 OK IDLE -- 0"
    assert rig.force_n() == pytest.approx(40.0, rel=1e-3)
    sim.handle_line("/1 1 move rel 5000")  # +0.5 mm would be 2540 N
    clock.now = 2.0
    assert sim.handle_line("/1 1") == "@01 1 OK IDLE FS 0"
    assert rig.force_n() == pytest.approx(500.0, rel=1e-3)
    assert sim.handle_line("/1 1 move rel -100") == "@01 1 OK BUSY -- 0"


async def test_zaber_over_tcp_and_pty():
    sim = ZaberSimulator(None, Clock())
    async with ZaberServer(sim) as server, ZaberPtyServer(sim) as pty:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert await exchange(reader, writer, b"/1 1 get pos\n") == b"@01 1 OK IDLE WR 5000\r\n"
        finally:
            writer.close()
            await writer.wait_closed()
        fd = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, b"/1\r")
            data = b""
            while not data.endswith(b"\r\n"):
                await asyncio.sleep(0.005)  # wall: the pty round trip
                data += os.read(fd, 100)
            assert data == b"@01 0 OK IDLE WR 0\r\n"
        finally:
            os.close(fd)
