"""The real EmStat4 driver against the MethodSCRIPT simulator over socket:// and over a pty.

The simulator is lazy and streams on a wall-clock poll (10 ms), paced by a hand-moved clock. A
timed loop needs nothing special: `fetch` waits (briefly, wall time) for the packages due by the
clock. An EIS script only progresses while the clock moves, so the EIS tests move it to the
simulator's next event until the spectrum is done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from drivers.emstat import EmStat4
from drivers.errors import LinkError
from drivers.methodscript import chronopotentiometry_script
from drivers.transports.serial import SerialTransport
from simulators.base import RandlesLoad, ResistorLoad
from simulators.emstat import EmStat4PtyServer, EmStat4Server, EmStat4Simulator

R0, R1, C1 = 100.0, 1000.0, 1e-6


class SimClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def served(load=None, device: str = "es4_hr") -> AsyncIterator[tuple[EmStat4Server, SimClock]]:
    clock = SimClock()
    simulator = EmStat4Simulator(load or RandlesLoad(R0, R1, C1), clock, seed=3, device=device)
    async with EmStat4Server(simulator) as server:
        yield server, clock


def tcp(server: EmStat4Server) -> SerialTransport:
    return SerialTransport(f"socket://127.0.0.1:{server.port}", timeout_s=2.0)


def emstat(transport: SerialTransport, clock: SimClock) -> EmStat4:
    return EmStat4(transport, time_source=clock, timeout_s=2.0, error_pause_s=0.06)


async def measure_while_moving_the_clock(simulator: EmStat4Simulator, clock: SimClock, coroutine):
    """Run `coroutine`, moving the clock to each of the simulator's events until it is done."""
    task = asyncio.ensure_future(coroutine)
    try:
        while not task.done():
            wake = simulator.next_event_time()
            if wake is not None and wake > clock.now:
                clock.now = wake
            await asyncio.wait([task], timeout=0.02)  # wall: the simulator streams on a 10 ms poll
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])


async def test_constant_current_streams_readings_at_their_simulated_times():
    async with served() as (server, clock):
        async with emstat(tcp(server), clock) as pot:
            assert pot.model is not None and pot.model.name == "EmStat4 HR"
            await pot.start_acquisition(1.0)
            await pot.set_current(1e-4, 2.0)
            clock.now += 10.0
            readings = await pot.fetch()
            assert [r.t for r in readings] == [1000.0 + k for k in range(1, 11)]
            for reading in readings:  # 0.1 mA through R0 + R1 (C1 charged long ago)
                assert reading.current_a == pytest.approx(1e-4, rel=1e-3)
                assert reading.voltage_v == pytest.approx(0.11, abs=2e-3)
            clock.now += 2.5
            assert [r.t for r in await pot.fetch()] == [1011.0, 1012.0]
            await pot.set_current(-1e-4, 2.0)
            clock.now += 1.0
            (reading,) = await pot.fetch()
            assert reading.current_a == pytest.approx(-1e-4, rel=1e-3) and reading.t == 1013.5
        assert not server.simulator.running  # the exit aborted the script and switched the cell off


async def test_the_voltage_limit_stops_the_script_and_flags_the_reading():
    async with served(load=ResistorLoad(100.0)) as (server, clock):
        async with emstat(tcp(server), clock) as pot:
            await pot.start_acquisition(1.0)
            await pot.set_current(1e-3, 0.05)  # 1 mA through 100 Ω needs 0.1 V
            clock.now += 3.0
            readings = await pot.fetch()
            assert readings and readings[-1].in_compliance
            assert await pot.fetch() == []
            assert not server.simulator.running


async def test_potentiostatic_spectrum_of_a_randles_cell_is_capacitive():
    async with served() as (server, clock):
        async with emstat(tcp(server), clock) as pot:
            points = await measure_while_moving_the_clock(
                server.simulator,
                clock,
                pot.impedance_spectrum(
                    mode="potentiostatic",
                    f_start_hz=1e4,
                    f_end_hz=10.0,
                    points_per_decade=2,
                    amplitude=0.01,
                    dc_level=0.0,
                ),
            )
    assert len(points) == 7
    assert points[0].frequency_hz == pytest.approx(1e4) and points[-1].frequency_hz == pytest.approx(10.0)
    for point in points:
        omega = 2 * 3.141592653589793 * point.frequency_hz
        expected = R0 + R1 / (1 + 1j * omega * R1 * C1)
        assert point.z_real_ohm == pytest.approx(expected.real, rel=0.02)
        assert point.z_imag_ohm == pytest.approx(expected.imag, rel=0.05)
        assert point.z_imag_ohm < 0  # canonical sign: capacitive is negative


async def test_galvanostatic_spectrum_around_a_dc_current():
    async with served() as (server, clock):
        async with emstat(tcp(server), clock) as pot:
            points = await measure_while_moving_the_clock(
                server.simulator,
                clock,
                pot.impedance_spectrum(
                    mode="galvanostatic",
                    f_start_hz=1e3,
                    f_end_hz=10.0,
                    points_per_decade=1,
                    amplitude=1e-5,
                    dc_level=1e-5,
                ),
            )
    assert [p.i_dc_a for p in points] == [1e-5] * 3
    assert all(p.z_imag_ohm < 0 for p in points)


async def test_a_new_session_stops_a_script_the_previous_one_left_running():
    async with served() as (server, clock):
        async with tcp(server) as previous:  # a session that died mid-measurement, without safe state
            script = chronopotentiometry_script(
                current_a=1e-4, interval_s=1.0, run_time_s=1e6, potential_range_v=2.0
            )
            await previous.write(script.text)
            assert await previous.read_line() == "e"
        assert server.simulator.running
        clock.now += 5.0  # packages nobody reads
        async with emstat(tcp(server), clock) as pot:  # resync on connect: Z, drain, cell off
            assert not server.simulator.running
            assert pot.identity.startswith("es4_hr")


async def test_over_a_pty_like_a_usb_port_and_unplugging_is_a_link_error():
    clock = SimClock()
    simulator = EmStat4Simulator(RandlesLoad(R0, R1, C1), clock, seed=3)
    async with EmStat4PtyServer(simulator) as pty:
        transport = SerialTransport(pty.path, baudrate=921600, timeout_s=2.0)
        async with emstat(transport, clock) as pot:
            await pot.start_acquisition(0.5)
            await pot.set_current(1e-4, 2.0)
            clock.now += 2.0
            assert [r.t for r in await pot.fetch()] == [1000.5, 1001.0, 1001.5, 1002.0]
            pty.unplug()
            clock.now += 1.0
            with pytest.raises(LinkError, match=r"vanished|closed"):
                for _ in range(100):  # the reader notices the EIO within one poll
                    await pot.fetch()
                    await asyncio.sleep(0.01)
            with pytest.raises(LinkError):  # the cell state is unknown: say so
                await pot.safe_state()


def test_a_real_time_run_on_a_configured_emstat4_station(tmp_path, unused_tcp_port):
    """`labctl run --station` with driver = "emstat4", against `labctl sim serve emstat4`, in real time."""
    import json
    import os
    import subprocess
    import sys

    from labctl.cli import main

    server = subprocess.Popen(
        [sys.executable, "-m", "labctl", "sim", "serve", "emstat4", "--port", str(unused_tcp_port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stderr is not None and "listening" in server.stderr.readline()
        station = tmp_path / "bench.toml"
        station.write_text(
            f'name = "bench-e"\n[potentiostat]\ndriver = "emstat4"\n'
            f'resource = "socket://127.0.0.1:{unused_tcp_port}"\n'
        )
        protocol = tmp_path / "p.yaml"
        protocol.write_text(
            "labctl: 1\nname: quick\nrecord: {sample: 0.5 s, every: 0.5 s, poll: 1 s}\nsteps:\n"
            "  - rest: {until: {time: 2 s}}\n"
            "  - eis: {from: 200 kHz, to: 2 kHz, per_decade: 4}\n"
            "  - current: {density: 0.1 mA/cm^2, until: {time: 2 s}}\n"
            "results: [impedance]\n"
        )
        assert (
            main(["run", str(protocol), "--station", str(station), "--out", str(tmp_path / "run"), "--quiet"])
            == 0
        )
        result = json.loads((tmp_path / "run" / "result.json").read_text())
        assert result["state"] == "done" and len(result["impedance"]) == 1
        assert "es4" in json.loads((tmp_path / "run" / "settings.json").read_text())["instrument"]
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stderr.close()
