"""The Keithley 2450 simulator over real TCP on a free loopback port.

Time is a `SimClock` the tests move by hand: nothing sleeps in simulated time. Because commands
without a reply give no acknowledgement, `RawClient.sync()` (a `*LANG?` round trip) makes sure the
server has executed everything sent so far before a test moves the clock.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from simulators.base import ResistorLoad
from simulators.keithley2450 import ELEMENTS, Keithley2450Server, Keithley2450Simulator
from simulators.scpi import ERROR_MESSAGES

T0 = 1000.0
R_OHM = 100.0


class SimClock:
    """A controllable time source."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


class RawClient:
    """Byte-level SCPI client over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def write(self, line: str, terminator: bytes = b"\n") -> None:
        self.writer.write(line.encode("ascii") + terminator)
        await self.writer.drain()

    async def read_raw(self, wait_s: float = 2.0) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), wait_s)

    async def query(self, line: str, wait_s: float = 2.0) -> str:
        await self.write(line)
        raw = await self.read_raw(wait_s)
        assert raw.endswith(b"\n"), raw
        return raw[:-1].decode("ascii")

    async def sync(self) -> None:
        """Return once the server has executed every line sent before."""
        assert await self.query("*LANG?") in ("SCPI", "TSP", "SCPI2400")

    async def command(self, line: str) -> None:
        await self.write(line)
        await self.sync()

    async def error(self) -> str:
        return await self.query(":SYST:ERR?")

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def load() -> ResistorLoad:
    return ResistorLoad(R_OHM)


@pytest.fixture
def simulator(load: ResistorLoad, clock: SimClock) -> Keithley2450Simulator:
    return Keithley2450Simulator(load, clock, seed=7)


@pytest.fixture
async def server(simulator: Keithley2450Simulator):
    async with Keithley2450Server(simulator) as server:
        yield server


@pytest.fixture
async def client(server: Keithley2450Server):
    client = await RawClient.connect(server.port)
    yield client
    await client.aclose()


async def source_current(client: RawClient, amps: float, vlim: float = 10.0) -> None:
    await client.command(
        f':SOUR:FUNC CURR;:SOUR:CURR {amps};:SOUR:CURR:VLIM {vlim};:SENS:FUNC "VOLT";:OUTP ON'
    )


async def assert_link_closed(client: RawClient) -> None:
    """The server closed the connection: EOF, or a reset if it aborted with data in flight."""
    try:
        assert await asyncio.wait_for(client.reader.read(), 2.0) == b""
    except ConnectionResetError:
        pass


def floats(reply: str) -> list[float]:
    return [float(value) for value in reply.split(",")]


# ------------------------------------------------------------------------------------ basics


async def test_identification_and_fixed_queries(client: RawClient) -> None:
    assert await client.query("*IDN?") == "KEITHLEY INSTRUMENTS,MODEL 2450,04455231,1.7.12b"
    assert await client.query("*LANG?") == "SCPI"
    assert await client.query("*OPC?") == "1"
    assert await client.query(":SYST:LFR?") == "50"
    assert await client.query(":OUTP:INT:TRIP?") == "0"
    assert await client.query(":TRIG:STAT?") == "IDLE;IDLE;0"
    assert await client.error() == '0,"No error"'


async def test_accepts_crlf_and_lower_case(client: RawClient) -> None:
    await client.write("*idn?", terminator=b"\r\n")
    assert (await client.read_raw()).startswith(b"KEITHLEY INSTRUMENTS,MODEL 2450,")


@pytest.mark.parametrize(
    ("command", "query", "expected"),
    [
        (":SOUR:FUNC CURR", ":SOUR:FUNC?", "CURR"),
        (":SOURce:FUNCtion:MODE VOLTage", ":SOUR:FUNC?", "VOLT"),
        (":SOURce:CURRent:LEVel:IMMediate:AMPLitude 1e-3", ":SOUR:CURR?", "1.000000E-03"),
        (":sour:curr -2.5E-4", ":SOUR1:CURR:LEV?", "-2.500000E-04"),
        (":SOUR:CURR MIN", ":SOUR:CURR?", "-1.050000E+00"),
        (":SOUR:VOLT 2", ":SOUR:VOLT:LEV?", "2.000000E+00"),
        (":sour:current:vlimit 4.5", ":SOUR:CURR:VLIM?", "4.500000E+00"),
        (":SOUR:CURR:VLIM MAX", ":SOUR:CURR:VLIM:LEV?", "2.100000E+02"),
        (":SOUR:VOLT:ILIM 0.01", ":SOUR:VOLT:ILIM?", "1.000000E-02"),
        (":SOUR:CURR:READ:BACK OFF", ":SOUR:CURR:READ:BACK?", "0"),
        (":SOUR:CURR:RANG:AUTO ON", ":SOUR:CURR:RANG:AUTO?", "1"),
        (":SOUR:CURR:DEL:AUTO 1", ":SOUR:CURR:DEL:AUTO?", "1"),
        (':SENS:FUNC "VOLT"', ":SENS:FUNC?", '"VOLT:DC"'),
        (':SENSe:FUNCtion:ON "CURRent:DC"', ":FUNC?", '"CURR:DC"'),
        (":SENS:VOLT:RANG:AUTO OFF", ":SENS:VOLT:RANG:AUTO?", "0"),
        (":SENS:VOLT:RANG 1.5", ":SENS:VOLT:RANG?", "2.000000E+00"),
        (":SENS:VOLT:NPLC 0.5", ":SENS:VOLT:NPLC?", "5.000000E-01"),
        (":VOLT:NPLC 10", ":SENS:VOLT:DC:NPLC?", "1.000000E+01"),
        (":SENS:VOLT:RSEN ON", ":SENS:VOLT:RSEN?", "1"),
        (":SENS:COUN 3", ":SENS:COUN?", "3"),
        (":ROUT:TERM REAR", ":ROUT:TERM?", "REAR"),
        (":OUTP ON", ":OUTP?", "1"),
        (":OUTP:STAT 0", ":OUTP:STAT?", "0"),
        (":TRAC:POIN 500", ":TRAC:POIN?", "500"),
        (':TRAC:POIN 20, "defbuffer2"', ':TRAC:POIN? "defbuffer2"', "20"),
        (':TRAC:FILL:MODE ONCE, "defbuffer1"', ":TRAC:FILL:MODE?", "ONCE"),
        ("*ESE 32", "*ESE?", "32"),
        ("*SRE 16", "*SRE?", "16"),
    ],
)
async def test_settings_round_trip(client: RawClient, command: str, query: str, expected: str) -> None:
    await client.write(command)
    assert await client.query(query) == expected
    assert await client.error() == '0,"No error"'


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (":SOUR:CURR:FOO 1", -113),
        (":SOURCE2:CURR 1e-3", -113),
        (":SOUR:CURRE 1e-3", -113),
        (":SOUR:CURR:VLIM:TRIP", -113),
        ("*IDN", -113),
        (":SYST:LFR 60", -113),
        (":SOUR:CURR 2", -222),
        (":SOUR:VOLT -300", -222),
        (":SOUR:CURR:VLIM 0", -222),
        (":SENS:VOLT:NPLC 20", -222),
        (":TRAC:DATA? 1, 1", -222),
        (":SOUR:CURR abc", -104),
        (":SOUR:CURR 1.2.3", -104),
        (':SOUR:CURR "1"', -104),
        (":SENS:FUNC VOLT", -104),
        (":SOUR:CURR", -109),
        (":TRAC:DATA? 1", -109),
        (":SOUR:CURR 1e-3, 2", -108),
        (":SOUR:FUNC POWER", -224),
        (':SENS:FUNC "TEMP"', -224),
        (":OUTP MAYBE", -224),
        (':TRAC:ACT? "nosuchbuffer"', -224),
        (':TRAC:MAKE "defbuffer1", 100', -221),
        (":SOUR:CURR 1e-3,", -102),
        (':SENS:FUNC "VOLT', -102),
        (":SOUR:CURR 1e-3;;:OUTP ON", -102),
        (":SOUR::CURR 1e-3", -102),
    ],
)
async def test_bad_commands_queue_the_right_error(client: RawClient, line: str, code: int) -> None:
    await client.write(line)
    assert await client.error() == f'{code},"{ERROR_MESSAGES[code]}"'
    assert await client.error() == '0,"No error"'


async def test_a_failed_query_sends_no_line(client: RawClient) -> None:
    await client.write(":TRAC:DATA? 1, 1")  # the buffer is empty
    await client.write(":NO:SUCH:QUERY?")
    assert await client.query("*LANG?") == "SCPI"  # the next line on the wire is this reply
    assert await client.query(":SYST:ERR:COUN?") == "2"
    assert await client.query(":SYST:ERR:ALL?") == '-222,"Data out of range",-113,"Undefined header"'


async def test_compound_messages_join_replies_and_follow_the_scpi_path(client: RawClient) -> None:
    assert (await client.query("*IDN?;*LANG?")).endswith(";SCPI")
    await client.write(":SENS:COUN 3;:TRAC:TRIG")
    assert await client.query(':TRAC:ACT:STAR? "defbuffer1" ; END? "defbuffer1"') == "1;3"
    # After :SOUR:CURR:VLIM the path is :SOUR:CURR, so LEV? is :SOUR:CURR:LEV?.
    assert await client.query(":SOUR:CURR 2e-3;:SOUR:CURR:VLIM 3;LEV?") == "2.000000E-03"
    # After :SOUR:CURR the path is :SOUR, so VLIM is :SOUR:VLIM, which does not exist.
    await client.write(":SOUR:CURR 1e-3;VLIM 2")
    assert await client.error() == '-113,"Undefined header"'
    assert await client.query(":SOUR:CURR?;:SOUR:CURR:VLIM?") == "1.000000E-03;3.000000E+00"


async def test_error_queue_overflows_into_350(client: RawClient) -> None:
    await client.write(";".join([":BAD"] * 105))
    assert await client.query(":SYST:ERR:COUN?") == "100"
    replies = (await client.query(":SYST:ERR:ALL?")).split(",")
    codes = [int(code) for code in replies[0::2]]
    assert codes == [-113] * 99 + [-350]
    assert replies[-1] == '"Queue overflow"'


async def test_event_log_status_bytes_and_clearing(client: RawClient, clock: SimClock) -> None:
    assert await client.query(":SYST:EVEN:NEXT?") == '0,"No error;0;1970/01/01 00:00:00.000"'
    clock.advance(12.345)
    await client.write(":BAD:HEADER")
    assert await client.query("*STB?") == "4"  # error available
    assert await client.query("*ESR?") == "32"  # command error
    assert await client.query("*ESR?") == "0"
    assert await client.query(":SYST:EVEN:NEXT?") == '-113,"Undefined header;1;2026/01/01 00:00:12.345"'
    await client.write(":SOUR:CURR 5;:SYST:CLE")
    assert await client.query(":SYST:ERR:COUN?") == "0"
    await client.write(":SOUR:CURR 5;*CLS")
    assert await client.query(":SYST:ERR:COUN?;*ESR?") == "0;0"
    await client.write(":STAT:CLE;:STAT:PRES")
    assert await client.error() == '0,"No error"'


async def test_reset_restores_defaults(client: RawClient) -> None:
    await client.write(':SOUR:FUNC CURR;:SOUR:CURR 1e-3;:OUTP ON;:TRAC:MAKE "ccd", 100;:SENS:COUN 2')
    await client.write("*RST")
    assert await client.query(":SOUR:FUNC?;:SOUR:CURR?;:OUTP?;:SENS:FUNC?;:SENS:COUN?") == (
        'VOLT;0.000000E+00;0;"CURR:DC";1'
    )
    assert await client.query(":SOUR:CURR:VLIM?;:SOUR:VOLT:ILIM?") == "2.100000E+01;1.050000E-04"
    await client.write(':TRAC:ACT? "ccd"')
    assert await client.error() == '-224,"Illegal parameter value"'


async def test_several_clients_share_one_instrument(server: Keithley2450Server, client: RawClient) -> None:
    other = await RawClient.connect(server.port)
    try:
        await client.command(":SOUR:FUNC CURR;:SOUR:CURR 3e-4")
        assert await other.query(":SOUR:FUNC?;:SOUR:CURR?") == "CURR;3.000000E-04"
        assert server.connection_count == 2
    finally:
        await other.aclose()


# ------------------------------------------------------------------------------------ physics


async def test_resistor_reads_ohms_law_within_noise(client: RawClient) -> None:
    await source_current(client, 0.0)
    await client.command(":SENS:VOLT:NPLC 10")
    for amps in (1e-4, 1e-3, 5e-3, -2e-3, 0.05):
        await client.command(f":SOUR:CURR {amps}")
        volts, source = floats(await client.query(':READ? "defbuffer1", READ, SOUR'))
        assert volts == pytest.approx(amps * R_OHM, abs=5 * 10e-6)  # 10 uV rms / sqrt(10)
        assert source == pytest.approx(amps, rel=1e-4, abs=1e-9)


async def test_readings_are_quantised_to_the_autorange_resolution(client: RawClient) -> None:
    await source_current(client, 1e-3)  # 0.1 V: 200 mV range, 100 nV steps
    volts = float(await client.query(":READ?"))
    assert round(volts / 1e-7) == pytest.approx(volts / 1e-7, abs=1e-6)
    await client.command(":SOUR:CURR 5e-2")  # 5 V: 20 V range, 10 uV steps
    volts = float(await client.query(":READ?"))
    assert round(volts / 1e-5) == pytest.approx(volts / 1e-5, abs=1e-6)


async def test_current_compliance_holds_the_voltage_limit(client: RawClient) -> None:
    await source_current(client, 0.1, vlim=5.0)  # 100 ohm would need 10 V
    assert await client.query(":SOUR:CURR:VLIM:TRIP?") == "1"
    source, volts, source_status = floats(await client.query(':READ? "defbuffer1", SOUR, READ, SOURSTAT'))
    assert volts == pytest.approx(5.0, abs=1e-4)
    assert source == pytest.approx(0.05, rel=1e-4)  # what the load draws at 5 V
    assert int(source_status) & 0x08  # source limited
    await client.command(":SOUR:CURR 1e-3")
    assert await client.query(":SOUR:CURR:VLIM:TRIP?") == "0"
    _, status = floats(await client.query(':READ? "defbuffer1", READ, SOURSTAT'))
    assert not int(status) & 0x08


async def test_voltage_source_current_limit(client: RawClient) -> None:
    await client.command(':SOUR:FUNC VOLT;:SOUR:VOLT 5;:SOUR:VOLT:ILIM 0.01;:SENS:FUNC "CURR";:OUTP ON')
    assert await client.query(":SOUR:VOLT:ILIM:TRIP?") == "1"
    assert await client.query(":SOUR:CURR:VLIM:TRIP?") == "0"
    amps, volts = floats(await client.query(':READ? "defbuffer1", READ, SOUR'))
    assert amps == pytest.approx(0.01, rel=1e-4)
    assert volts == pytest.approx(0.01 * R_OHM, abs=1e-4)  # the load's voltage at the limit


async def test_output_off_passes_no_current_and_reads_noise(
    client: RawClient, clock: SimClock, load: ResistorLoad
) -> None:
    await source_current(client, 1e-3)
    await client.command(":OUTP:CURR:SMOD HIMP;:OUTP OFF")
    assert await client.query(":OUTP:CURR:SMOD?") == "HIMP"
    clock.advance(50.0)
    assert abs(float(await client.query(":READ?"))) < 1e-4
    assert load.charge_c == 0.0
    await client.command(":OUTP ON")
    clock.advance(10.0)
    await client.sync()
    assert load.charge_c == pytest.approx(1e-3 * 10.0, rel=1e-12)


# ------------------------------------------------------------------------------------ buffers, trigger model


async def test_simple_loop_takes_readings_at_exact_trigger_times(client: RawClient, clock: SimClock) -> None:
    await source_current(client, 1e-3)
    # period = 0.08 s delay + 1 PLC at 50 Hz = 0.1 s; readings at t_init + k * 0.1
    await client.command(':TRIG:LOAD "SimpleLoop", 10, 0.08, "defbuffer1";:INIT')
    assert await client.query(":TRIG:STAT?") == "RUNNING;RUNNING;1"
    clock.advance(0.35)
    assert await client.query(':TRIG:STAT?;:TRAC:ACT? "defbuffer1"') == "RUNNING;RUNNING;1;3"
    clock.advance(0.04)  # 0.39 s: 0.09 s into the 4th period, past its 0.08 s delay
    assert await client.query(":TRIG:STAT?") == "RUNNING;RUNNING;2"
    clock.advance(5.0)
    assert await client.query(":TRIG:STAT?;:TRAC:ACT?") == "IDLE;IDLE;3;10"
    values = floats(await client.query(':TRAC:DATA? 1, 10, "defbuffer1", READ, REL, SOUR, FRAC'))
    assert len(values) == 40
    volts, rel, source, frac = values[0::4], values[1::4], values[2::4], values[3::4]
    assert rel == pytest.approx([0.1 * k for k in range(10)], abs=1e-12)
    assert frac == pytest.approx([(0.1 * k) % 1.0 for k in range(1, 11)], abs=1e-6)
    assert volts == pytest.approx([0.1] * 10, abs=1e-4)
    assert source == pytest.approx([1e-3] * 10, rel=1e-4)


async def test_trace_data_returns_every_element(client: RawClient) -> None:
    await source_current(client, 2e-3)
    await client.write(":SENS:COUN 2;:TRAC:TRIG")
    reply = await client.query(f':TRAC:DATA? 1, 2, "defbuffer1", {", ".join(ELEMENTS)}')
    fields = reply.split(",")
    assert len(fields) == 2 * len(ELEMENTS) == 28
    first = dict(zip(ELEMENTS, fields[:14], strict=True))
    assert float(first["READing"]) == pytest.approx(0.2, abs=1e-4)
    assert first["UNIT"] == "Volt DC"
    assert first["SOURUNIT"] == "Amp DC"
    assert first["DATE"] == "01/01/2026"
    assert first["TIME"] == "00:00:00"
    assert first["TSTamp"] == "01/01/2026 00:00:00.000000000"
    assert first["SEConds"] == "1767225600"
    assert first["FORMatted"].endswith(" mV")
    assert int(float(first["STATus"])) & 0x08  # front terminals
    assert int(float(first["SOURSTATus"])) & 0x20  # output on
    await client.write(f':TRAC:DATA? 1, 2, "defbuffer1", {", ".join([*ELEMENTS, "READ"])}')
    assert await client.error() == '-108,"Parameter not allowed"'
    for bad in ("0, 1", "2, 1", "1, 3"):
        await client.write(f':TRAC:DATA? {bad}, "defbuffer1"')
        assert await client.error() == '-222,"Data out of range"'


async def test_duration_loop_and_user_buffer(client: RawClient, clock: SimClock) -> None:
    await source_current(client, 1e-3)
    await client.command(':TRAC:MAKE "ccd", 100;:TRIG:LOAD "DurationLoop", 1.0, 0.18, "ccd";:INIT')
    clock.advance(2.0)
    assert await client.query(':TRAC:ACT? "ccd";:TRAC:ACT?;:TRIG:STAT?') == "5;0;IDLE;IDLE;3"
    assert floats(await client.query(':TRAC:DATA? 1, 5, "ccd", REL')) == pytest.approx(
        [0.0, 0.2, 0.4, 0.6, 0.8], abs=1e-12
    )
    assert await client.query(':FETC? "ccd", READ, REL') == (
        await client.query(':TRAC:DATA? 5, 5, "ccd", READ, REL')
    )
    await client.write(':TRAC:DEL "ccd"')
    assert await client.error() == '0,"No error"'


async def test_buffers_fill_once_or_wrap(client: RawClient) -> None:
    await source_current(client, 1e-3)
    await client.command(':TRAC:MAKE "once", 10;:SENS:COUN 15;:TRAC:TRIG "once"')
    assert await client.query(':TRAC:FILL:MODE? "once";:TRAC:ACT? "once"') == "ONCE;10"
    await client.command(":TRAC:POIN 10;:TRAC:TRIG")  # defbuffer1, continuous
    assert await client.query(":TRAC:FILL:MODE?;:TRAC:ACT?;:TRAC:ACT:STAR?;:TRAC:ACT:END?") == "CONT;10;1;10"
    # Index 1 is now the 6th reading; REL still counts from the first since the clear.
    rel = floats(await client.query(':TRAC:DATA? 1, 10, "defbuffer1", REL'))
    assert rel == pytest.approx([0.02 * k for k in range(5, 15)], abs=1e-12)
    await client.command(":TRAC:CLE")
    assert await client.query(":TRAC:ACT?;:TRAC:ACT:STAR?;:TRAC:ACT:END?") == "0;0;0"
    await client.write(":FETC?")
    assert await client.error() == '-230,"Data corrupt or stale"'


async def test_opc_query_completes_a_running_trigger_model_at_once(
    client: RawClient, simulator: Keithley2450Simulator
) -> None:
    await source_current(client, 1e-3)
    await client.command(':TRIG:LOAD "SimpleLoop", 1000;:INIT')
    assert await client.query("*OPC?") == "1"
    assert await client.query(":TRIG:STAT?;:TRAC:ACT?") == "IDLE;IDLE;3;1000"
    assert simulator.time == pytest.approx(T0 + 1000 * 0.02)
    await client.command(":INIT;*WAI")
    assert await client.query(":TRAC:ACT?") == "2000"
    await client.command(":INIT;*OPC")
    assert await client.query("*ESR?") == "0"  # still running: OPC is set when it ends
    await client.command("*WAI")
    assert await client.query("*ESR?") == "1"


async def test_abort_stops_the_trigger_model(client: RawClient, clock: SimClock) -> None:
    await source_current(client, 1e-3)
    await client.command(':TRIG:LOAD "SimpleLoop", 100;:INIT')
    clock.advance(0.05)
    await client.command(":ABOR")
    clock.advance(10.0)
    assert await client.query(":TRIG:STAT?;:TRAC:ACT?") == "ABORTED;ABORTED;2;2"
    await client.write(":INIT;:INIT")
    assert await client.error() == '-221,"Settings conflict"'
    await client.write(":READ?")
    assert await client.error() == '-221,"Settings conflict"'


async def test_source_change_while_running_takes_effect_at_once(client: RawClient, clock: SimClock) -> None:
    await source_current(client, 1e-3)
    await client.command(':TRIG:LOAD "SimpleLoop", 10, 0.08;:INIT')
    clock.advance(0.55)  # readings 1..5 taken at 1 mA
    await client.command(":SOUR:CURR 2e-3")
    clock.advance(1.0)
    volts = floats(await client.query(":TRAC:DATA? 1, 10"))
    assert volts == pytest.approx([0.1] * 5 + [0.2] * 5, abs=1e-4)


# ------------------------------------------------------------------------------------ languages


async def test_language_change_takes_effect_after_a_power_cycle(
    client: RawClient, simulator: Keithley2450Simulator
) -> None:
    await client.command("*LANG TSP")
    assert await client.query("*LANG?") == "SCPI"
    simulator.power_cycle()
    assert await client.query("*LANG?") == "TSP"
    await client.write(":SOUR:CURR 1e-3")
    await client.write(":SYST:ERR?")  # Lua to a TSP instrument: no reply at all
    assert await client.query("*IDN?") == "KEITHLEY INSTRUMENTS,MODEL 2450,04455231,1.7.12b"
    await client.command("*LANG SCPI")
    simulator.power_cycle()
    assert await client.query("*LANG?;:SYST:ERR?") == 'SCPI;0,"No error"'


async def test_scpi2400_mode_rejects_native_commands(clock: SimClock) -> None:
    simulator = Keithley2450Simulator(ResistorLoad(R_OHM), clock, language="SCPI2400")
    async with Keithley2450Server(simulator) as server:
        client = await RawClient.connect(server.port)
        try:
            assert (await client.query("*IDN?")).startswith("KEITHLEY INSTRUMENTS INC.,MODEL 2400,")
            await client.write(':TRAC:ACT? "defbuffer1"')
            assert await client.query("*LANG?;:SYST:ERR?") == 'SCPI2400;-113,"Undefined header"'
        finally:
            await client.aclose()


# ------------------------------------------------------------------------------------ pyvisa


async def test_pyvisa_socket_session(server: Keithley2450Server) -> None:
    import pyvisa

    resource = f"TCPIP0::127.0.0.1::{server.port}::SOCKET"

    def session() -> tuple[str, float, list[float], str]:
        manager = pyvisa.ResourceManager("@py")
        try:
            instrument = manager.open_resource(
                resource, read_termination="\n", write_termination="\n", timeout=2000
            )
            try:
                idn = instrument.query("*IDN?")
                instrument.write(':SOUR:FUNC CURR;:SOUR:CURR 1e-3;:SENS:FUNC "VOLT";:OUTP ON')
                reading = float(instrument.query(':READ? "defbuffer1", READ'))
                data = instrument.query_ascii_values(':TRAC:DATA? 1, 1, "defbuffer1", READ, SOUR')
                # A reply later than the VISA timeout is a timeout, as with a busy instrument.
                instrument.timeout = 100
                server.faults.reply_delay_s = 0.4
                try:
                    instrument.query("*IDN?")
                    timed_out = "no"
                except pyvisa.errors.VisaIOError as error:
                    timed_out = error.abbreviation
            finally:
                instrument.close()
        finally:
            manager.close()
        return idn, reading, data, timed_out

    # pyvisa blocks: run it in a thread while this event loop serves the simulator.
    idn, reading, data, timed_out = await asyncio.to_thread(session)
    assert idn == "KEITHLEY INSTRUMENTS,MODEL 2450,04455231,1.7.12b"
    assert reading == pytest.approx(0.1, abs=1e-4)
    assert data == [reading, pytest.approx(1e-3, rel=1e-4)]
    assert timed_out == "VI_ERROR_TMO"


# ------------------------------------------------------------------------------------ faults


async def test_dropped_connection_loses_the_command(server: Keithley2450Server, client: RawClient) -> None:
    server.faults.drop_next_command = True
    await client.write(":SOUR:CURR 1e-3")
    await assert_link_closed(client)
    again = await RawClient.connect(server.port)
    try:
        assert await again.query(":SOUR:CURR?") == "0.000000E+00"  # never executed
    finally:
        await again.aclose()


async def test_delayed_reply_times_out_a_short_client_timeout(
    server: Keithley2450Server, client: RawClient
) -> None:
    server.faults.reply_delay_s = 0.3
    with pytest.raises(TimeoutError):
        await client.query("*IDN?", wait_s=0.05)
    raw = await client.read_raw(wait_s=2.0)  # the late reply still arrives
    assert raw.startswith(b"KEITHLEY")


async def test_garbled_and_fragmented_replies(server: Keithley2450Server, client: RawClient) -> None:
    server.faults.garble_next_reply = True
    await client.write("*IDN?")
    raw = await client.read_raw()
    assert raw.endswith(b"\n") and all(byte >= 0x80 for byte in raw[:-1])
    with pytest.raises(UnicodeDecodeError):
        raw[:-1].decode("ascii")
    assert await client.query("*LANG?") == "SCPI"  # one-shot
    server.faults.fragment_size = 5
    assert await client.query("*IDN?") == "KEITHLEY INSTRUMENTS,MODEL 2450,04455231,1.7.12b"


async def test_unplug_closes_every_client(server: Keithley2450Server, client: RawClient) -> None:
    await client.sync()
    await server.drop_connections()
    await assert_link_closed(client)
    assert server.connection_count == 0
    again = await RawClient.connect(server.port)
    try:
        assert await again.query("*LANG?") == "SCPI"
    finally:
        await again.aclose()


# ------------------------------------------------------------------------------------ determinism

SCRIPT: list[tuple[float, str]] = [
    (0.0, ':SOUR:FUNC CURR;:SOUR:CURR 1e-3;:SOUR:CURR:VLIM 0.5;:SENS:FUNC "VOLT";:OUTP ON'),
    (0.5, ":READ?"),
    (0.25, ':READ? "defbuffer1", READ, SOUR, REL, TST'),
    (0.0, ':TRIG:LOAD "SimpleLoop", 20, 0.03;:INIT'),
    (0.37, ":SOUR:CURR 0.01;:TRIG:STAT?;:TRAC:ACT?"),
    (1.0, ':TRAC:DATA? 1, 22, "defbuffer1", READ, SOUR, SOURSTAT, REL'),
    (0.0, ":SOUR:CURR:VLIM:TRIP?;:BAD;:SYST:EVEN:NEXT?"),
]


async def run_script(seed: int) -> bytes:
    clock = SimClock()
    simulator = Keithley2450Simulator(ResistorLoad(R_OHM), clock, seed=seed)
    received = b""
    async with Keithley2450Server(simulator) as server:
        client = await RawClient.connect(server.port)
        try:
            for dt, line in SCRIPT:
                clock.advance(dt)
                await client.write(line)
                await client.write("*LANG?")  # every line then yields at least one reply
                received += await client.read_raw()
                if "?" in line:
                    received += await client.read_raw()
        finally:
            await client.aclose()
    return received


async def test_same_seed_and_times_give_identical_bytes() -> None:
    first, second, other_seed = await asyncio.gather(run_script(3), run_script(3), run_script(4))
    assert first == second
    assert first != other_seed
    assert first.count(b"\n") == 7 + 5  # a *LANG? per line, 5 queries


def test_normal_output_off_drains_a_charged_cell_through_a_0_v_source() -> None:
    """The *RST output-off state (NORMal) is a 0 V source limited to 105 µA: a charged cell discharges."""
    now = [0.0]
    battery = ResistorLoad(100.0, ocv_v=3.7)
    smu = Keithley2450Simulator(battery, time_source=lambda: now[0])
    smu.handle_line(":SOUR:FUNC CURR;:OUTP OFF")
    now[0] = 100.0
    smu.handle_line("*OPC?")
    assert battery.charge_c == pytest.approx(-105e-6 * 100.0, rel=1e-6)
    smu.handle_line(":OUTP:CURR:SMOD HIMP")
    now[0] = 200.0
    smu.handle_line("*OPC?")
    assert battery.charge_c == pytest.approx(-105e-6 * 100.0, rel=1e-6)  # high impedance: no more
