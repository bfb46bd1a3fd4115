"""The EmStat4 MethodSCRIPT simulator over real transports: TCP and a pseudo-terminal.

Time is a `SimClock` the tests move by hand. The front-ends stream output by polling the simulator
every few milliseconds of wall time, so after moving the clock a test reads until a sync marker:
an online command sent while a script runs answers `<c>!0006` after everything that was due
(`sync`). Nothing sleeps for simulated time.

Package lines are decoded by a small decoder written here from the documented format
(INSTRUMENTS.md §2.5), independently of the simulator's encoder and of drivers/.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from simulators.base import RandlesLoad, ResistorLoad
from simulators.emstat import (
    EIS_MIN_POINT_S,
    EIS_PERIODS_PER_POINT,
    EmStat4PtyServer,
    EmStat4Server,
    EmStat4Simulator,
)
from simulators.methodscript import encode_value
from simulators.tcp import Faults

T0 = 1000.0
R0, R1, C1 = 100.0, 1000.0, 1e-6
READ_TIMEOUT_S = 2.0


class SimClock:
    """A controllable time source."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------------- decoder

_PREFIX = {
    "a": 1e-18,
    "f": 1e-15,
    "p": 1e-12,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    " ": 1.0,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "i": 1.0,
}


@dataclass(frozen=True)
class Decoded:
    type: str
    value: float
    status: int | None
    range: int | None


def decode_var(text: str) -> Decoded:
    """`ttHHHHHHHp[,1X][,2XX]` → value = (hex − 2^27) × prefix."""
    field, *metadata = text.split(",")
    assert len(field) == 10, text
    body = field[2:]
    value = math.nan if body == "     nan" else (int(body[:7], 16) - (1 << 27)) * _PREFIX[body[7]]
    status = range_index = None
    for item in metadata:
        if item[0] == "1" and len(item) == 2:
            status = int(item[1], 16)
        elif item[0] == "2" and len(item) == 3:
            range_index = int(item[1:], 16)
    return Decoded(field[:2], value, status, range_index)


def decode_package(line: str) -> list[Decoded]:
    assert line.startswith("P"), line
    return [decode_var(part) for part in line[1:].split(";")]


def packages(lines: list[str]) -> list[list[Decoded]]:
    return [decode_package(line) for line in lines if line.startswith("P")]


# ---------------------------------------------------------------------------------- clients


class Client:
    """A line client over an asyncio StreamReader plus a write function."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def send(self, text: str) -> None:
        await self.write(text.encode("ascii"))

    async def readline(self) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), READ_TIMEOUT_S)
        assert raw.endswith(b"\n"), raw
        return raw[:-1].decode("ascii")

    async def read_until(self, last: str) -> list[str]:
        """Lines up to and including `last`."""
        lines = []
        while (line := await self.readline()) != last:
            lines.append(line)
        return [*lines, last]

    async def sync(self) -> list[str]:
        """Everything due so far, while a script runs (ends with the `v!0006` marker, dropped)."""
        await self.send("v\n")
        return (await self.read_until("v!0006"))[:-1]

    async def is_running(self) -> bool:
        """Whether a script runs: `v` answers `v!0006` then, `v1.8` when idle."""
        await self.send("v\n")
        return (await self.readline()) == "v!0006"

    async def execute(self, script: str) -> None:
        """Send `e`, the script and the empty line; expect the `e` acknowledgement."""
        await self.send("e\n" + script.strip("\n") + "\n\n")
        assert await self.readline() == "e"


class TcpClient(Client):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader)
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> TcpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class PtyClient(Client):
    """Opens the slave side like a serial port (non-blocking fd, event-loop reader)."""

    def __init__(self, path: str) -> None:
        super().__init__(asyncio.StreamReader())
        self.fd: int | None = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        assert self.fd is not None
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as error:  # EIO once the master is gone
            self._loop.remove_reader(self.fd)
            self.reader.set_exception(error)
            return
        if not data:
            self._loop.remove_reader(self.fd)
            self.reader.feed_eof()
            return
        self.reader.feed_data(data)

    async def write(self, data: bytes) -> None:
        assert self.fd is not None
        os.write(self.fd, data)

    def close(self) -> None:
        if self.fd is not None:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def load() -> RandlesLoad:
    return RandlesLoad(R0, R1, C1)


@pytest.fixture
def simulator(load: RandlesLoad, clock: SimClock) -> EmStat4Simulator:
    return EmStat4Simulator(load, clock, seed=7)


@pytest.fixture
async def server(simulator: EmStat4Simulator) -> AsyncIterator[EmStat4Server]:
    async with EmStat4Server(simulator, poll_interval_s=0.005) as server:
        yield server


@pytest.fixture
async def client(server: EmStat4Server) -> AsyncIterator[TcpClient]:
    client = await TcpClient.connect(server.port)
    yield client
    await client.aclose()


@pytest.fixture
async def pty(simulator: EmStat4Simulator) -> AsyncIterator[EmStat4PtyServer]:
    async with EmStat4PtyServer(simulator, poll_interval_s=0.005) as pty:
        yield pty


@pytest.fixture
async def pty_client(pty: EmStat4PtyServer) -> AsyncIterator[PtyClient]:
    client = PtyClient(pty.path)
    yield client
    client.close()


# ---------------------------------------------------------------------------------- scripts


def cp_script(current: str = "1m", interval: str = "1", run_time: str = "10", body: str = "") -> str:
    """The official CP example's shape (MSLoopExample009-CP), parameters substituted."""
    return f"""
var potential
var current
var dc_current
var time_interval
var time_run
var t
store_var dc_current {current} ja
store_var time_interval {interval} ja
store_var time_run {run_time} ja
set_pgstat_chan 0
set_pgstat_mode 6
set_max_bandwidth 10
set_range ab 1
set_autoranging ab 100m 2
set_range db 20m
set_autoranging db 20m 20m
set_i 0
cell_on
timer_start
meas_loop_cp potential current dc_current time_interval time_run
    timer_get t
    pck_start
    pck_add t
    pck_add current
    pck_add potential
    pck_end
{body}endloop
on_finished:
    cell_off
"""


def eis_script(amplitude: str, f_start: str, f_end: str, points: str, dc: str) -> str:
    """The official EIS example's shape (MSLoopExample012-EIS)."""
    return f"""
var frequency
var z_real
var z_imaginary
set_e {dc}
set_pgstat_chan 0
set_pgstat_mode 3
set_max_bandwidth 1M
set_range_minmax da {dc} {dc}
set_range ba 2u
set_autoranging ba 500n 2m
set_range ab 4
set_autoranging ab 50m 4
cell_on
meas_loop_eis frequency z_real z_imaginary {amplitude} {f_start} {f_end} {points} {dc}
    pck_start
    pck_add frequency
    pck_add z_real
    pck_add z_imaginary
    pck_end
endloop
on_finished:
    cell_off
"""


def randles(frequency: float) -> complex:
    return R0 + R1 / (1 + 1j * 2 * math.pi * frequency * R1 * C1)


def log_spaced(f_start: float, f_end: float, n: int) -> list[float]:
    return [f_start * (f_end / f_start) ** (k / (n - 1)) for k in range(n)]


def eis_duration(frequency: float) -> float:
    return max(EIS_MIN_POINT_S, EIS_PERIODS_PER_POINT / frequency)


async def assert_link_lost(client: Client) -> None:
    """The other end went away: end of file, or an error (EIO on a pty, reset on TCP)."""
    try:
        assert await asyncio.wait_for(client.reader.read(), READ_TIMEOUT_S) == b""
    except OSError:
        pass


# ---------------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (-0.499905, "7F85F3Fu"),
        (99.999732, "DF5DFF4u"),
        (9885.956, "896D904m"),
        (2.9946, "82DB1A8u"),
        (2.799987e-9, "82AB973f"),
    ],
)
def test_encoder_reproduces_the_documented_examples(value: float, field: str) -> None:
    assert encode_value(value) == field
    assert decode_var("xx" + field).value == pytest.approx(value, rel=1e-12)


def test_encoder_nan_integer_and_overflow() -> None:
    assert encode_value(math.nan) == "     nan"
    assert encode_value(11, integer=True) == "800000Bi"
    assert encode_value(1e40) == "     nan"
    assert decode_var("ba" + encode_value(-1.5e-3) + ",12,215") == Decoded("ba", -1.5e-3, 2, 0x15)


# ---------------------------------------------------------------------------------- online commands


async def test_identification_and_online_errors(client: TcpClient) -> None:
    await client.send("t\n")
    assert await client.readline() == "tes4_hr1300#Mar 14 2025 09:30:00"
    assert await client.readline() == "R*"
    await client.send("\nv\ni\n")  # a bare LF (flush) is not answered
    assert await client.readline() == "v1.8"
    assert await client.readline() == "iES4SIM00001"
    await client.send("Z\nX\n")
    assert await client.readline() == "Z!0006"
    assert await client.readline() == "X!0003"


async def test_commands_split_across_writes_and_crlf(client: TcpClient) -> None:
    await client.send("t")
    await client.send("\r\n")
    assert (await client.readline()).startswith("tes4_hr")
    assert await client.readline() == "R*"


async def test_pyserial_socket_url(server: EmStat4Server) -> None:
    serial = pytest.importorskip("serial")

    def identify() -> list[bytes]:
        port = serial.serial_for_url(f"socket://127.0.0.1:{server.port}", timeout=READ_TIMEOUT_S)
        try:
            port.write(b"t\n")
            return [port.readline(), port.readline()]
        finally:
            port.close()

    first, second = await asyncio.to_thread(identify)
    assert first.startswith(b"tes4_hr") and second == b"R*\n"


# ---------------------------------------------------------------------------------- techniques


async def test_cp_streams_each_package_at_its_simulated_time(client: TcpClient, clock: SimClock) -> None:
    await client.execute(cp_script(current="1m", interval="1", run_time="10"))
    assert await client.readline() == "M000A"
    assert await client.sync() == []  # nothing is due before the first interval
    clock.now = T0 + 3.5
    first = packages(await client.sync())
    assert [p[0].value for p in first] == [1.0, 2.0, 3.0]
    clock.now = T0 + 4.0  # due at exactly t0 + 4 s
    assert [p[0].value for p in packages(await client.sync())] == [4.0]
    clock.now = T0 + 60.0
    rest = await client.read_until("")
    assert rest[-2:] == ["*", ""]
    assert [p[0].value for p in packages(rest)] == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    for point in first + packages(rest):
        t, current, potential = point
        assert (t.type, current.type, potential.type) == ("eb", "ba", "ab")
        assert current.value == pytest.approx(1e-3, abs=1e-6)
        assert potential.value == pytest.approx(1e-3 * (R0 + R1), abs=100e-6)
        assert (current.status, current.range) == (0, 24)  # 10 mA range from `set_range db 20m`
        assert (potential.status, potential.range) == (0, 6)
    await client.send("v\n")
    assert await client.readline() == "v1.8"  # the script has ended


async def test_ten_hour_cp_streams_over_simulated_hours(client: TcpClient, clock: SimClock) -> None:
    await client.execute(cp_script(current="-2m", interval="60", run_time="36000"))
    assert await client.readline() == "M000A"
    for hour in range(1, 10):
        clock.now = T0 + 3600.0 * hour
        got = packages(await client.sync())
        assert len(got) == 60
        assert got[-1][0].value == pytest.approx(3600.0 * hour)
        assert got[0][2].value == pytest.approx(-2e-3 * (R0 + R1), abs=100e-6)
    clock.now = T0 + 36_000.0
    rest = await client.read_until("")
    assert len(packages(rest)) == 60
    assert rest[-2:] == ["*", ""]


async def test_cp_breakloop_and_loop_markers(client: TcpClient, clock: SimClock) -> None:
    script = cp_script(interval="1", run_time="10", body="    if t >= 3\n        breakloop\n    endif\n")
    script = script.replace("timer_start\n", "var n\nstore_var n 0i ja\nloop n < 2i\ntimer_start\n")
    script = script.replace("on_finished:", "add_var n 1i\nendloop\non_finished:")
    await client.execute(script)
    clock.now = T0 + 100.0
    lines = await client.read_until("")
    markers = [line for line in lines if not line.startswith("P")]
    assert markers == ["L", "M000A", "*", "M000A", "*", "+", ""]
    assert [p[0].value for p in packages(lines)] == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]


async def test_ca_applies_the_potential_and_autoranges(client: TcpClient, clock: SimClock) -> None:
    await client.execute(
        """
var p
var c
set_pgstat_chan 0
set_pgstat_mode 3
set_max_bandwidth 60
set_range_minmax da 550m 550m
set_range ba 30u
set_autoranging ba 50n 2m
set_e 550m
cell_on
meas_loop_ca p c 550m 100m 1
    pck_start
    pck_add p
    pck_add c
    pck_end
endloop
on_finished:
    cell_off
"""
    )
    assert await client.readline() == "M0007"
    clock.now = T0 + 1.0
    lines = await client.read_until("")
    points = packages(lines)
    assert len(points) == 10
    for potential, current in points:
        assert (potential.type, potential.status) == ("da", None)
        assert potential.value == pytest.approx(0.55, abs=1e-9)
        assert current.type == "ba"
        assert current.value == pytest.approx(0.55 / (R0 + R1), rel=1e-3)
        assert (current.status, current.range) == (0, 21)  # 500 µA needs the 1 mA range


async def test_ocp_reads_the_open_circuit_voltage(clock: SimClock) -> None:
    simulator = EmStat4Simulator(RandlesLoad(R0, R1, C1, ocv_v=0.25), clock, seed=3)
    async with EmStat4Server(simulator, poll_interval_s=0.005) as server:
        client = await TcpClient.connect(server.port)
        try:
            await client.execute(
                """
var potential
var t
set_pgstat_chan 0
set_pgstat_mode 3
set_range ab 4
set_autoranging ab 4 4
cell_off
timer_start
meas_loop_ocp potential 100m 2100m
    timer_get t
    pck_start
    pck_add t
    pck_add potential
    pck_end
endloop
"""
            )
            assert await client.readline() == "M000B"
            clock.now = T0 + 5.0
            points = packages(await client.read_until(""))
        finally:
            await client.aclose()
    assert [round(t.value, 6) for t, _ in points] == [round(0.1 * k, 6) for k in range(1, 22)]
    assert all(p.type == "ab" and p.value == pytest.approx(0.25, abs=100e-6) for _, p in points)


async def test_eis_returns_the_analytic_impedance_in_order(client: TcpClient, clock: SimClock) -> None:
    await client.execute(eis_script("10m", "100k", "1", "11i", "0"))
    assert await client.readline() == "M000D"
    frequencies = log_spaced(100e3, 1.0, 11)
    done_at = [T0 + sum(eis_duration(f) for f in frequencies[: k + 1]) for k in range(11)]
    clock.now = done_at[-1] - 0.5 * eis_duration(frequencies[-1])  # the 1 Hz point takes 3 s
    early = packages(await client.sync())
    assert len(early) == 10
    clock.now = done_at[-1] + 1e-6
    points = early + packages(await client.read_until(""))
    assert len(points) == 11
    for (f, z_real, z_imag), expected_f in zip(points, frequencies, strict=True):
        assert (f.type, z_real.type, z_imag.type) == ("dc", "cc", "cd")
        assert f.value == pytest.approx(expected_f, rel=1e-6)
        z = randles(expected_f)
        assert complex(z_real.value, z_imag.value) == pytest.approx(z, abs=6e-3 * abs(z))
        assert z_real.status == 0 and z_imag.status == 0
    # Z′ carries the current range: 10 mV over 100 Ω (100 kHz) needs more than over 1.1 kΩ (1 Hz).
    assert points[0][1].range == 18 and points[-1][1].range == 15
    assert points[-1][2].value < 0  # capacitive: math sign convention


async def test_geis_around_a_dc_current(client: TcpClient, clock: SimClock) -> None:
    await client.execute(
        """
var frequency
var z_real
var z_imaginary
set_i 0
set_pgstat_chan 0
set_pgstat_mode 6
set_max_bandwidth 1M
set_range ab 2
set_autoranging ab 100m 2
set_range db 20m
set_autoranging db 20m 20m
cell_on
meas_loop_geis frequency z_real z_imaginary 100u 10k 10 4i 1m
    pck_start
    pck_add frequency
    pck_add z_real
    pck_add z_imaginary
    pck_end
endloop
on_finished:
    cell_off
"""
    )
    assert await client.readline() == "M000E"
    clock.now = T0 + 10.0
    points = packages(await client.read_until(""))
    assert [round(f.value, 3) for f, _, _ in points] == [round(f, 3) for f in log_spaced(10e3, 10.0, 4)]
    for f, z_real, z_imag in points:
        z = randles(f.value)
        assert complex(z_real.value, z_imag.value) == pytest.approx(z, abs=1e-2 * abs(z))
        assert z_real.range == 24  # the applied-current range


async def test_eis_on_a_load_without_impedance_is_a_runtime_error(clock: SimClock) -> None:
    simulator = EmStat4Simulator(ResistorLoad(100.0), clock)
    async with EmStat4Server(simulator, poll_interval_s=0.005) as server:
        client = await TcpClient.connect(server.port)
        try:
            await client.execute(eis_script("10m", "100k", "1", "11i", "0"))
            assert await client.readline() == "!001B: Line 14"
            await client.send("v\n")
            assert await client.readline() == "v1.8"  # the script ended; no empty line was sent
        finally:
            await client.aclose()
    assert simulator.hardware.cell_on  # on_finished: did not run


async def test_wrong_mode_is_a_runtime_error(client: TcpClient) -> None:
    await client.execute(cp_script().replace("set_pgstat_mode 6", "set_pgstat_mode 3"))
    assert await client.readline() == "!0023: Line 20"  # meas_loop_cp needs mode 6
    assert not await client.is_running()


async def test_cell_on_needs_a_mode(client: TcpClient) -> None:
    await client.execute("var p\ncell_on\n")
    assert await client.readline() == "!0023: Line 2"  # power-on mode 0 is off


async def test_wait_meas_and_arithmetic(client: TcpClient, clock: SimClock) -> None:
    await client.execute(
        """
var p
var q
var n
var t
set_pgstat_mode 6
set_range db 2m
set_i 500u
cell_on
timer_start
wait 2
meas 100m p ab
copy_var p q
mul_var q -1
add_var q 1
div_var q 0
store_var n 3i ja
sub_var n 1i
timer_get t
pck_start
pck_add t
pck_add p
pck_add q
pck_add n
pck_end
on_finished:
cell_off
"""
    )
    clock.now = T0 + 2.0
    assert await client.sync() == []  # still measuring for 100 ms
    clock.now = T0 + 2.1
    lines = await client.read_until("")
    (t, p, q, n), *_ = packages(lines)
    assert (t.type, t.value) == ("eb", pytest.approx(2.1))
    assert p.type == "ab" and p.value == pytest.approx(500e-6 * (R0 + R1), abs=100e-6)
    assert p.range == 6
    assert math.isnan(q.value)  # division by zero
    assert (n.type, n.value) == ("ja", 2)
    assert lines[0].split(";")[3] == "ja8000002i"


async def test_a_script_looping_without_time_can_be_aborted(clock: SimClock) -> None:
    simulator = EmStat4Simulator(ResistorLoad(100.0), clock, max_steps_per_call=1000)
    async with EmStat4Server(simulator, poll_interval_s=0.005) as server:
        client = await TcpClient.connect(server.port)
        try:
            await client.execute("var n\nloop n < 1\nadd_var n 0\nendloop\n")
            assert await client.readline() == "L"
            assert await client.is_running()
            await client.send("Z\n")
            assert await client.read_until("") == ["Z", "+", ""]
        finally:
            await client.aclose()


# ---------------------------------------------------------------------------------- abort and errors


async def test_abort_mid_loop_closes_the_loop_and_runs_on_finished(
    client: TcpClient, clock: SimClock, simulator: EmStat4Simulator
) -> None:
    await client.execute(cp_script(interval="1", run_time="100"))
    assert await client.readline() == "M000A"
    clock.now = T0 + 3.5
    assert len(packages(await client.sync())) == 3
    assert simulator.hardware.cell_on
    await client.send("Z\n")
    assert await client.read_until("") == ["Z", "*", ""]
    assert not simulator.hardware.cell_on
    clock.now = T0 + 50.0
    await client.send("Z\n")
    assert await client.readline() == "Z!0006"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("frobnicate 1", "e!4001: Line 2, Col 1"),
        ("set_e undeclared", "e!420B: Line 2, Col 7"),
        ("set_e 1.5", "e!4004: Line 2, Col 7"),
        ("  store_var p 1m ab extra", "e!420A: Line 2, Col 21"),
        ("var p", "e!4026: Line 2, Col 5"),
        ("meas_loop_ocp p 100m 1 nscans(2)", "e!4008: Line 2, Col 24"),
        ("endloop", "e!400C: Line 2, Col 1"),
        ("loop p < 2", "e!4018: Line 3, Col 1"),
    ],
)
async def test_script_errors_are_reported_with_line_and_column(
    client: TcpClient, line: str, reply: str
) -> None:
    await client.send(f"e\nvar p # declared\n{line}\n\n")
    assert await client.readline() == reply
    await client.send("v\n")
    assert await client.readline() == "v1.8"  # nothing runs


async def test_load_then_run(client: TcpClient, clock: SimClock) -> None:
    await client.send("r\n")
    assert await client.readline() == "r!000C"
    await client.send("l\n" + cp_script(interval="1", run_time="2").strip() + "\n\n")
    assert await client.readline() == "l"
    await client.send("r\n")
    assert await client.readline() == "r"
    assert await client.readline() == "M000A"
    clock.now = T0 + 2.0
    assert len(packages(await client.read_until(""))) == 2


# ---------------------------------------------------------------------------------- link faults


async def test_drop_fault_closes_the_connection(server: EmStat4Server, client: TcpClient) -> None:
    server.faults.drop_next_command = True
    await client.send("t\n")
    await assert_link_lost(client)
    other = await TcpClient.connect(server.port)
    try:
        await other.send("v\n")
        assert await other.readline() == "v1.8"
    finally:
        await other.aclose()


async def test_fragmented_and_garbled_output(simulator: EmStat4Simulator) -> None:
    faults = Faults(fragment_size=3, fragment_gap_s=0.0)
    async with EmStat4Server(simulator, faults=faults, poll_interval_s=0.005) as server:
        client = await TcpClient.connect(server.port)
        try:
            await client.send("t\n")
            assert (await client.readline()).startswith("tes4_hr")
            assert await client.readline() == "R*"
            faults.garble_next_reply = True
            await client.send("v\n")
            raw = await asyncio.wait_for(client.reader.readline(), READ_TIMEOUT_S)
            assert raw == bytes(b | 0x80 for b in b"v1.8") + b"\n"
        finally:
            await client.aclose()


# ---------------------------------------------------------------------------------- pseudo-terminal


async def test_pty_identification_and_streaming(pty_client: PtyClient, clock: SimClock) -> None:
    await pty_client.send("t\n")
    assert (await pty_client.readline()).startswith("tes4_hr")
    assert await pty_client.readline() == "R*"
    await pty_client.execute(cp_script(interval="1", run_time="3"))
    assert await pty_client.readline() == "M000A"
    clock.now = T0 + 3.0
    lines = await pty_client.read_until("")
    assert [p[0].value for p in packages(lines)] == [1.0, 2.0, 3.0]


async def test_pty_unplug_fails_the_clients_read(
    pty: EmStat4PtyServer, pty_client: PtyClient, simulator: EmStat4Simulator, clock: SimClock
) -> None:
    await pty_client.execute(cp_script(interval="1", run_time="100"))
    assert await pty_client.readline() == "M000A"
    pty.unplug()
    await assert_link_lost(pty_client)
    assert not pty.plugged
    clock.now = T0 + 10.0
    new_path = await pty.replug()  # the instrument kept running; output while unplugged is lost
    other = PtyClient(new_path)
    try:
        await other.sync()
        await other.send("Z\n")
        assert (await other.read_until(""))[-3:] == ["Z", "*", ""]
    finally:
        other.close()
    assert not simulator.running


async def test_pty_with_pyserial(pty: EmStat4PtyServer) -> None:
    serial = pytest.importorskip("serial")

    def identify() -> list[bytes]:
        port = serial.Serial(pty.path, 921600, timeout=READ_TIMEOUT_S)
        try:
            port.write(b"t\n")
            return [port.readline(), port.readline()]
        finally:
            port.close()

    first, second = await asyncio.to_thread(identify)
    assert first.startswith(b"tes4_hr") and second == b"R*\n"


async def test_pty_drop_fault_unplugs(pty: EmStat4PtyServer, pty_client: PtyClient) -> None:
    pty.faults.drop_next_command = True
    await pty_client.send("t\n")
    await assert_link_lost(pty_client)
    assert not pty.plugged


# ---------------------------------------------------------------------------------- determinism


async def _session(seed: int) -> bytes:
    """A fixed sequence of inputs at fixed simulated times; every byte received."""
    clock = SimClock()
    simulator = EmStat4Simulator(RandlesLoad(R0, R1, C1), clock, seed=seed)
    received = bytearray()
    async with EmStat4Server(simulator, poll_interval_s=0.002) as server:
        client = await TcpClient.connect(server.port)
        try:
            await client.execute(cp_script(interval="250m", run_time="5"))
            for step in (0.3, 1.7, 2.0, 4.9):
                clock.now = T0 + step
                received += "\n".join(await client.sync()).encode() + b"|"
            clock.now = T0 + 6.0
            received += "\n".join(await client.read_until("")).encode() + b"|"
            await client.execute(eis_script("10m", "10k", "10", "7i", "0"))
            clock.now = T0 + 20.0
            received += "\n".join(await client.read_until("")).encode()
        finally:
            await client.aclose()
    return bytes(received)


async def test_same_seed_same_inputs_same_bytes() -> None:
    first, second, other_seed = await _session(11), await _session(11), await _session(12)
    assert first == second
    assert first != other_seed
